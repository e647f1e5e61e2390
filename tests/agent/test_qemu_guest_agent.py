"""The qemu-ga client's framing, against a small fake guest agent on a unix socket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from corral.agent.compute.qemu.guest_agent import (
    GuestAgent,
    encode_request,
    exec_result_from_status,
    parse_sync_reply,
    sync_request,
)
from corral.errors import GuestAgentError


@dataclass
class FakeQemuGa:
    """Speaks qemu-ga's wire protocol; knobs simulate a slow, stale or silent agent."""

    path: Path
    stale_on_connect: list[bytes] = field(default_factory=list)
    ignore_syncs: int = 0  # syncs dropped as if the agent were not up yet
    silent: bool = False
    polls_until_exit: int = 2
    connections: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None
    _status_polls: dict[int, int] = field(default_factory=dict)
    _execs: dict[int, dict[str, Any]] = field(default_factory=dict)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, str(self.path))

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def hang_up(self) -> None:
        """Close every accepted connection."""
        for writer in self._writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        for line in self.stale_on_connect:
            writer.write(line)
        try:
            while line := await reader.readline():
                if b"\xff" in line:  # qemu-ga resets its parser on 0xFF
                    line = line[line.rfind(b"\xff") + 1 :]
                request = json.loads(line)
                self.requests.append(request)
                reply = self._answer(request)
                if reply is not None and not self.silent:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _answer(self, request: dict[str, Any]) -> bytes | None:
        command, args = request["execute"], request.get("arguments", {})
        if command == "guest-sync-delimited":
            if self.ignore_syncs > 0:
                self.ignore_syncs -= 1
                return None
            # Junk a real agent may have queued: an error for our 0xFF, a stale reply.
            noise = b'{"error": {"class": "GenericError", "desc": "Invalid JSON"}}\n'
            noise += b'{"return": {}}\n' + b'\xff{"return": 1}\n'
            return noise + b"\xff" + json.dumps({"return": args["id"]}).encode() + b"\n"
        if command == "guest-ping":
            return b'{"return": {}}\n'
        if command == "guest-exec":
            program = args["path"]
            if program == "missing":
                desc = "Failed to execute child process \u201cmissing\u201d (No such file)"
                return (
                    json.dumps({"error": {"class": "GenericError", "desc": desc}}).encode() + b"\n"
                )
            if program == "forbidden":
                desc = "Command guest-exec has been disabled"
                return (
                    json.dumps({"error": {"class": "GenericError", "desc": desc}}).encode() + b"\n"
                )
            pid = 100 + len(self._execs)
            self._execs[pid] = args
            return json.dumps({"return": {"pid": pid}}).encode() + b"\n"
        if command == "guest-exec-status":
            pid = args["pid"]
            polls = self._status_polls.get(pid, 0) + 1
            self._status_polls[pid] = polls
            if polls < self.polls_until_exit:
                return b'{"return": {"exited": false}}\n'
            return json.dumps({"return": self._status(self._execs[pid])}).encode() + b"\n"
        return json.dumps({"error": {"class": "CommandNotFound", "desc": f"{command}?"}}).encode()

    @staticmethod
    def _status(args: dict[str, Any]) -> dict[str, Any]:
        program, argv = args["path"], args.get("arg", [])
        if program == "killed":
            return {"exited": True, "signal": 9}
        stdin = base64.b64decode(args.get("input-data", "")).decode()
        out = " ".join([program, *argv]) + "\n" + stdin
        status: dict[str, Any] = {
            "exited": True,
            "exitcode": 3 if program == "fail" else 0,
            "out-data": base64.b64encode(out.encode()).decode(),
        }
        if program == "fail":
            status["err-data"] = base64.b64encode(b"it failed\n").decode()
        return status


@pytest.fixture
async def fake_ga(short_dir: Path) -> AsyncIterator[FakeQemuGa]:
    server = FakeQemuGa(short_dir / "qga.sock")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def agent(fake_ga: FakeQemuGa) -> AsyncIterator[GuestAgent]:
    client = GuestAgent("web1", fake_ga.path)
    yield client
    await client.close()


def test_sync_request_starts_with_the_flush_byte() -> None:
    data = sync_request(77)
    assert data.startswith(b"\xff")
    assert data.endswith(b"\n")
    assert json.loads(data[1:]) == {"execute": "guest-sync-delimited", "arguments": {"id": 77}}
    assert json.loads(encode_request("guest-ping")) == {"execute": "guest-ping"}


@pytest.mark.parametrize(
    ("line", "sync_id"),
    [
        (b'\xff{"return": 42}\n', 42),
        (b'garbage\xff{"return": 42}\n', 42),
        (b'{"return": 42}\n', None),  # no sentinel: not a delimited sync reply
        (b'\xff{"return": {}}\n', None),
        (b"\xffnot json\n", None),
    ],
)
def test_parse_sync_reply(line: bytes, sync_id: int | None) -> None:
    assert parse_sync_reply(line) == sync_id


@pytest.mark.parametrize(
    ("status", "exit_code", "stdout"),
    [
        (
            {"exited": True, "exitcode": 0, "out-data": base64.b64encode(b"hi\n").decode()},
            0,
            "hi\n",
        ),
        ({"exited": True, "exitcode": 3}, 3, ""),
        ({"exited": True, "signal": 9}, 137, ""),
        (
            {"exited": True, "exitcode": 0, "out-data": base64.b64encode(b"\xff\xfe").decode()},
            0,
            "\ufffd\ufffd",
        ),
    ],
)
def test_exec_result_from_status(status: dict[str, Any], exit_code: int, stdout: str) -> None:
    result = exec_result_from_status(status, duration_ms=5.0)
    assert (result.exit_code, result.stdout, result.duration_ms) == (exit_code, stdout, 5.0)


