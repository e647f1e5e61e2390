"""Bad input gets a clear error and loses nothing; a failed launch leaves nothing behind."""

from __future__ import annotations

import stat

import pytest

from tests.e2e.server import CorralServer

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "name",
    ["", "x" * 64, "a/b", "..", "has space", "tab\there", "ctl\x01x", "UPPER", "-lead"],
)
def test_bad_names_are_refused_with_the_field_named(server: CorralServer, name: str) -> None:
    with server.api() as api:
        answer = api.post("/v1/instances", json={"name": name, "spec": {"image": "tiny"}})
    assert answer.status_code == 422
    body = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert body["code"] in {"invalid_name", "invalid_input"}
    assert body["field"] == "name"


@pytest.mark.parametrize(
    ("spec", "status", "field"),
    [
        ({"image": "tiny", "memory_mib": 1}, 422, "spec.memory_mib"),
        ({"image": "tiny", "cpus": 0}, 422, "spec.cpus"),
        ({"image": "tiny", "cpus": 64}, 409, "spec.cpus"),
        ({"image": "tiny", "memory_mib": 900_000}, 409, "spec.memory_mib"),
        ({"image": "nope"}, 422, "spec.image"),
        ({"image": "tiny", "power": "sideways"}, 422, "spec.power"),
    ],
)
def test_bad_specs_are_refused(
    server: CorralServer, spec: dict[str, object], status: int, field: str
) -> None:
    with server.api() as api:
        answer = api.post("/v1/instances", json={"name": "bad-spec", "spec": spec})
        assert answer.status_code == status, answer.text
        assert answer.json()["field"] == field
        assert api.get("/v1/instances/bad-spec").status_code == 404


def test_malformed_body_duplicate_and_stale_etag(server: CorralServer) -> None:
    with server.api() as api:
        broken = api.post(
            "/v1/instances", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert broken.status_code == 422
        assert broken.json()["code"] == "malformed_body"

        spec = {"image": "tiny", "power": "stopped"}
        assert api.post("/v1/instances", json={"name": "dup", "spec": spec}).status_code == 202
        again = api.post("/v1/instances", json={"name": "dup", "spec": spec})
        assert again.status_code == 409
        assert again.json()["code"] == "already_exists"

        etag = api.get("/v1/instances/dup").headers["etag"]
        ok = api.patch("/v1/instances/dup", json={"spec": {"cpus": 2}}, headers={"If-Match": etag})
        assert ok.status_code == 202
        stale = api.patch(
            "/v1/instances/dup", json={"spec": {"cpus": 1}}, headers={"If-Match": etag}
        )
        assert stale.status_code == 412
        assert stale.json()["code"] == "etag_mismatch"
        assert api.get("/v1/instances/dup").json()["spec"]["cpus"] == 2
    server.cli("delete", "dup")


def test_no_token_is_401_and_token_file_is_private(server: CorralServer) -> None:
    import httpx

    assert httpx.get(f"{server.url}/v1/instances").status_code == 401
    wrong = httpx.get(f"{server.url}/v1/instances", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "unauthorized"
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    mode = stat.S_IMODE((server.data_dir / "token").stat().st_mode)
    assert mode == 0o600


def test_a_launch_qemu_refuses_fails_cleanly(server: CorralServer) -> None:
    # A second image whose kernel vanished from disk: QEMU itself refuses to start.
    server.cli("image", "build", "tiny", "--name", "broken", timeout=600)
    shown = server.cli("image", "show", "broken", "-o", "json").json()
    from pathlib import Path

    Path(shown["kernel"]).unlink()
    result = server.cli("create", "doomed", "--image", "broken", check=False)
    assert result.code != 0
    inst = server.cli("show", "doomed", "-o", "json").json()
    assert inst["status"]["state"] == "failed"
    failed = [c for c in inst["status"]["conditions"] if c["type"] == "Failed"]
    assert failed and failed[0]["status"] is True
    assert "qemu" in failed[0]["message"].lower()
    assert "kernel" in failed[0]["message"].lower()  # the tail of QEMU's own stderr
    assert not (server.runtime_dir / "doomed").exists()
    assert server.guest_pids() == []
    server.cli("delete", "doomed")
    server.cli("image", "delete", "broken")
