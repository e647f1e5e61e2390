"""QMP: events mapped to AgentEvents, runstates mapped to ours, and the monitor connection
against a small fake QMP server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.agent.compute.qemu.qmp import (
    GuestMonitor,
    agent_event_from_qmp,
    qmp_error_class,
    run_state_from_qmp_status,
)
from corral.errors import HostError
from corral.model.rpc import AgentEventKind, GuestRunState

STAMP = {"seconds": 1700000000, "microseconds": 250000}


@pytest.mark.parametrize(
    ("event", "data", "kind"),
    [
        ("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"}, AgentEventKind.SHUTDOWN),
        ("STOP", {}, AgentEventKind.STOPPED),
        ("RESUME", {}, AgentEventKind.RESUMED),
        ("RESET", {"guest": True, "reason": "guest-reset"}, AgentEventKind.RESET),
        ("GUEST_PANICKED", {"action": "pause"}, AgentEventKind.STOPPED),
        ("GUEST_PANICKED", {"action": "poweroff"}, AgentEventKind.SHUTDOWN),
        ("VSERPORT_CHANGE", {"id": "qga0", "open": True}, AgentEventKind.GUEST_AGENT_UP),
        ("VSERPORT_CHANGE", {"id": "qga0", "open": False}, None),
        ("VSERPORT_CHANGE", {"id": "other", "open": True}, None),
        ("POWERDOWN", {}, None),  # a request, not a state change
        ("RTC_CHANGE", {"offset": 1}, None),
    ],
)
def test_qmp_events_map_to_agent_events(
    event: str, data: dict[str, Any], kind: AgentEventKind | None
) -> None:
    mapped = agent_event_from_qmp("web1", {"event": event, "data": data, "timestamp": STAMP})
    if kind is None:
        assert mapped is None
        return
    assert mapped is not None
    assert (mapped.name, mapped.kind) == ("web1", kind)
    assert mapped.detail["qmp_event"] == event
    assert mapped.time.timestamp() == pytest.approx(1700000000.25)
    for key, value in data.items():
        assert mapped.detail[key] == value


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("running", GuestRunState.RUNNING),
        ("paused", GuestRunState.PAUSED),
        ("inmigrate", GuestRunState.PAUSED),
        ("postmigrate", GuestRunState.PAUSED),
        ("internal-error", GuestRunState.PAUSED),
        ("guest-panicked", GuestRunState.PAUSED),
        ("shutdown", GuestRunState.SHUTDOWN),
    ],
)
def test_qemu_runstates_map_to_ours(status: str, state: GuestRunState) -> None:
    assert run_state_from_qmp_status(status) == state


class FakeQmpServer:
    """Greets, negotiates, answers query-status/system_powerdown; can emit events, hang up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commands: list[str] = []
        self.status = "running"
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def stop(self) -> None:
        self.hang_up()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def emit(self, event: str, data: dict[str, Any]) -> None:
        for writer in self._writers:
            message = {"event": event, "data": data, "timestamp": STAMP}
            writer.write(json.dumps(message).encode() + b"\n")

    def hang_up(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        greeting = {
            "QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}
        }
        writer.write(json.dumps(greeting).encode() + b"\n")
        decoder = json.JSONDecoder()
        buffer = ""
        try:
            # qemu.qmp sends JSON objects back to back, without newlines, as QEMU allows.
            while chunk := await reader.read(4096):
                buffer += chunk.decode()
                while buffer.strip():
                    try:
                        request, end = decoder.raw_decode(buffer.lstrip())
                    except ValueError:
                        break
                    buffer = buffer.lstrip()[end:]
                    writer.write(self._reply(request))
                await writer.drain()
        except ConnectionError:
            pass

    def _reply(self, request: dict[str, Any]) -> bytes:
        command = request["execute"]
        self.commands.append(command)
        reply: dict[str, Any]
        if command == "query-status":
            reply = {"return": {"status": self.status, "running": True}}
        elif command in ("qmp_capabilities", "system_powerdown"):
            reply = {"return": {}}
        else:
            reply = {"error": {"class": "CommandNotFound", "desc": f"no {command}"}}
        if "id" in request:
            reply["id"] = request["id"]
        return json.dumps(reply).encode() + b"\n"


@pytest.fixture
async def qmp_server(short_dir: Path) -> AsyncIterator[FakeQmpServer]:
    server = FakeQmpServer(short_dir / "qmp.sock")
    await server.start()
    yield server
    await server.stop()


async def test_monitor_queries_status_and_pumps_events(qmp_server: FakeQmpServer) -> None:
    seen: list[dict[str, Any]] = []
    monitor = GuestMonitor("web1", qmp_server.path, seen.append)
    await monitor.connect()
    assert "web1" in repr(monitor) and "connected" in repr(monitor)
    assert await monitor.query_status() == "running"
    qmp_server.emit("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
    qmp_server.hang_up()  # QEMU exits right after its last event
    await monitor.drain(timeout_s=2)
    assert [event["event"] for event in seen] == ["SHUTDOWN"]
    await monitor.close()
    assert "closed" in repr(monitor)


async def test_monitor_reconnects_after_a_dropped_connection(qmp_server: FakeQmpServer) -> None:
    monitor = GuestMonitor("web1", qmp_server.path, lambda event: None)
    await monitor.connect()
    qmp_server.hang_up()
    await asyncio.sleep(0.05)
    qmp_server.status = "paused"
    assert await monitor.query_status() == "paused"
    assert qmp_server.commands.count("qmp_capabilities") == 2
    await monitor.close()


async def test_qmp_errors_arrive_as_host_errors_with_the_cause(qmp_server: FakeQmpServer) -> None:
    monitor = GuestMonitor("web1", qmp_server.path, lambda event: None)
    with pytest.raises(HostError) as caught:
        await monitor.execute("no-such-command")
    assert "CommandNotFound" in caught.value.message
    assert caught.value.__cause__ is not None
    assert qmp_error_class(caught.value) == "CommandNotFound"
    assert qmp_error_class(HostError("not from QEMU")) is None
    await monitor.close()


async def test_an_expected_event_is_the_first_whose_data_matches(
    qmp_server: FakeQmpServer,
) -> None:
    monitor = GuestMonitor("web1", qmp_server.path, lambda event: None)
    await monitor.connect()
    with monitor.expecting("DEVICE_DELETED", device="disk1") as deleted:
        # QEMU says DEVICE_DELETED for the inner virtio backend first, without a device id.
        qmp_server.emit("DEVICE_DELETED", {"path": "/machine/peripheral/disk1/virtio-backend"})
        qmp_server.emit("DEVICE_DELETED", {"device": "disk2", "path": "/machine/peripheral/disk2"})
        qmp_server.emit("DEVICE_DELETED", {"device": "disk1", "path": "/machine/peripheral/disk1"})
        event = await asyncio.wait_for(deleted, timeout=2)
    assert event["data"] == {"device": "disk1", "path": "/machine/peripheral/disk1"}
    with monitor.expecting("DEVICE_DELETED", device="disk3") as never:
        pass
    assert never.cancelled()  # leaving the block forgets the expectation
    await monitor.close()


async def test_connecting_to_no_qemu_says_so(short_dir: Path) -> None:
    monitor = GuestMonitor("web1", short_dir / "none.sock", lambda event: None)
    with pytest.raises(HostError) as caught:
        await monitor.connect(timeout_s=1)
    assert "is its QEMU running" in caught.value.message
    await monitor.close()
