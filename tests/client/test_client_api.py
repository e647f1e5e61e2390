"""Every endpoint sends what docs/api.md says and returns model objects."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import corral.client
from corral.client import AsyncCorralClient, CorralClient
from corral.client.testing import CannedAPI, json_response, problem
from corral.errors import Conflict, CorralError, LaunchError
from corral.model import Host, Image, Instance, Machine, Operation, PowerState
from corral.model.rpc import ExecResult

MakeOp = Callable[..., Operation]


def sent_json(request: httpx.Request) -> Any:
    return json.loads(request.content)


def test_public_api_is_what_we_mean() -> None:
    assert set(corral.client.__all__) == {
        "SERVER_UNREACHABLE",
        "AsyncCorralClient",
        "ConnectionSettings",
        "ConsoleSession",
        "CorralClient",
        "OperationCallback",
        "SSEDecoder",
        "ServerSentEvent",
        "operation_error",
        "resolve_settings",
        "volume_etag",
    }


async def test_create_sends_only_given_spec_fields_and_returns_the_operation(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    api.answer("POST", "/v1/instances", json_response(make_operation(), status=202))

    op = await client.create_instance(
        "vm1", image="tiny", memory_mib=512, power=PowerState.STOPPED, machine=Machine.Q35
    )

    assert isinstance(op, Operation) and op.id == "op-1"
    assert sent_json(api.requests[0]) == {
        "name": "vm1",
        "spec": {"image": "tiny", "memory_mib": 512, "power": "stopped", "machine": "q35"},
    }


async def test_get_and_list_instances_parse_models(
    api: CannedAPI, client: AsyncCorralClient, make_instance: Callable[..., Instance]
) -> None:
    inst = make_instance("vm1", state="running", ready=True, pid=42)
    payload = inst.model_dump(mode="json") | {"etag": '"1"'}  # the server adds etag
    api.answer("GET", "/v1/instances/vm1", httpx.Response(200, json=payload))
    api.answer("GET", "/v1/instances", json_response([inst]))

    got = await client.get_instance("vm1")
    listed = await client.list_instances()

    assert got == inst and got.etag == '"1"'
    assert listed == [inst]


async def test_names_are_quoted_into_one_path_segment(
    api: CannedAPI, client: AsyncCorralClient
) -> None:
    with pytest.raises(CorralError):
        await client.get_instance("../images/tiny")
    assert api.requests[0].url.raw_path == b"/v1/instances/..%2Fimages%2Ftiny"


async def test_patch_sends_if_match(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    api.answer("PATCH", "/v1/instances/vm1", json_response(make_operation(kind="update"), 202))
    await client.update_instance("vm1", cpus=2, if_match='"3"')
    assert api.requests[0].headers["If-Match"] == '"3"'
    assert sent_json(api.requests[0]) == {"spec": {"cpus": 2}}


@pytest.mark.parametrize(
    ("action", "path", "kwargs", "expected_body"),
    [
        ("start_instance", "/v1/instances/vm1/actions/start", {}, None),
        ("restart_instance", "/v1/instances/vm1/actions/restart", {}, None),
        ("stop_instance", "/v1/instances/vm1/actions/stop", {}, {"force": False}),
        (
            "stop_instance",
            "/v1/instances/vm1/actions/stop",
            {"force": True, "timeout_s": 5},
            {"force": True, "timeout_s": 5},
        ),
    ],
)
async def test_actions_post_to_their_paths(
    api: CannedAPI,
    client: AsyncCorralClient,
    make_operation: MakeOp,
    action: str,
    path: str,
    kwargs: dict[str, Any],
    expected_body: Any,
) -> None:
    api.answer("POST", path, json_response(make_operation(), 202))
    op = await getattr(client, action)("vm1", **kwargs)
    assert isinstance(op, Operation)
    request = api.requests[0]
    assert (sent_json(request) if request.content else None) == expected_body


async def test_delete_instance_returns_its_operation(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    api.answer("DELETE", "/v1/instances/vm1", json_response(make_operation(kind="delete"), 202))
    assert (await client.delete_instance("vm1")).kind == "delete"


async def test_exec_sends_command_and_allows_for_its_timeout(
    api: CannedAPI, client: AsyncCorralClient
) -> None:
    result = ExecResult(exit_code=3, stdout="out\n", stderr="err\n", duration_ms=12.5)
    api.answer("POST", "/v1/instances/vm1/actions/exec", json_response(result))

    got = await client.exec_instance("vm1", ["sh", "-c", "exit 3"], timeout_s=100)

    assert got == result
    request = api.requests[0]
    assert sent_json(request) == {
        "command": ["sh", "-c", "exit 3"],
        "timeout_s": 100,
        "input": None,
    }
    assert request.extensions["timeout"]["read"] > 100


async def test_console_log_returns_raw_bytes(api: CannedAPI, client: AsyncCorralClient) -> None:
    api.answer("GET", "/v1/instances/vm1/console/log", httpx.Response(200, content=b"boot\xff\n"))
    assert await client.console_log("vm1", max_bytes=100) == b"boot\xff\n"
    assert api.requests[0].url.params["bytes"] == "100"


async def test_images_recipes_hosts_and_operations(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    image = Image(name="tiny", state="ready", size_bytes=1024, created_at=now)
    host = Host(name="host1", cpus=4, memory_mib=8192, accel="tcg", accel_reason="no kvm_intel")
    api.answer("GET", "/v1/images", json_response([image]))
    api.answer("GET", "/v1/images/tiny", json_response(image))
    api.answer("POST", "/v1/images", json_response(make_operation(kind="image-build"), 202))
    api.answer("DELETE", "/v1/images/tiny", httpx.Response(204))
    api.answer("GET", "/v1/recipes", json_response({"items": ["tiny", "debian"]}))
    api.answer("GET", "/v1/hosts", json_response([host]))
    api.answer("GET", "/v1/hosts/host1", json_response(host))
    api.answer("GET", "/v1/operations", json_response([make_operation()]))

    assert await client.list_images() == [image]
    assert await client.get_image("tiny") == image
    assert (await client.build_image("tiny", name="t2")).kind == "image-build"
    assert sent_json(api.sent("POST", "/v1/images")[0]) == {"recipe": "tiny", "name": "t2"}
    assert await client.delete_image("tiny") is None
    assert await client.list_recipes() == ["tiny", "debian"]
    assert await client.list_hosts() == [host]
    assert await client.get_host("host1") == host
    assert [op.id for op in await client.list_operations()] == ["op-1"]


async def test_health_needs_no_token(api: CannedAPI) -> None:
    api.answer("GET", "/healthz", json_response({"status": "ok"}))
    async with AsyncCorralClient("http://corral.test", transport=api.transport()) as c:
        assert await c.health() == {"status": "ok"}


async def test_wait_operation_long_polls_and_reports_every_state(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    api.answer(
        "GET",
        "/v1/operations/op-1",
        json_response(make_operation(progress=0.2, message="launching")),
        json_response(make_operation(progress=0.7, message="waiting for the guest agent")),
        json_response(make_operation(state="succeeded", progress=1.0)),
    )
    seen: list[str] = []

    op = await client.wait_operation("op-1", timeout=30, on_update=lambda o: seen.append(o.message))

    assert op.state == "succeeded"
    assert seen == ["launching", "waiting for the guest agent", ""]
    assert all(r.url.params["wait"] == "1" for r in api.requests)
    assert all(r.extensions["timeout"]["read"] > 1 for r in api.requests)


async def test_failed_operation_raises_its_error_code(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    failed = make_operation(
        state="failed", error={"code": "launch_failed", "message": "qemu: no such file"}
    )
    api.answer("GET", "/v1/operations/op-1", json_response(failed))

    with pytest.raises(LaunchError) as caught:
        await client.wait_operation("op-1")
    assert caught.value.code == "launch_failed"
    assert caught.value.message == "create of instance vm1 failed: qemu: no such file"

    assert (await client.wait_operation("op-1", check=False)).state == "failed"


async def test_operation_still_running_after_timeout_says_how_to_follow_it(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    api.answer("GET", "/v1/operations/op-1", json_response(make_operation(message="booting")))
    with pytest.raises(CorralError) as caught:
        await client.wait_operation("op-1", timeout=0)
    assert caught.value.code == "operation_timeout"
    assert "corral operations op-1" in caught.value.message and "booting" in caught.value.message


def test_sync_facade_returns_the_same_models(make_instance: Callable[..., Instance]) -> None:
    api = CannedAPI()
    inst = make_instance("vm1")
    api.answer("GET", "/v1/instances", json_response([inst]))
    api.answer("POST", "/v1/instances/vm1/actions/start", problem(409, "invalid_state", "running"))
    with CorralClient("http://corral.test", "t", transport=api.transport()) as client:
        assert client.list_instances() == [inst]
        assert client.list_instances() == [inst]  # the loop and pool survive between calls
        with pytest.raises(Conflict):
            client.start_instance("vm1")
