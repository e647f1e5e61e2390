"""Hosts, operations, images, events, console and serve, against canned answers."""

from __future__ import annotations

import json
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.server import ServerConnection, serve

from corral.cli import state
from corral.cli.console import last_lines
from corral.client import CorralClient
from corral.client.testing import CannedAPI, json_response, problem
from corral.model import Event, Host, Image, Operation

MakeOp = Callable[..., Operation]
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def test_hosts_table_shows_accel_and_its_reason(corral: Any, api: CannedAPI) -> None:
    host = Host(
        name="host1",
        cpus=8,
        memory_mib=16384,
        allocated_cpus=2,
        accel="tcg",
        accel_reason="only kvm_pvm is loaded",
    )
    api.answer("GET", "/v1/hosts", json_response([host]))
    result = corral("hosts")
    assert result.exit_code == 0, result.output
    assert "ACCEL" in result.stdout and "tcg" in result.stdout
    assert "only kvm_pvm is loaded" in " ".join(result.stdout.split())
    as_json = corral("hosts", "-o", "json")
    assert [Host.model_validate(h) for h in json.loads(as_json.stdout)] == [host]


def test_operations_list_and_one(corral: Any, api: CannedAPI, make_operation: MakeOp) -> None:
    api.answer("GET", "/v1/operations", json_response([make_operation("op-2"), make_operation()]))
    api.answer("GET", "/v1/operations/op-1", json_response(make_operation(message="booting")))
    listed = corral("-o", "json", "operations")
    assert [op["id"] for op in json.loads(listed.stdout)] == ["op-2", "op-1"]
    one = corral("operations", "op-1", "-o", "json")
    assert Operation.model_validate_json(one.stdout).message == "booting"
    table = corral("operations", "op-1")
    assert table.exit_code == 0 and "booting" in table.stdout


def test_image_commands(corral: Any, api: CannedAPI) -> None:
    image = Image(name="tiny", state="ready", size_bytes=5 * 1024 * 1024, created_at=NOW)
    api.answer("GET", "/v1/images", json_response([image]))
    api.answer("GET", "/v1/images/tiny", json_response(image))
    api.answer("GET", "/v1/recipes", json_response({"items": ["tiny", "debian"]}))
    api.answer("DELETE", "/v1/images/tiny", httpx.Response(204))

    assert [
        Image.model_validate(i) for i in json.loads(corral("image", "list", "-o", "json").stdout)
    ] == [image]
    assert Image.model_validate_json(corral("-o", "json", "image", "show", "tiny").stdout) == image
    assert json.loads(corral("image", "recipes", "-o", "json").stdout) == ["tiny", "debian"]
    assert corral("image", "recipes").stdout == "tiny\ndebian\n"
    assert "5M" in corral("image", "list").stdout
    assert corral("image", "delete", "tiny").stdout == "Deleted image tiny.\n"


def test_image_delete_in_use_is_a_clean_error(corral: Any, api: CannedAPI) -> None:
    api.answer(
        "DELETE", "/v1/images/tiny", problem(409, "image_in_use", "vm1 uses tiny; delete vm1 first")
    )
    result = corral("image", "delete", "tiny")
    assert result.exit_code == 1
    assert result.stderr == "Error: vm1 uses tiny; delete vm1 first (code: image_in_use)\n"


