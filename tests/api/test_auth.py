"""The token: made on first start (0600), needed everywhere but /healthz, checked exactly."""

from __future__ import annotations

import stat

import httpx

from tests.api.conftest import Api


async def test_healthz_needs_no_token(api: Api) -> None:
    answer = await api.client.get("/healthz", headers={"Authorization": ""})
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


async def test_no_token_or_a_wrong_one_is_401_problem_json(api: Api) -> None:
    transport = httpx.ASGITransport(app=api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://corral") as anonymous:
        missing = await anonymous.get("/v1/instances")
        wrong = await anonymous.get("/v1/instances", headers={"Authorization": "Bearer nope"})
        basic = await anonymous.get("/v1/hosts", headers={"Authorization": "Basic eDp5"})
        sse = await anonymous.get("/v1/events", params={"token": "nope"})
    for answer in (missing, wrong, basic, sse):
        assert answer.status_code == 401
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["www-authenticate"].startswith("Bearer")
        body = answer.json()
        assert body["code"] == "unauthorized"
        assert "token" in body["detail"]
    assert "missing" in missing.json()["detail"]
    assert "wrong" in wrong.json()["detail"]


async def test_the_token_file_is_private_and_stable(api: Api) -> None:
    path = api.config.data_dir / "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == api.token
    assert len(api.token) >= 32


async def test_the_openapi_document_describes_the_v1_routes(api: Api) -> None:
    answer = await api.client.get("/openapi.json", headers={"Authorization": ""})
    assert answer.status_code == 200
    paths = answer.json()["paths"]
    for path in (
        "/v1/instances",
        "/v1/instances/{name}",
        "/v1/instances/{name}/actions/exec",
        "/v1/images",
        "/v1/operations/{op_id}",
        "/v1/hosts",
        "/v1/events",
    ):
        assert path in paths