async def test_stale_replies_before_our_sync_are_dropped(
    fake_ga: FakeQemuGa, agent: GuestAgent
) -> None:
    fake_ga.stale_on_connect = [b'{"return": {"pid": 9}}\n', b'\xff{"return": 5}\n', b"junk\n"]
    await agent.ping(timeout_s=2)
    assert [r["execute"] for r in fake_ga.requests] == ["guest-sync-delimited", "guest-ping"]


async def test_exec_decodes_output_exit_code_and_stdin(
    fake_ga: FakeQemuGa, agent: GuestAgent
) -> None:
    result = await agent.exec(["echo", "a", "b"], stdin="from stdin\n", timeout_s=5)
    assert result.exit_code == 0
    assert result.stdout == "echo a b\nfrom stdin\n"
    assert result.duration_ms > 0
    exec_request = next(r for r in fake_ga.requests if r["execute"] == "guest-exec")
    assert exec_request["arguments"]["capture-output"] is True
    failed = await agent.exec(["fail"], stdin=None, timeout_s=5)
    assert (failed.exit_code, failed.stderr) == (3, "it failed\n")


async def test_a_killed_command_reports_128_plus_signal(agent: GuestAgent) -> None:
    assert (await agent.exec(["killed"], stdin=None, timeout_s=5)).exit_code == 137


async def test_a_command_that_cannot_start_is_exit_127(agent: GuestAgent) -> None:
    result = await agent.exec(["missing"], stdin=None, timeout_s=5)
    assert result.exit_code == 127
    assert "missing" in result.stderr


async def test_one_connection_and_one_sync_serve_many_requests(
    fake_ga: FakeQemuGa, agent: GuestAgent
) -> None:
    results = await asyncio.gather(
        *(agent.exec(["echo", str(i)], stdin=None, timeout_s=5) for i in range(5))
    )
    assert [r.stdout for r in results] == [f"echo {i}\n" for i in range(5)]
    assert fake_ga.connections == 1
    assert [r["execute"] for r in fake_ga.requests].count("guest-sync-delimited") == 1


async def test_wait_until_answers_outlasts_an_agent_that_is_not_up_yet(
    fake_ga: FakeQemuGa, agent: GuestAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("corral.agent.compute.qemu.guest_agent._SYNC_RESEND_S", 0.05)
    fake_ga.ignore_syncs = 3
    await agent.wait_until_answers(timeout_s=5)
    executed = [r["execute"] for r in fake_ga.requests]
    assert executed == ["guest-sync-delimited"] * 4 + ["guest-ping"]


async def test_a_silent_agent_times_out_saying_what_to_check(
    fake_ga: FakeQemuGa, agent: GuestAgent
) -> None:
    fake_ga.silent = True
    with pytest.raises(GuestAgentError) as caught:
        await agent.ping(timeout_s=0.2)
    assert caught.value.code == "guest_agent_timeout"
    assert "qemu-ga" in caught.value.message
    assert "org.qemu.guest_agent.0" in caught.value.message


async def test_after_a_timeout_the_next_request_syncs_again(
    fake_ga: FakeQemuGa, agent: GuestAgent
) -> None:
    fake_ga.silent = True
    with pytest.raises(GuestAgentError):
        await agent.ping(timeout_s=0.2)
    fake_ga.silent = False
    await agent.ping(timeout_s=2)
    assert [r["execute"] for r in fake_ga.requests][-2:] == ["guest-sync-delimited", "guest-ping"]


async def test_exec_that_outlives_its_timeout_says_so(
    fake_ga: FakeQemuGa, agent: GuestAgent
) -> None:
    fake_ga.polls_until_exit = 10**6
    with pytest.raises(GuestAgentError) as caught:
        await agent.exec(["sleep", "100"], stdin=None, timeout_s=0.3)
    assert caught.value.code == "exec_timeout"
    assert "still running" in caught.value.message


async def test_an_error_reply_becomes_a_guest_agent_error(agent: GuestAgent) -> None:
    with pytest.raises(GuestAgentError) as caught:
        await agent.exec(["forbidden"], stdin=None, timeout_s=2)
    assert "guest-exec has been disabled" in caught.value.message


async def test_an_empty_command_is_refused(agent: GuestAgent) -> None:
    with pytest.raises(GuestAgentError):
        await agent.exec([], stdin=None, timeout_s=1)


async def test_no_socket_means_guest_not_running(short_dir: Path) -> None:
    client = GuestAgent("web1", short_dir / "nothing.sock")
    with pytest.raises(GuestAgentError) as caught:
        await client.ping(timeout_s=1)
    assert "is the guest running" in caught.value.message


async def test_agent_socket_closing_mid_session_is_reported_then_recovered(
    fake_ga: FakeQemuGa, agent: GuestAgent
) -> None:
    await agent.ping(timeout_s=2)
    fake_ga.hang_up()  # as QEMU does when it exits
    with pytest.raises(GuestAgentError) as caught:
        await agent.exec(["echo"], stdin=None, timeout_s=2)
    assert "closed" in caught.value.message or "lost" in caught.value.message
    # The next request reconnects and syncs afresh.
    await agent.ping(timeout_s=2)
    assert fake_ga.connections == 2
