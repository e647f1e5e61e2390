"""A client for qemu-ga (the QEMU guest agent) over the guest's virtio-serial unix socket.

Framing: JSON objects, one per line, both ways. Stale replies happen (a previous client timed
out, qemu-ga restarted with the guest), so a session starts with `guest-sync-delimited`: we send
0xFF (qemu-ga drops any half-read request) and the sync with a fresh id; qemu-ga answers with
0xFF followed by `{"return": id}`; everything before the reply with our id is dropped.

One connection per guest is kept open: the chardev accepts one client at a time, and while no
client is attached qemu-ga polls its port with 100 ms sleeps, which would add latency to every
command. A per-guest lock serialises requests on it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corral.errors import GuestAgentError
from corral.model.rpc import ExecResult

log = logging.getLogger(__name__)

SENTINEL = b"\xff"
# guest-exec-status replies carry the captured output base64-encoded on one line.
_READ_LIMIT = 64 * 1024 * 1024
# While waiting for the first answer, re-send the sync now and then in case a byte got lost.
_SYNC_RESEND_S = 1.0
_EXEC_POLL_FIRST_S = 0.005
_EXEC_POLL_MAX_S = 0.2
_CHECK_HINT = (
    "check that the guest runs qemu-ga on the virtio port org.qemu.guest_agent.0 "
    "(its console log shows whether it started)"
)


def encode_request(command: str, arguments: Mapping[str, object] | None = None) -> bytes:
    """One request line."""
    message: dict[str, object] = {"execute": command}
    if arguments is not None:
        message["arguments"] = dict(arguments)
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def sync_request(sync_id: int) -> bytes:
    """The 0xFF flush byte followed by guest-sync-delimited."""
    return SENTINEL + encode_request("guest-sync-delimited", {"id": sync_id})


def parse_sync_reply(line: bytes) -> int | None:
    """The id in a delimited sync reply (0xFF then `{"return": id}`), or None for anything else."""
    if SENTINEL not in line:
        return None
    payload = line[line.rfind(SENTINEL) + 1 :].strip()
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    if isinstance(message, dict) and isinstance(message.get("return"), int):
        return int(message["return"])
    return None


def exec_result_from_status(status: Mapping[str, Any], duration_ms: float) -> ExecResult:
    """guest-exec-status (exited) -> ExecResult; a signal becomes 128+N like a shell says."""
    if "exitcode" in status:
        code = int(status["exitcode"])
    elif "signal" in status:
        code = 128 + int(status["signal"])
    else:
        code = -1
    return ExecResult(
        exit_code=code,
        stdout=_decode_output(status.get("out-data")),
        stderr=_decode_output(status.get("err-data")),
        duration_ms=duration_ms,
    )


def _decode_output(data: object) -> str:
    if not isinstance(data, str):
        return ""
    return base64.b64decode(data).decode(errors="replace")


class GuestAgent:
    """qemu-ga of one guest: sync, ping, exec. Safe to call from many tasks (one at a time)."""

    def __init__(self, name: str, socket_path: Path) -> None:
        self.name = name
        self.socket_path = socket_path
        self._log = log.getChild(name)
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._synced = False

    def __repr__(self) -> str:
        state = "synced" if self._synced else ("connected" if self._writer else "idle")
        return f"GuestAgent(name={self.name!r}, state={state})"

    async def wait_until_answers(self, timeout_s: float) -> None:
        """Block until qemu-ga answers a sync and a guest-ping (it may not be up yet)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with self._lock:
            await self._sync(deadline, resend_every=_SYNC_RESEND_S)
            await self._command("guest-ping", None, deadline)

    async def ping(self, timeout_s: float = 5.0) -> None:
        """guest-ping."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with self._lock:
            await self._ensure_synced(deadline)
            await self._command("guest-ping", None, deadline)

    async def call(
        self, command: str, arguments: Mapping[str, object] | None = None, timeout_s: float = 10.0
    ) -> Any:
        """Any other qemu-ga command (e.g. guest-fsfreeze-freeze): its "return" value."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with self._lock:
            await self._ensure_synced(deadline)
            return await self._command(command, arguments, deadline)

    async def exec(self, command: list[str], stdin: str | None, timeout_s: float) -> ExecResult:
        """Run `command` in the guest (guest-exec + guest-exec-status), capturing its output."""
        if not command:
            raise GuestAgentError("exec needs a command", code="invalid_command")
        started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + timeout_s
        arguments: dict[str, object] = {
            "path": command[0],
            "arg": command[1:],
            "capture-output": True,
        }
        if stdin is not None:
            arguments["input-data"] = base64.b64encode(stdin.encode()).decode()
        async with self._lock:
            await self._ensure_synced(deadline)
            try:
                reply = await self._command("guest-exec", arguments, deadline)
            except GuestAgentError as err:
                # qemu-ga could not spawn it: say so the way a shell does (127: not found).
                if "Failed to execute child process" in err.message:
                    return ExecResult(exit_code=127, stdout="", stderr=err.message + "\n")
                raise
            guest_pid = int(reply["pid"])
            delay = _EXEC_POLL_FIRST_S
            while True:
                status = await self._command("guest-exec-status", {"pid": guest_pid}, deadline)
                if status.get("exited"):
                    elapsed = (time.monotonic() - started) * 1000
                    return exec_result_from_status(status, elapsed)
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise GuestAgentError(
                        f"command {command!r} in guest {self.name!r} did not finish within "
                        f"{timeout_s:g} s; it is still running there as pid {guest_pid}",
                        code="exec_timeout",
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _EXEC_POLL_MAX_S)

    async def close(self) -> None:
        """Drop the connection (the guest agent keeps running)."""
        async with self._lock:
            self._disconnect()

    # -- internals (call with the lock held) ---------------------------------------------------

    async def _connect(self) -> None:
        if self._writer is not None:
            return
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(
                str(self.socket_path), limit=_READ_LIMIT
            )
        except OSError as err:
            raise GuestAgentError(
                f"cannot reach the guest agent socket of guest {self.name!r} at "
                f"{self.socket_path}: {err.strerror or err}; is the guest running?"
            ) from err
        self._synced = False

    def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._synced = False

    async def _ensure_synced(self, deadline: float) -> None:
        if not self._synced:
            await self._sync(deadline, resend_every=None)

    async def _sync(self, deadline: float, resend_every: float | None) -> None:
        await self._connect()
        loop = asyncio.get_running_loop()
        sync_id = secrets.randbelow(2**31 - 1) + 1
        await self._send(sync_request(sync_id))
        next_resend = loop.time() + resend_every if resend_every else deadline
        while True:
            wait_until = min(deadline, next_resend)
            line = await self._readline(wait_until, allow_timeout=True)
            if line is None:
                if loop.time() >= deadline:
                    self._synced = False
                    raise GuestAgentError(
                        f"the guest agent of guest {self.name!r} did not answer: {_CHECK_HINT}",
                        code="guest_agent_timeout",
                    )
                sync_id = secrets.randbelow(2**31 - 1) + 1
                await self._send(sync_request(sync_id))
                next_resend = loop.time() + (resend_every or 0.0)
                continue
            if parse_sync_reply(line) == sync_id:
                self._synced = True
                return
            self._log.debug("dropping stale guest agent line %r", line[:200])

    async def _command(
        self, command: str, arguments: Mapping[str, object] | None, deadline: float
    ) -> Any:
        await self._send(encode_request(command, arguments))
        while True:
            line = await self._readline(deadline, allow_timeout=False)
            assert line is not None
            if SENTINEL in line or not line.strip():
                continue  # a late reply to an earlier sync
            try:
                message = json.loads(line)
            except ValueError:
                self._log.debug("dropping unparsable guest agent line %r", line[:200])
                continue
            if not isinstance(message, dict):
                continue
            if "error" in message:
                error = message["error"] if isinstance(message["error"], dict) else {}
                raise GuestAgentError(
                    f"guest agent of guest {self.name!r} refused {command}: "
                    f"{error.get('desc', message['error'])}"
                )
            if "return" in message:
                return message["return"]

    async def _send(self, data: bytes) -> None:
        assert self._writer is not None
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as err:
            self._disconnect()
            raise GuestAgentError(
                f"lost the guest agent connection of guest {self.name!r}: {err}; "
                "is the guest running?"
            ) from err

    async def _readline(self, deadline: float, *, allow_timeout: bool) -> bytes | None:
        assert self._reader is not None
        try:
            async with asyncio.timeout_at(deadline):
                line = await self._reader.readline()
        except TimeoutError:
            if allow_timeout:
                return None
            # A reply may still come later: the next session must re-sync past it.
            self._synced = False
            raise GuestAgentError(
                f"the guest agent of guest {self.name!r} did not answer in time: {_CHECK_HINT}",
                code="guest_agent_timeout",
            ) from None
        except (OSError, ValueError) as err:
            self._disconnect()
            raise GuestAgentError(
                f"lost the guest agent connection of guest {self.name!r}: {err}"
            ) from err
        if not line.endswith(b"\n"):
            # EOF: QEMU closed the socket (the guest is going away).
            self._disconnect()
            raise GuestAgentError(
                f"the guest agent socket of guest {self.name!r} closed; is the guest running?"
            )
        return line
