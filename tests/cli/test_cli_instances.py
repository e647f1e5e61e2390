"""Instance commands against canned API answers: output, exit codes, errors, request bodies."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from corral.cli import state
from corral.client import CorralClient
from corral.client.testing import CannedAPI, json_response, problem
from corral.model import Instance, Operation
from corral.model.rpc import ExecResult

MakeOp = Callable[..., Operation]
MakeInst = Callable[..., Instance]


def answer_create(api: CannedAPI, make_operation: MakeOp, make_instance: MakeInst) -> None:
    api.answer("POST", "/v1/instances", json_response(make_operation(), 202))
    api.answer(
        "GET",
        "/v1/operations/op-1",
        json_response(make_operation(progress=0.5, message="booting")),
        json_response(make_operation(state="succeeded", progress=1.0)),
    )
    api.answer(
        "GET",
        "/v1/instances/vm1",
        json_response(make_instance(state="running", ready=True, create_to_ready_ms=4012.5)),
    )


@pytest.mark.parametrize("args", [["-o", "json", "list"], ["list", "-o", "json"]])
def test_list_json_is_an_array_of_instances(
    corral: Any, api: CannedAPI, make_instance: MakeInst, args: list[str]
) -> None:
    api.answer("GET", "/v1/instances", json_response([make_instance("vm1"), make_instance("vm2")]))
    result = corral(*args)
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.stdout)
    assert [Instance.model_validate(i).name for i in parsed] == ["vm1", "vm2"]


def test_list_table_shows_the_columns(corral: Any, api: CannedAPI, make_instance: MakeInst) -> None:
    inst = make_instance("vm1", state="running", ready=True, pid=4242, host="host1")
    api.answer("GET", "/v1/instances", json_response([inst]))
    result = corral("list")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()[:2]
    for column in ("NAME", "STATE", "READY", "CPUS", "MEMORY", "IMAGE", "PID", "HOST", "AGE"):
        assert column in header
    for value in ("vm1", "running", "yes", "1.5G", "tiny", "4242", "host1"):
        assert value in row


def test_show_json_parses_as_the_instance(
    corral: Any, api: CannedAPI, make_instance: MakeInst
) -> None:
    inst = make_instance("vm1", state="running")
    api.answer("GET", "/v1/instances/vm1", json_response(inst))
    result = corral("show", "vm1", "-o", "json")
    assert Instance.model_validate_json(result.stdout) == inst


def test_show_table_lists_conditions(corral: Any, api: CannedAPI, make_instance: MakeInst) -> None:
    inst = make_instance(
        state="running",
        conditions=[
            {
                "type": "Ready",
                "status": True,
                "reason": "GuestAgentAnswered",
                "since": "2025-01-01T00:00:00Z",
            }
        ],
    )
    api.answer("GET", "/v1/instances/vm1", json_response(inst))
    result = corral("show", "vm1")
    assert result.exit_code == 0, result.output
    assert "Conditions" in result.stdout and "GuestAgentAnswered" in result.stdout


def test_not_found_prints_the_message_without_traceback_and_exits_1(
    corral: Any, api: CannedAPI
) -> None:
    api.answer("GET", "/v1/instances/vm9", problem(404, "not_found", "instance vm9 does not exist"))
    result = corral("show", "vm9")
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: instance vm9 does not exist (code: not_found)"
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_error_with_field_names_it(corral: Any, api: CannedAPI) -> None:
    api.answer(
        "POST",
        "/v1/instances",
        problem(409, "already_exists", "vm1 exists; pick another name", "name"),
    )
    result = corral("create", "vm1", "--image", "tiny")
    assert result.exit_code == 1
    assert "(code: already_exists, field: name)" in result.stderr


def test_unreachable_server_tells_how_to_start_one(monkeypatch: Any, corral: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    monkeypatch.setattr(
        state,
        "client_factory",
        lambda url, data_dir: CorralClient(
            "http://127.0.0.1:1", transport=httpx.MockTransport(refuse)
        ),
    )
    result = corral("list")
    assert result.exit_code == 1
    assert "corral serve" in result.stderr and "--url" in result.stderr
    assert "Traceback" not in result.output


def test_global_url_and_data_dir_reach_the_client_factory(
    corral: Any, api: CannedAPI, factory_calls: list[Any]
) -> None:
    api.answer("GET", "/v1/instances", json_response([]))
    result = corral("--url", "http://other:1", "--data-dir", "/srv/corral", "list")
    assert result.exit_code == 0, result.output
    url, data_dir = factory_calls[0]
    assert url == "http://other:1" and str(data_dir) == "/srv/corral"


def test_create_memory_1_5g_sends_1536_mib_and_waits_until_ready(
    corral: Any, api: CannedAPI, make_operation: MakeOp, make_instance: MakeInst
) -> None:
    answer_create(api, make_operation, make_instance)
    result = corral("create", "vm1", "--image", "tiny", "--memory", "1.5G", "--cpus", "2")
    assert result.exit_code == 0, result.output
    body = json.loads(api.sent("POST", "/v1/instances")[0].content)
    assert body == {"name": "vm1", "spec": {"image": "tiny", "cpus": 2, "memory_mib": 1536}}
    assert len(api.sent("GET", "/v1/operations/op-1")) == 2
    assert "ready 4.01 s after create" in result.stdout


def test_create_stopped_and_options_reach_the_spec(
    corral: Any, api: CannedAPI, make_operation: MakeOp, make_instance: MakeInst
) -> None:
    answer_create(api, make_operation, make_instance)
    args = ["--stopped", "--machine", "microvm", "--on-crash", "restart", "--memory", "512"]
    result = corral("create", "vm1", "--image", "tiny", *args)
    assert result.exit_code == 0, result.output
    spec = json.loads(api.sent("POST", "/v1/instances")[0].content)["spec"]
    assert spec == {
        "image": "tiny",
        "memory_mib": 512,
        "power": "stopped",
        "machine": "microvm",
        "on_crash": "restart",
    }


@pytest.mark.parametrize(
    ("memory", "why"), [("lots", "not a size"), ("1000K", "whole number of MiB")]
)
def test_bad_memory_is_a_usage_error_naming_the_option(
    corral: Any, api: CannedAPI, memory: str, why: str
) -> None:
    result = corral("create", "vm1", "--image", "tiny", "--memory", memory)
    assert result.exit_code == 2
    assert "--memory" in result.output and why in result.output
    assert api.requests == []


def test_create_no_wait_prints_the_operation_and_does_not_poll(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    api.answer("POST", "/v1/instances", json_response(make_operation(), 202))
    result = corral("-o", "json", "create", "vm1", "--image", "tiny", "--no-wait")
    assert result.exit_code == 0, result.output
    assert Operation.model_validate_json(result.stdout).id == "op-1"
    assert [r.method for r in api.requests] == ["POST"]


def test_create_whose_operation_fails_prints_its_error(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    api.answer("POST", "/v1/instances", json_response(make_operation(), 202))
    failed = make_operation(state="failed", error={"code": "launch_failed", "message": "no kernel"})
    api.answer("GET", "/v1/operations/op-1", json_response(failed))
    result = corral("create", "vm1", "--image", "tiny")
    assert result.exit_code == 1
    assert "Error: create of instance vm1 failed: no kernel (code: launch_failed)" in result.stderr


@pytest.mark.parametrize("exit_code", [0, 3])
def test_exec_prints_guest_streams_and_exits_with_the_guest_code(
    corral: Any, api: CannedAPI, exit_code: int
) -> None:
    result_body = ExecResult(exit_code=exit_code, stdout="Linux\n", stderr="warn\n")
    api.answer("POST", "/v1/instances/vm1/actions/exec", json_response(result_body))
    result = corral("exec", "vm1", "--timeout", "5", "--", "uname", "-a")
    assert result.exit_code == exit_code
    assert result.stdout == "Linux\n" and result.stderr == "warn\n"
    sent = json.loads(api.requests[0].content)
    assert sent == {"command": ["uname", "-a"], "timeout_s": 5.0, "input": None}


def test_exec_json_and_stdin(corral: Any, api: CannedAPI) -> None:
    api.answer(
        "POST",
        "/v1/instances/vm1/actions/exec",
        json_response(ExecResult(exit_code=1, stdout="hi", stderr="")),
    )
    result = corral("exec", "vm1", "-i", "-o", "json", "--", "cat", input="hi")
    assert result.exit_code == 1
    assert ExecResult.model_validate_json(result.stdout).stdout == "hi"
    assert json.loads(api.requests[0].content)["input"] == "hi"


def test_exec_on_stopped_instance_is_a_clean_error(corral: Any, api: CannedAPI) -> None:
    api.answer(
        "POST",
        "/v1/instances/vm1/actions/exec",
        problem(409, "invalid_state", "vm1 is stopped; start it with `corral start vm1`"),
    )
    result = corral("exec", "vm1", "--", "true")
    assert result.exit_code == 1
    assert "start it with `corral start vm1`" in result.stderr


def test_stop_force_sends_force_and_waits(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    api.answer(
        "POST", "/v1/instances/vm1/actions/stop", json_response(make_operation(kind="stop"), 202)
    )
    api.answer(
        "GET", "/v1/operations/op-1", json_response(make_operation(kind="stop", state="succeeded"))
    )
    result = corral("stop", "vm1", "--force")
    assert result.exit_code == 0, result.output
    assert json.loads(api.requests[0].content) == {"force": True}
    assert result.stdout.startswith("Stopped vm1")


@pytest.mark.parametrize(("verb", "path"), [("start", "start"), ("restart", "restart")])
def test_start_and_restart_no_wait(
    corral: Any, api: CannedAPI, make_operation: MakeOp, verb: str, path: str
) -> None:
    api.answer(
        "POST", f"/v1/instances/vm1/actions/{path}", json_response(make_operation(kind=verb), 202)
    )
    result = corral(verb, "vm1", "--no-wait")
    assert result.exit_code == 0, result.output
    assert "operation op-1" in result.stdout


def test_delete_force_powers_off_first_then_deletes(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    api.answer(
        "POST",
        "/v1/instances/vm1/actions/stop",
        json_response(make_operation("op-s", kind="stop"), 202),
    )
    api.answer(
        "GET",
        "/v1/operations/op-s",
        json_response(make_operation("op-s", kind="stop", state="succeeded")),
    )
    api.answer(
        "DELETE", "/v1/instances/vm1", json_response(make_operation("op-d", kind="delete"), 202)
    )
    api.answer(
        "GET",
        "/v1/operations/op-d",
        json_response(make_operation("op-d", kind="delete", state="succeeded")),
    )
    result = corral("delete", "vm1", "--force")
    assert result.exit_code == 0, result.output
    assert [(r.method, r.url.path) for r in api.requests] == [
        ("POST", "/v1/instances/vm1/actions/stop"),
        ("GET", "/v1/operations/op-s"),
        ("DELETE", "/v1/instances/vm1"),
        ("GET", "/v1/operations/op-d"),
    ]
    assert json.loads(api.requests[0].content) == {"force": True}


def test_delete_force_of_stopped_instance_skips_the_power_off(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    api.answer(
        "POST", "/v1/instances/vm1/actions/stop", problem(409, "invalid_state", "not running")
    )
    api.answer("DELETE", "/v1/instances/vm1", json_response(make_operation(kind="delete"), 202))
    result = corral("delete", "vm1", "--force", "--no-wait")
    assert result.exit_code == 0, result.output


def test_module_entry_point_reports_an_unreachable_server_without_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "--url", "http://127.0.0.1:9", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("Error: cannot reach the Corral server at http://127.0.0.1:9")
    assert "Traceback" not in done.stderr
