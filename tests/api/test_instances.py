"""/v1/instances through HTTP: the contract of docs/api.md, good input and bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.paths import runtime_dir_for
from tests.api.conftest import Api


async def test_create_list_get_patch_delete(ready_api: Api) -> None:
    api = ready_api.client
    answer = await api.post("/v1/instances", json={"name": "vm1", "spec": {"image": "tiny"}})
    assert answer.status_code == 202
    op = answer.json()
    assert op["kind"] == "create" and op["target"] == "vm1" and op["target_kind"] == "instance"
    assert answer.headers["location"] == f"/v1/operations/{op['id']}"
    # the instance exists at once
    assert (await api.get("/v1/instances/vm1")).status_code == 200
    done = await ready_api.wait_op(answer)
    assert done["state"] == "succeeded" and done["progress"] == 1.0

    listed = (await api.get("/v1/instances")).json()["items"]
    assert [i["name"] for i in listed] == ["vm1"]
    shown = await api.get("/v1/instances/vm1")
    body = shown.json()
    assert shown.headers["etag"] == '"1"' == body["etag"]
    assert body["spec"] == {
        "image": "tiny",
        "cpus": 1,
        "memory_mib": 256,
        "power": "running",
        "machine": "pc",
        "on_crash": "stop",
        "disks": [],
        "ssh_keys": [],
        "user_data": None,
    }
    status = body["status"]
    assert status["state"] == "running" and status["ready"] is True
    assert status["host"] == "test-host" and status["accel"] == "tcg"
    assert status["create_to_ready_ms"] > 0
    assert listed[0] == body

    patched = await api.patch(
        "/v1/instances/vm1", json={"spec": {"on_crash": "restart"}}, headers={"If-Match": '"1"'}
    )
    assert patched.status_code == 202
    assert patched.headers["etag"] == '"2"'
    assert patched.json()["kind"] == "update"
    assert (await ready_api.wait_op(patched))["state"] == "succeeded"
    assert (await api.get("/v1/instances/vm1")).json()["spec"]["on_crash"] == "restart"
    bigger = await api.patch("/v1/instances/vm1", json={"spec": {"memory_mib": 512}})
    done = await ready_api.wait_op(bigger)
    assert done["message"].endswith("apply at the next start")

    deleted = await api.delete("/v1/instances/vm1")  # running: it is shut down first
    assert deleted.json()["kind"] == "delete"
    during = await api.get("/v1/instances/vm1")
    assert during.status_code == 404 or during.json()["deleting"] is True
    assert (await ready_api.wait_op(deleted))["state"] == "succeeded"
    gone = await api.get("/v1/instances/vm1")
    assert gone.status_code == 404
    assert gone.json()["code"] == "not_found"
    agent = ready_api.context.controller.agent
    assert (await agent.observe("vm1")).state == "absent"
    assert not (runtime_dir_for(ready_api.config.data_dir) / "vm1").exists()


async def test_a_stale_if_match_is_412_and_changes_nothing(ready_api: Api) -> None:
    api = ready_api.client
    await ready_api.create("dup", power="stopped")
    etag = (await api.get("/v1/instances/dup")).headers["etag"]
    ok = await api.patch(
        "/v1/instances/dup", json={"spec": {"cpus": 2}}, headers={"If-Match": etag}
    )
    assert ok.status_code == 202
    stale = await api.patch(
        "/v1/instances/dup", json={"spec": {"cpus": 1}}, headers={"If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.json()["code"] == "etag_mismatch"
    assert (await api.get("/v1/instances/dup")).json()["spec"]["cpus"] == 2


async def test_a_duplicate_name_is_409_already_exists(ready_api: Api) -> None:
    spec = {"image": "tiny", "power": "stopped"}
    first = await ready_api.client.post("/v1/instances", json={"name": "dup", "spec": spec})
    assert first.status_code == 202
    again = await ready_api.client.post("/v1/instances", json={"name": "dup", "spec": spec})
    assert again.status_code == 409
    assert again.json()["code"] == "already_exists"
    assert again.json()["field"] == "name"


@pytest.mark.parametrize(
    "name",
    ["", "x" * 64, "a/b", "..", "has space", "tab\there", "ctl\x01x", "UPPER", "-lead", "a-"],
)
async def test_bad_names_are_422_with_the_field_named(ready_api: Api, name: str) -> None:
    answer = await ready_api.client.post(
        "/v1/instances", json={"name": name, "spec": {"image": "tiny"}}
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == "invalid_name"
    assert body["field"] == "name"
    assert body["type"] == "https://corral.dev/errors/invalid_name"
    assert body["detail"].startswith("name: name ")


@pytest.mark.parametrize(
    ("spec", "status", "code", "field"),
    [
        ({"image": "tiny", "memory_mib": 1}, 422, "invalid_input", "spec.memory_mib"),
        ({"image": "tiny", "memory_mib": 2**21}, 422, "invalid_input", "spec.memory_mib"),
        ({"image": "tiny", "cpus": 0}, 422, "invalid_input", "spec.cpus"),
        ({"image": "tiny", "cpus": 64}, 409, "insufficient_capacity", "spec.cpus"),
        ({"image": "tiny", "memory_mib": 900_000}, 409, "insufficient_capacity", "spec.memory_mib"),
        ({"image": "nope"}, 422, "unknown_image", "spec.image"),
        ({"image": "Bad/Image"}, 422, "invalid_name", "spec.image"),
        ({"image": "tiny", "power": "sideways"}, 422, "invalid_input", "spec.power"),
        ({"image": "tiny", "colour": "red"}, 422, "invalid_input", "spec.colour"),
        ({}, 422, "invalid_input", "spec.image"),
    ],
)
async def test_bad_specs_are_refused_and_nothing_is_created(
    ready_api: Api, spec: dict[str, object], status: int, code: str, field: str
) -> None:
    api = ready_api.client
    answer = await api.post("/v1/instances", json={"name": "bad-spec", "spec": spec})
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert (body["code"], body["field"]) == (code, field)
    assert body["status"] == status
    assert (await api.get("/v1/instances/bad-spec")).status_code == 404


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[1, 2]", b'"a string"', b'{"name": "x", "spec": '],
)
async def test_a_malformed_body_is_422_malformed_body(ready_api: Api, content: bytes) -> None:
    answer = await ready_api.client.post(
        "/v1/instances", content=content, headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["code"] == "malformed_body"


async def test_exec_runs_in_a_running_guest_and_is_409_otherwise(ready_api: Api) -> None:
    api = ready_api.client
    await ready_api.create("vm1")
    ran = await api.post("/v1/instances/vm1/actions/exec", json={"command": ["uname", "-a"]})
    assert ran.status_code == 200
    result = ran.json()
    assert result["exit_code"] == 0 and "Linux vm1" in result["stdout"]
    assert set(result) == {"exit_code", "stdout", "stderr", "duration_ms"}
    failing = await api.post(
        "/v1/instances/vm1/actions/exec", json={"command": ["sh", "-c", "exit 7"]}
    )
    assert failing.json()["exit_code"] == 7
    empty = await api.post("/v1/instances/vm1/actions/exec", json={"command": []})
    assert empty.status_code == 422 and empty.json()["field"] == "command"

    stop = await api.post("/v1/instances/vm1/actions/stop", json={"force": True})
    assert (await ready_api.wait_op(stop))["state"] == "succeeded"
    refused = await api.post("/v1/instances/vm1/actions/exec", json={"command": ["true"]})
    assert refused.status_code == 409
    assert refused.json()["code"] == "invalid_state"
    assert "start" in refused.json()["detail"]
    missing = await api.post("/v1/instances/ghost/actions/exec", json={"command": ["true"]})
    assert missing.status_code == 404


async def test_actions_stop_start_restart(ready_api: Api) -> None:
    api = ready_api.client
    await ready_api.create("vm1")
    pid = (await api.get("/v1/instances/vm1")).json()["status"]["pid"]
    stop = await api.post("/v1/instances/vm1/actions/stop")  # no body: ACPI, default timeout
    assert stop.json()["kind"] == "stop"
    assert (await ready_api.wait_op(stop))["state"] == "succeeded"
    shown = (await api.get("/v1/instances/vm1")).json()
    assert shown["spec"]["power"] == "stopped" and shown["status"]["state"] == "stopped"
    log = await api.get("/v1/instances/vm1/console/log", params={"bytes": 4096})
    assert log.status_code == 200 and "Power down" in log.text
    assert log.headers["content-type"].startswith("text/plain")

    start = await api.post("/v1/instances/vm1/actions/start")
    assert (await ready_api.wait_op(start))["state"] == "succeeded"
    restart = await api.post("/v1/instances/vm1/actions/restart")
    assert restart.json()["kind"] == "restart"
    assert (await ready_api.wait_op(restart))["state"] == "succeeded"
    after = (await api.get("/v1/instances/vm1")).json()["status"]
    assert after["state"] == "running" and after["ready"] and after["pid"] != pid


async def test_a_failed_launch_fails_the_operation_with_launch_failed(ready_api: Api) -> None:
    image = (await ready_api.client.get("/v1/images/tiny")).json()
    Path(image["kernel"]).unlink()
    op = await ready_api.create("doomed")
    assert op["state"] == "failed"
    assert op["error"]["code"] == "launch_failed"
    shown = (await ready_api.client.get("/v1/instances/doomed")).json()
    assert shown["status"]["state"] == "failed"
    failed = [c for c in shown["status"]["conditions"] if c["type"] == "Failed"]
    assert failed and failed[0]["status"] is True and "kernel" in failed[0]["message"]


async def test_unknown_paths_and_methods_are_problem_json(api: Api) -> None:
    unknown = await api.client.get("/v1/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    wrong = await api.client.put("/v1/instances")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == "application/problem+json"
