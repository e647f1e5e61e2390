"""Problem+json answers and network failures become the matching CorralError."""

from __future__ import annotations

import httpx
import pytest

from corral.client import AsyncCorralClient, CorralClient
from corral.client.testing import CannedAPI, json_response, problem
from corral.errors import (
    Conflict,
    CorralError,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    Unauthorized,
)


@pytest.mark.parametrize(
    ("status", "code", "field", "expected"),
    [
        (422, "invalid_size", "spec.memory_mib", InvalidInput),
        (404, "not_found", None, NotFound),
        (409, "already_exists", "name", Conflict),
        (409, "invalid_state", None, Conflict),
        (412, "etag_mismatch", None, PreconditionFailed),
        (401, "unauthorized", None, Unauthorized),
        (500, "internal", None, CorralError),
    ],
)
async def test_problem_json_maps_to_error_class_keeping_code_and_field(
    api: CannedAPI,
    client: AsyncCorralClient,
    status: int,
    code: str,
    field: str | None,
    expected: type[CorralError],
) -> None:
    api.answer("GET", "/v1/instances/vm1", problem(status, code, "what failed; what to do", field))

    with pytest.raises(expected) as caught:
        await client.get_instance("vm1")

    assert type(caught.value) is expected
    assert caught.value.code == code
    assert caught.value.field == field
    assert caught.value.message.startswith("what failed; what to do")


async def test_non_problem_error_body_still_names_the_request(client: AsyncCorralClient) -> None:
    api = CannedAPI()
    api.answer("GET", "/v1/hosts", httpx.Response(502, text="<html>Bad Gateway</html>"))
    async with AsyncCorralClient("http://corral.test", "t", transport=api.transport()) as c:
        with pytest.raises(CorralError) as caught:
            await c.list_hosts()
    assert caught.value.code == "http_502"
    assert "GET /v1/hosts failed with HTTP 502" in caught.value.message


async def test_fastapi_default_detail_is_used_as_the_message(
    api: CannedAPI, client: AsyncCorralClient
) -> None:
    api.answer("GET", "/v1/images/x", httpx.Response(404, json={"detail": "Not Found"}))
    with pytest.raises(NotFound, match="Not Found"):
        await client.get_image("x")


async def test_unreachable_server_says_how_to_start_one_or_point_elsewhere() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    async with AsyncCorralClient("http://127.0.0.1:1", transport=httpx.MockTransport(refuse)) as c:
        with pytest.raises(CorralError) as caught:
            await c.list_instances()

    assert caught.value.code == "server_unreachable"
    assert "http://127.0.0.1:1" in caught.value.message
    assert "corral serve" in caught.value.message
    assert "CORRAL_URL" in caught.value.message and "--url" in caught.value.message
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_real_refused_connection_is_server_unreachable() -> None:
    async with AsyncCorralClient("http://127.0.0.1:9") as c:  # discard port: nothing listens
        with pytest.raises(CorralError) as caught:
            await c.health()
    assert caught.value.code == "server_unreachable"


async def test_token_is_sent_as_bearer_header(api: CannedAPI, client: AsyncCorralClient) -> None:
    api.answer("GET", "/v1/instances", json_response({"items": []}))
    await client.list_instances()
    assert api.requests[0].headers["Authorization"] == "Bearer s3cret-token"


async def test_401_without_token_says_where_the_token_comes_from() -> None:
    api = CannedAPI()
    api.answer("GET", "/v1/instances", problem(401, "unauthorized", "missing API token"))
    async with AsyncCorralClient("http://corral.test", None, transport=api.transport()) as c:
        with pytest.raises(Unauthorized) as caught:
            await c.list_instances()
    assert "Authorization" not in api.requests[0].headers
    assert "CORRAL_TOKEN" in caught.value.message and "--data-dir" in caught.value.message


async def test_unreadable_success_body_is_a_bad_response_error(
    api: CannedAPI, client: AsyncCorralClient
) -> None:
    api.answer("GET", "/v1/instances/vm1", json_response({"name": "vm1"}))
    with pytest.raises(CorralError) as caught:
        await client.get_instance("vm1")
    assert caught.value.code == "bad_response"


def test_sync_facade_raises_the_same_errors() -> None:
    api = CannedAPI()
    api.answer("DELETE", "/v1/images/tiny", problem(409, "image_in_use", "vm1 uses tiny"))
    client = CorralClient("http://corral.test", "t", transport=api.transport())
    with client, pytest.raises(Conflict) as caught:
        client.delete_image("tiny")
    assert caught.value.code == "image_in_use"


async def test_sync_facade_refuses_to_block_inside_a_running_loop() -> None:
    client = CorralClient("http://corral.test", "t", transport=CannedAPI().transport())
    with pytest.raises(RuntimeError, match="AsyncCorralClient"):
        client.list_instances()