def test_image_build_follows_progress_then_reports_the_image(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    build = {"kind": "image-build", "target_kind": "image", "target": "small"}
    api.answer("POST", "/v1/images", json_response(make_operation(**build), 202))
    api.answer(
        "GET",
        "/v1/operations/op-1",
        json_response(make_operation(**build, progress=0.3, message="unpacking kernel")),
        json_response(make_operation(**build, state="succeeded", progress=1.0)),
    )
    image = Image(name="small", state="ready", size_bytes=3 * 1024 * 1024, created_at=NOW)
    api.answer("GET", "/v1/images/small", json_response(image))

    result = corral("image", "build", "tiny", "--name", "small")

    assert result.exit_code == 0, result.output
    assert json.loads(api.sent("POST", "/v1/images")[0].content) == {
        "recipe": "tiny",
        "name": "small",
    }
    assert result.stdout.startswith("Built image small (3M) in ")


def test_image_build_unknown_recipe(corral: Any, api: CannedAPI) -> None:
    api.answer(
        "POST",
        "/v1/images",
        problem(422, "unknown_recipe", "no recipe 'huge'; see `corral image recipes`", "recipe"),
    )
    result = corral("image", "build", "huge")
    assert result.exit_code == 1
    assert "(code: unknown_recipe, field: recipe)" in result.stderr


def sse(event_id: int) -> bytes:
    event = Event(
        id=event_id,
        time=NOW,
        type="instance.state",
        kind="instance",
        name="vm1",
        data={"state": "running"},
    )
    return f"id: {event_id}\nevent: instance.state\ndata: {event.model_dump_json()}\n\n".encode()


def test_events_json_lines_with_count(corral: Any, api: CannedAPI) -> None:
    api.answer(
        "GET",
        "/v1/events",
        lambda request: httpx.Response(
            200, content=sse(5) + sse(6) + sse(7), headers={"Content-Type": "text/event-stream"}
        ),
    )
    result = corral("events", "--since", "4", "--count", "2", "-o", "json")
    assert result.exit_code == 0, result.output
    assert [Event.model_validate_json(line).id for line in result.stdout.splitlines()] == [5, 6]
    assert api.requests[0].url.params["since"] == "4"


def test_events_table_is_one_line_per_event(corral: Any, api: CannedAPI) -> None:
    api.answer(
        "GET",
        "/v1/events",
        lambda request: httpx.Response(
            200, content=sse(1), headers={"Content-Type": "text/event-stream"}
        ),
    )
    result = corral("events", "-n", "1")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert "#1 instance.state instance/vm1 state=running" in line


def test_console_log_and_tail(corral: Any, api: CannedAPI) -> None:
    api.answer(
        "GET", "/v1/instances/vm1/console/log", httpx.Response(200, content=b"one\ntwo\nthree\n")
    )
    assert corral("console", "vm1", "--log").stdout == "one\ntwo\nthree\n"
    assert corral("console", "vm1", "--tail", "2").stdout == "two\nthree\n"
    assert api.requests[0].url.params["bytes"] == "65536"


@pytest.mark.parametrize(
    ("data", "count", "expected"),
    [(b"a\nb\nc\n", 2, b"b\nc\n"), (b"a\nb\nc", 1, b"c"), (b"a\n", 5, b"a\n"), (b"a\nb\n", 0, b"")],
)
def test_last_lines(data: bytes, count: int, expected: bytes) -> None:
    assert last_lines(data, count) == expected


@pytest.fixture
def upper_console() -> Iterator[tuple[str, list[str]]]:
    """A real WebSocket console on loopback that echoes in upper case; records auth headers."""
    auth: list[str] = []

    def handler(connection: ServerConnection) -> None:
        assert connection.request is not None
        auth.append(connection.request.headers.get("Authorization", ""))
        for message in connection:
            assert isinstance(message, bytes)
            connection.send(message.upper())

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.socket.getsockname()[:2]
        yield f"http://{host}:{port}", auth
        server.shutdown()
    thread.join(timeout=5)


def test_console_without_a_terminal_pipes_stdin_and_output(
    corral: Any, monkeypatch: pytest.MonkeyPatch, upper_console: tuple[str, list[str]]
) -> None:
    url, auth = upper_console
    monkeypatch.setattr(state, "client_factory", lambda u, d: CorralClient(url, "cli-token"))
    result = corral("console", "vm1", "--linger", "0.3", input=b"uname\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "UNAME\n"
    assert auth == ["Bearer cli-token"]


def test_console_of_missing_instance_is_a_clean_error(
    corral: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reject(connection: ServerConnection, request: Any) -> Any:
        body = {"status": 404, "code": "not_found", "detail": "instance vm9 does not exist"}
        return connection.respond(404, json.dumps(body))

    with serve(lambda c: None, "127.0.0.1", 0, process_request=reject) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.socket.getsockname()[:2]
        monkeypatch.setattr(
            state, "client_factory", lambda u, d: CorralClient(f"http://{host}:{port}", "t")
        )
        result = corral("console", "vm9")
        server.shutdown()
    thread.join(timeout=5)
    assert result.exit_code == 1
    assert result.stderr == "Error: instance vm9 does not exist (code: not_found)\n"


@dataclass
class RecordedConfig:
    data_dir: Path
    listen: str = "127.0.0.1:8470"
    db_url: str | None = None
    compute: str = "qemu"
    resync_s: float = 5.0


@pytest.fixture
def fake_daemon(monkeypatch: pytest.MonkeyPatch) -> list[RecordedConfig]:
    """Stand in for corral.daemon (another room): record the config `corral serve` builds."""
    served: list[RecordedConfig] = []
    module = types.ModuleType("corral.daemon")
    module.ServerConfig = RecordedConfig  # type: ignore[attr-defined]
    module.serve = served.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "corral.daemon", module)
    return served


def test_serve_builds_the_server_config(
    corral: Any, fake_daemon: list[RecordedConfig], tmp_path: Path
) -> None:
    args = ["--data-dir", str(tmp_path), "--listen", "127.0.0.1:9999", "--db", "sqlite:///x.db"]
    result = corral("serve", *args, "--compute", "fake", "--resync", "0.5")
    assert result.exit_code == 0, result.output
    assert fake_daemon == [
        RecordedConfig(tmp_path, "127.0.0.1:9999", "sqlite:///x.db", "fake", 0.5)
    ]


def test_serve_uses_the_global_data_dir(
    corral: Any, fake_daemon: list[RecordedConfig], tmp_path: Path
) -> None:
    assert corral("--data-dir", str(tmp_path), "serve").exit_code == 0
    assert fake_daemon[0].data_dir == tmp_path and fake_daemon[0].compute == "qemu"


@pytest.mark.parametrize("listen", ["8470", "host:", "host:99999", ":80"])
def test_serve_rejects_a_bad_listen_address(
    corral: Any, fake_daemon: list[RecordedConfig], listen: str
) -> None:
    result = corral("serve", "--listen", listen)
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output
    assert fake_daemon == []
