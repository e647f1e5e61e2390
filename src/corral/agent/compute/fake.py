"""A complete in-memory compute backend for fast tests of everything above the driver.

It keeps the same promises as the QEMU backend (the contract suite runs against both): guests
have pids and runtime files, survive a new backend object on the same runtime dir (re-attach),
answer exec for a few busybox-like commands, echo on the console, and report events.
`simulate_crash(name)` stands for a guest killed from outside Corral.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shlex
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from corral.agent.compute.base import AccelInfo, AgentEventHandler, ComputeCapabilities
from corral.errors import Conflict, GuestAgentError, InvalidInput, LaunchError, NotFound
from corral.model.rpc import (
    AgentEvent,
    AgentEventKind,
    ExecRequest,
    ExecResult,
    GuestObservation,
    GuestRunState,
    LaunchRequest,
)

FAKE_HOST_MEMORY_MIB = 64 * 1024
_READY_MARKER = b"corral-guest: ready\n"
_pids = itertools.count(100_000)


class FakeComputeBackend:
    """Guests that exist only as files under `runtime_dir` and state in this object."""

    name = "fake"
    capabilities = ComputeCapabilities(kind="vm", live_migrate=False)

    def __init__(self, runtime_dir: Path, boot_delay_s: float = 0.0) -> None:
        self.runtime_dir = runtime_dir
        self.boot_delay_s = boot_delay_s
        self._handlers: list[AgentEventHandler] = []
        self._consoles: dict[str, list[asyncio.StreamWriter]] = {}
        runtime_dir.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FakeComputeBackend(runtime_dir={str(self.runtime_dir)!r})"

    # -- files -------------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.runtime_dir / name

    def _load(self, name: str) -> dict[str, object] | None:
        try:
            data: dict[str, object] = json.loads((self._dir(name) / "fake.json").read_text())
        except FileNotFoundError:
            return None
        return data

    def _save(self, name: str, data: dict[str, object]) -> None:
        path = self._dir(name) / "fake.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def _emit(self, name: str, kind: AgentEventKind, **detail: object) -> None:
        event = AgentEvent(name=name, kind=kind, detail=dict(detail), time=datetime.now(UTC))
        for handler in self._handlers:
            handler(event)

    # -- ComputeBackend ------------------------------------------------------------------------
    def accel_info(self) -> AccelInfo:
        """The fake always 'emulates'."""
        return AccelInfo(accel="tcg", reason="fake compute backend: nothing is accelerated")

    def version(self) -> str:
        """A version string shaped like QEMU's."""
        return "fake-1.0"

    async def launch(self, req: LaunchRequest) -> GuestObservation:
        """Record a running guest; refuse what QEMU would refuse (missing kernel, huge memory)."""
        current = self._load(req.name)
        if current is not None and current.get("state") == GuestRunState.RUNNING:
            raise Conflict(f"guest {req.name!r} is already running", code="invalid_state")
        if not Path(req.kernel).is_file():
            raise LaunchError(
                f"guest {req.name!r} did not start: kernel {req.kernel} is missing",
                stderr_tail=f"qemu: could not load kernel '{req.kernel}': No such file",
            )
        if req.memory_mib > FAKE_HOST_MEMORY_MIB:
            raise LaunchError(
                f"guest {req.name!r} did not start: cannot allocate {req.memory_mib} MiB",
                stderr_tail="qemu: cannot set up guest memory 'pc.ram': Cannot allocate memory",
            )
        self._dir(req.name).mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC)
        data: dict[str, object] = {
            "state": GuestRunState.RUNNING.value,
            "pid": next(_pids) + os.getpid() % 1000 * 1000,
            "started_at": started.isoformat(),
            "booted_at": time.time() + self.boot_delay_s,
            "argv": ["fake-qemu", "-name", req.name, "-m", str(req.memory_mib)],
            "hostname": req.name,
        }
        self._save(req.name, data)
        (self._dir(req.name) / "console.log").write_bytes(_READY_MARKER)
        self._emit(req.name, AgentEventKind.STARTED)
        return await self.observe(req.name)

    async def observe(self, name: str) -> GuestObservation:
        """The recorded state."""
        data = self._load(name)
        if data is None:
            return GuestObservation(name=name, state=GuestRunState.ABSENT)
        state = GuestRunState(str(data["state"]))
        running = state != GuestRunState.ABSENT
        return GuestObservation(
            name=name,
            state=state,
            pid=int(str(data["pid"])) if running else None,
            started_at=datetime.fromisoformat(str(data["started_at"])) if running else None,
            accel="tcg",
            argv=_string_list(data.get("argv")),
            exit_reason=str(data["exit_reason"]) if data.get("exit_reason") else None,
            qmp_status="running" if state == GuestRunState.RUNNING else None,
        )

    async def observe_all(self) -> list[GuestObservation]:
        """Every guest with a runtime dir."""
        names = sorted(p.name for p in self.runtime_dir.iterdir() if (p / "fake.json").exists())
        return [await self.observe(n) for n in names]

    async def wait_ready(self, name: str, timeout_s: float) -> float:
        """Ready after the configured boot delay."""
        start = time.monotonic()
        while True:
            data = self._load(name)
            if data is None or data["state"] != GuestRunState.RUNNING:
                raise GuestAgentError(f"guest {name!r} is not running; it cannot become ready")
            if time.time() >= float(str(data["booted_at"])):
                return time.monotonic() - start
            if time.monotonic() - start > timeout_s:
                raise GuestAgentError(f"guest {name!r}: guest agent did not answer in {timeout_s}s")
            await asyncio.sleep(0.01)

    def _mark_absent(self, name: str, reason: str) -> bool:
        data = self._load(name)
        if data is None or data["state"] == GuestRunState.ABSENT:
            return False
        data["state"] = GuestRunState.ABSENT.value
        data["exit_reason"] = reason
        self._save(name, data)
        for writer in self._consoles.pop(name, []):
            writer.close()
        return True

    async def shutdown(self, name: str, timeout_s: float) -> None:
        """The fake guest always honours ACPI power-off."""
        if self._mark_absent(name, "shutdown"):
            with (self._dir(name) / "console.log").open("ab") as log:
                log.write(b"reboot: Power down\n")
            self._emit(name, AgentEventKind.SHUTDOWN, reason="host-qmp-system-powerdown")
            self._emit(name, AgentEventKind.EXITED, reason="shutdown")

    async def kill(self, name: str) -> None:
        """Stop at once."""
        if self._mark_absent(name, "killed"):
            self._emit(name, AgentEventKind.EXITED, reason="killed")

    def simulate_crash(self, name: str) -> None:
        """Stand-in for `kill -9` of the guest from outside Corral (no event is delivered,
        as when the agent was not watching): only a resync can notice."""
        self._mark_absent(name, "killed")

    async def forget(self, name: str) -> None:
        """Remove runtime files; refuse while running."""
        data = self._load(name)
        if data is not None and data["state"] != GuestRunState.ABSENT:
            raise Conflict(f"guest {name!r} is running; stop it before forgetting it")
        shutil.rmtree(self._dir(name), ignore_errors=True)

    async def exec(self, req: ExecRequest) -> ExecResult:
        """A few busybox-like commands, enough for contract tests."""
        data = self._load(req.name)
        if data is None or data["state"] != GuestRunState.RUNNING:
            raise GuestAgentError(f"guest {req.name!r} is not running")
        if not req.command:
            raise InvalidInput("command must not be empty", field="command")
        return _fake_command(req.command, req.input or "", str(data.get("hostname", req.name)))

    async def open_console(self, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A loopback console that runs each line through the fake shell."""
        data = self._load(name)
        if data is None or data["state"] != GuestRunState.RUNNING:
            raise NotFound(f"guest {name!r} is not running; it has no console")
        host_side, guest_side = await _socket_pair()
        host_reader, host_writer = host_side
        guest_reader, guest_writer = guest_side
        self._consoles.setdefault(name, []).append(guest_writer)
        asyncio.get_running_loop().create_task(
            _fake_shell(guest_reader, guest_writer, str(data.get("hostname", name)))
        )
        return host_reader, host_writer

    async def console_log(self, name: str, max_bytes: int) -> bytes:
        """Tail of the console log."""
        try:
            content = (self._dir(name) / "console.log").read_bytes()
        except FileNotFoundError as err:
            raise NotFound(f"guest {name!r} has no console log") from err
        return content[-max_bytes:]

    def subscribe(self, handler: AgentEventHandler) -> None:
        """Deliver events to `handler`."""
        self._handlers.append(handler)

    async def close(self) -> None:
        """Nothing to let go of; guests 'keep running' in their files."""
        for writers in self._consoles.values():
            for writer in writers:
                writer.close()
        self._consoles.clear()


def _fake_command(argv: list[str], stdin: str, hostname: str) -> ExecResult:
    program, args = argv[0], argv[1:]
    if program == "uname":
        return ExecResult(exit_code=0, stdout=f"Linux {hostname} 6.1.0-fake x86_64\n", stderr="")
    if program == "echo":
        return ExecResult(exit_code=0, stdout=" ".join(args) + "\n", stderr="")
    if program == "cat" and not args:
        return ExecResult(exit_code=0, stdout=stdin, stderr="")
    if program == "hostname":
        return ExecResult(exit_code=0, stdout=hostname + "\n", stderr="")
    if program == "true":
        return ExecResult(exit_code=0, stdout="", stderr="")
    if program == "sh" and len(args) == 2 and args[0] == "-c":
        words = shlex.split(args[1])
        if len(words) == 2 and words[0] == "exit" and words[1].isdigit():
            return ExecResult(exit_code=int(words[1]), stdout="", stderr="")
        return _fake_command(words, stdin, hostname)
    return ExecResult(exit_code=127, stdout="", stderr=f"sh: {program}: not found\n")


def _string_list(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


async def _fake_shell(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
) -> None:
    try:
        while line := await reader.readline():
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            # Shell arithmetic is the one expansion the contract suite relies on.
            expanded = _expand_arithmetic(text)
            result = _fake_command(shlex.split(expanded), "", host)
            writer.write((result.stdout + result.stderr).encode())
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def _expand_arithmetic(text: str) -> str:
    start = text.find("$((")
    while start != -1:
        end = text.find("))", start)
        if end == -1:
            break
        expr = text[start + 3 : end]
        try:
            left, right = expr.split("*")
            value = str(int(left) * int(right))
        except ValueError:
            value = "0"
        text = text[:start] + value + text[end + 2 :]
        start = text.find("$((")
    return text


async def _socket_pair() -> tuple[
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
    tuple[asyncio.StreamReader, asyncio.StreamWriter],
]:
    import socket

    left, right = socket.socketpair()
    return await asyncio.open_connection(sock=left), await asyncio.open_connection(sock=right)
