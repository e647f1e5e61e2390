"""A complete in-memory compute backend for fast tests of everything above the driver.

It keeps the same promises as the QEMU backend (the contract suite runs against both): guests
have pids and runtime files, survive a new backend object on the same runtime dir (re-attach),
answer exec for a few busybox-like commands, echo on the console, and report events.
`simulate_crash(name)` stands for a guest killed from outside Corral.

Snapshots and backups are modelled in fake_snapshots.py (tags and bitmaps per disk file; a
kill leaves bitmaps inconsistent, as kill -9 of QEMU does).

Disks follow the same rules as QEMU's (corral.agent.compute.disks): the guest "sees" them in
/sys/block (`ls`, `cat .../size|serial|ro` through exec) named vda, vdb, ... in boot order, a
hot-plugged one taking the lowest free name; the size comes from the image file's header (qcow2)
or length (raw). The cloud-init seed is not simulated.
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

from corral.agent.compute.base import (
    AccelInfo,
    AgentEventHandler,
    ComputeCapabilities,
    ProgressFn,
)
from corral.agent.compute.disks import (
    boot_order,
    check_disk,
    check_disk_id,
    check_grow,
    check_launch_disks,
    machine_has_hotplug,
)
from corral.agent.compute.fake_snapshots import FakeDiskModel, snapshot_result_fields
from corral.agent.compute.snapshot_rules import check_backup_request, check_tag, snapshot_disks
from corral.errors import (
    Conflict,
    GuestAgentError,
    HostError,
    InvalidInput,
    LaunchError,
    NotFound,
)
from corral.model.rpc import (
    AgentEvent,
    AgentEventKind,
    DiskAttachment,
    ExecRequest,
    ExecResult,
    GuestObservation,
    GuestRunState,
    LaunchRequest,
)
from corral.model.rpc_snapshots import BackupRequest, BackupResult, SnapshotRequest, SnapshotResult

FAKE_HOST_MEMORY_MIB = 64 * 1024
_READY_MARKER = b"corral-guest: ready\n"
_QCOW2_MAGIC = b"QFI\xfb"
_pids = itertools.count(100_000)


class FakeComputeBackend:
    """Guests that exist only as files under `runtime_dir` and state in this object."""

    name = "fake"
    capabilities = ComputeCapabilities(
        kind="vm",
        live_migrate=False,
        snapshots=True,
        snapshots_with_memory=True,
        incremental_backup=True,
    )

    def __init__(self, runtime_dir: Path, boot_delay_s: float = 0.0) -> None:
        self.runtime_dir = runtime_dir
        self.boot_delay_s = boot_delay_s
        self._handlers: list[AgentEventHandler] = []
        self._consoles: dict[str, list[asyncio.StreamWriter]] = {}
        self.disk_model = FakeDiskModel(runtime_dir)
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
        check_launch_disks(req.disks)
        for disk in req.disks:
            if not Path(disk.path).is_file():
                raise LaunchError(
                    f"guest {req.name!r} did not start: disk {disk.id!r} ({disk.path}) is missing",
                    stderr_tail=f"qemu: Could not open '{disk.path}': No such file or directory",
                )
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
            "memory_mib": req.memory_mib,
            "hostname": req.name,
            "machine": req.machine,
            "disks": [],
        }
        for disk in boot_order(req.disks):
            _plug(data, disk)
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
            disks=[str(disk["id"]) for disk in _disks(data)] if running else [],
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
        """Stop at once (its disks' dirty bitmaps become inconsistent, as with SIGKILL)."""
        paths = self._disk_paths(name)
        if self._mark_absent(name, "killed"):
            self.disk_model.mark_inconsistent(paths)
            self._emit(name, AgentEventKind.EXITED, reason="killed")

    def simulate_crash(self, name: str) -> None:
        """Stand-in for `kill -9` of the guest from outside Corral (no event is delivered,
        as when the agent was not watching): only a resync can notice."""
        paths = self._disk_paths(name)
        if self._mark_absent(name, "killed"):
            self.disk_model.mark_inconsistent(paths)

    def _disk_paths(self, name: str) -> list[str]:
        data = self._load(name)
        return [str(disk["path"]) for disk in _disks(data)] if data is not None else []

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
        hostname = str(data.get("hostname", req.name))
        return _fake_command(req.command, req.input or "", hostname, _sysfs(data))

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

    async def attach_disk(self, name: str, disk: DiskAttachment) -> None:
        """Plug `disk` in; an attached id (same file) is a no-op; a missing file fails."""
        data = self._running(name, f"attach disk {disk.id!r}")
        check_disk(disk)
        if not machine_has_hotplug(str(data.get("machine"))):
            raise Conflict(
                f"guest {name!r} is a microvm machine, which cannot hot-plug disks",
                code="hotplug_unsupported",
            )
        present = next((d for d in _disks(data) if d["id"] == disk.id), None)
        if present is not None:
            if present["path"] == disk.path and present["read_only"] == disk.read_only:
                return
            raise Conflict(
                f"guest {name!r} already has a disk {disk.id!r} (from {present['path']})",
                code="disk_id_in_use",
            )
        if not Path(disk.path).is_file():
            raise HostError(
                f"cannot attach disk {disk.id!r} ({disk.path}) to guest {name!r}: Could not "
                f"open '{disk.path}': No such file or directory",
                code="disk_attach_failed",
            )
        _plug(data, disk)
        self._save(name, data)

    async def detach_disk(self, name: str, disk_id: str) -> None:
        """Unplug at once (the fake guest always lets go); absent disk or guest: no-op."""
        check_disk_id(disk_id)
        data = self._load(name)
        if data is None or data["state"] == GuestRunState.ABSENT:
            return
        kept = [d for d in _disks(data) if d["id"] != disk_id]
        if len(kept) != len(_disks(data)) and not machine_has_hotplug(str(data.get("machine"))):
            raise Conflict(
                f"guest {name!r} is a microvm machine, which cannot hot-unplug disks",
                code="hotplug_unsupported",
            )
        data["disks"] = kept
        self._save(name, data)

    async def resize_disk(self, name: str, disk_id: str, size_bytes: int) -> None:
        """Grow the size the guest sees (the image file is left alone)."""
        data = self._running(name, f"resize disk {disk_id!r}")
        check_disk_id(disk_id)
        disk = next((d for d in _disks(data) if d["id"] == disk_id), None)
        if disk is None:
            raise NotFound(f"guest {name!r} has no disk {disk_id!r} attached")
        if disk["read_only"]:
            raise Conflict(
                f"disk {disk_id!r} of guest {name!r} is attached read-only; it cannot be resized",
                code="invalid_state",
            )
        if check_grow(disk_id, int(str(disk["size"])), size_bytes):
            disk["size"] = size_bytes
            self._save(name, data)

    # -- snapshots and backups (modelled: fake_snapshots.py) ------------------------------------

    def _with_disks(self, name: str, disks: list[DiskAttachment], action: str) -> dict[str, object]:
        data = self._running(name, action)
        attached = {str(d["id"]) for d in _disks(data)}
        missing = [disk.id for disk in disks if disk.id not in attached]
        if missing:
            raise Conflict(
                f"cannot {action} on guest {name!r}: disk(s) "
                f"{', '.join(repr(m) for m in missing)} are not attached to it",
                code="disk_not_attached",
            )
        return data

    async def snapshot_create(self, req: SnapshotRequest) -> SnapshotResult:
        """Record the snapshot on every writable disk (memory on the first)."""
        check_tag(req.tag)
        chosen = snapshot_disks(req.disks, memory=req.memory)
        data = self._with_disks(req.instance, chosen, f"take snapshot {req.tag!r}")
        self.disk_model.take(chosen, req.tag, memory=req.memory)
        memory_mib = int(str(data.get("memory_mib", 256)))
        return SnapshotResult.model_validate(snapshot_result_fields(req, memory_mib))

    async def snapshot_revert(self, req: SnapshotRequest) -> None:
        """A memory snapshot 'reloads' (the guest keeps running); disk-only is refused."""
        check_tag(req.tag)
        chosen = snapshot_disks(req.disks, memory=False)
        self._with_disks(req.instance, chosen, f"revert to snapshot {req.tag!r}")
        self.disk_model.revert(chosen, req.tag, running=True)

    async def snapshot_delete(self, req: SnapshotRequest) -> None:
        """Forget the tag on the guest's disks."""
        check_tag(req.tag)
        self._with_disks(req.instance, req.disks, f"delete snapshot {req.tag!r}")
        self.disk_model.delete(req.disks, req.tag)

    async def snapshot_tags(self, req: SnapshotRequest) -> dict[str, list[str]]:
        """Tags per disk."""
        self._with_disks(req.instance, req.disks, "list snapshots")
        return self.disk_model.tags(req.disks)

    async def backup(self, req: BackupRequest, progress: ProgressFn) -> BackupResult:
        """A modelled point: full, or incremental through a consistent bitmap."""
        check_backup_request(req)
        name = req.instance or ""
        self._with_disks(name, [req.disk], f"back up disk {req.disk.id!r}")
        progress(0.0, f"backing up disk {req.disk.id!r}")
        result = self.disk_model.backup(req, running=True)
        progress(1.0, f"backing up disk {req.disk.id!r}: done")
        return result

    async def abort_backup(self, req: BackupRequest) -> None:
        """Remove the point's files (a fake backup never runs in the background)."""
        check_backup_request(req)
        self.disk_model.abort(req)

    def _running(self, name: str, action: str) -> dict[str, object]:
        data = self._load(name)
        if data is None or data["state"] != GuestRunState.RUNNING:
            raise Conflict(
                f"guest {name!r} is not running; cannot {action} (that needs a running guest)",
                code="invalid_state",
            )
        return data

    def subscribe(self, handler: AgentEventHandler) -> None:
        """Deliver events to `handler`."""
        self._handlers.append(handler)

    async def close(self) -> None:
        """Nothing to let go of; guests 'keep running' in their files."""
        for writers in self._consoles.values():
            for writer in writers:
                writer.close()
        self._consoles.clear()


def _disks(data: dict[str, object]) -> list[dict[str, object]]:
    disks = data.get("disks")
    return [d for d in disks if isinstance(d, dict)] if isinstance(disks, list) else []


def _plug(data: dict[str, object], disk: DiskAttachment) -> None:
    """Record `disk` as the guest's, under the lowest free vdX name (as Linux names it)."""
    disks = _disks(data)
    taken = {d["dev"] for d in disks}
    dev = next(f"vd{chr(ord('a') + i)}" for i in range(26) if f"vd{chr(ord('a') + i)}" not in taken)
    record: dict[str, object] = disk.model_dump()
    record.update(dev=dev, size=_image_size(Path(disk.path)))
    data["disks"] = [*disks, record]


def _image_size(path: Path) -> int:
    """The virtual size of a qcow2 image (its header) or the length of a raw one."""
    with path.open("rb") as image:
        header = image.read(32)
    if header[:4] == _QCOW2_MAGIC and len(header) == 32:
        return int.from_bytes(header[24:32], "big")
    return path.stat().st_size


def _sysfs(data: dict[str, object]) -> dict[str, str]:
    """What the fake guest shows in /sys/block: a listing and size/serial/ro per disk."""
    disks = sorted(_disks(data), key=lambda d: str(d["dev"]))
    files = {"/sys/block": "".join(f"{d['dev']}\n" for d in disks)}
    for disk in disks:
        base = f"/sys/block/{disk['dev']}"
        files[f"{base}/size"] = f"{int(str(disk['size'])) // 512}\n"
        files[f"{base}/serial"] = str(disk["serial"])  # the kernel adds no newline here
        files[f"{base}/ro"] = "1\n" if disk["read_only"] else "0\n"
    return files


def _fake_command(
    argv: list[str], stdin: str, hostname: str, sysfs: dict[str, str] | None = None
) -> ExecResult:
    files = sysfs or {}
    program, args = argv[0], argv[1:]
    if program == "ls" and len(args) == 1 and args[0].rstrip("/") in files:
        return ExecResult(exit_code=0, stdout=files[args[0].rstrip("/")], stderr="")
    if program == "cat" and args:
        missing = [a for a in args if a not in files or a.rstrip("/") == "/sys/block"]
        if missing:
            error = f"cat: can't open '{missing[0]}': No such file or directory\n"
            return ExecResult(exit_code=1, stdout="", stderr=error)
        return ExecResult(exit_code=0, stdout="".join(files[a] for a in args), stderr="")
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
        return _fake_command(words, stdin, hostname, sysfs)
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
