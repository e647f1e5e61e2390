"""Tiny blocking JSON-over-unix-socket clients for tests: the guest agent and QMP.

The real agent client belongs to the QEMU driver; these exist so the image tests depend on
nothing but the image. Both protocols send one JSON object per line.
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DELIMITER = b"\xff"  # guest-sync-delimited puts this before its reply


class ChannelError(AssertionError):
    """The other side answered with an error, or not in time."""


class JsonLineSocket:
    """A unix socket speaking newline-delimited JSON, with a deadline on every read."""

    def __init__(self, path: Path, connect_timeout: float = 10.0) -> None:
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buffer = b""

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message."""
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON line, or None at the deadline. Text before a 0xFF is dropped."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ChannelError("the other side closed the socket")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        line = line.rpartition(DELIMITER)[2].strip()
        if not line:
            return self.receive(max(deadline - time.monotonic(), 0.0))
        try:
            parsed: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            return self.receive(max(deadline - time.monotonic(), 0.0))  # a torn stale reply
        return parsed


@dataclass(frozen=True)
class ExecResult:
    """What guest-exec-status reported for a finished command."""

    exitcode: int
    stdout: str
    stderr: str


class GuestAgent(JsonLineSocket):
    """qemu-guest-agent over the virtserialport's host socket."""

    _ids = itertools.count(int(time.time()) % 100000 * 1000)

    def sync(self, timeout: float) -> None:
        """Resynchronise (guest-sync-delimited) until the agent echoes our id; stale lines go.

        Retried every second because a request sent before qemu-ga opened its port is lost.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sync_id = next(self._ids)
            self.send({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}})
            retry_at = min(time.monotonic() + 1.0, deadline)
            while (left := retry_at - time.monotonic()) > 0:
                reply = self.receive(left)
                if reply is not None and reply.get("return") == sync_id:
                    return
        raise ChannelError(f"guest agent did not answer guest-sync-delimited in {timeout} s")

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10
    ) -> Any:
        """Run one agent command after a sync; return its "return" value."""
        message: dict[str, Any] = {"execute": command}
        if arguments is not None:
            message["arguments"] = arguments
        self.send(message)
        reply = self.receive(timeout)
        if reply is None:
            raise ChannelError(f"guest agent did not answer {command} in {timeout} s")
        if "error" in reply:
            raise ChannelError(f"{command} failed: {reply['error']}")
        return reply.get("return")

    def run(self, path: str, args: list[str], timeout: float = 20) -> ExecResult:
        """guest-exec a command, poll guest-exec-status until it exits, decode its output."""
        started = self.execute(
            "guest-exec", {"path": path, "arg": args, "capture-output": True}, timeout
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.execute("guest-exec-status", {"pid": started["pid"]}, timeout)
            if status["exited"]:
                return ExecResult(
                    exitcode=status.get("exitcode", -1),
                    stdout=base64.b64decode(status.get("out-data", "")).decode(errors="replace"),
                    stderr=base64.b64decode(status.get("err-data", "")).decode(errors="replace"),
                )
            time.sleep(0.1)
        raise ChannelError(f"{path} {args} did not finish in {timeout} s")


class Qmp(JsonLineSocket):
    """QEMU's monitor: greeting, capabilities negotiation, then commands (events skipped)."""

    def __init__(self, path: Path, connect_timeout: float = 10.0) -> None:
        super().__init__(path, connect_timeout)
        greeting = self.receive(10)
        if greeting is None or "QMP" not in greeting:
            raise ChannelError(f"no QMP greeting (got {greeting!r})")
        self.execute("qmp_capabilities")

    def execute(self, command: str, timeout: float = 10) -> Any:
        """Run one QMP command and return its "return" value."""
        self.send({"execute": command})
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            reply = self.receive(left)
            if reply is None:
                break
            if "event" in reply:
                continue
            if "error" in reply:
                raise ChannelError(f"{command} failed: {reply['error']}")
            return reply.get("return")
        raise ChannelError(f"QMP did not answer {command} in {timeout} s")
