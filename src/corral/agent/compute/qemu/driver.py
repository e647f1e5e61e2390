"""QemuBackend: guests as detached QEMU processes, re-attachable after the agent restarts.

Per guest, `<runtime_dir>/<name>/` holds QEMU's sockets (QMP, guest agent, console), the console
log, pid file, early stderr and runtime.json (see runtime.py). QEMU is started with -daemonize:
it belongs to nobody here, so the agent can exit or crash and the guest lives on.

Exit detection: an ExitWatcher (pidfd) per attached guest wakes the event loop when QEMU exits;
the exit reason comes from what we asked for (shutdown/kill) or from QMP's SHUTDOWN event, and
is saved in runtime.json so later observations still know it.

Re-attach: a new QemuBackend on the same runtime dir attaches to a guest on first use (observe,
observe_all, exec, ...): the saved pid must still be the process that started at the saved time;
then QMP reconnects and an ExitWatcher starts. Call observe_all() once at agent start so events
flow for every running guest.

Disks: given at launch (blockdev.py) or hot-plugged (hotplug.py); which ones a guest has is
asked from QEMU on every observe, so a re-attached backend reports them too. A cloud-init seed
is written into the guest's runtime dir at launch and removed with it.

Snapshots and backups of a running guest's disks: snapshots.py and backups.py (QMP
transactions and jobs); this class only finds the guest and holds its disk lock for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.agent.compute.base import (
    AccelInfo,
    AgentEventHandler,
    ComputeCapabilities,
    ProgressFn,
)
from corral.agent.compute.disks import check_disk_id
from corral.agent.compute.qemu import backups, snapshots
from corral.agent.compute.qemu.accel import probe_accel
from corral.agent.compute.qemu.cmdline import build_argv, host_tsc_khz
from corral.agent.compute.qemu.guest_agent import GuestAgent
from corral.agent.compute.qemu.hotplug import (
    DETACH_TIMEOUT_S,
    attach_disk,
    detach_disk,
    query_disks,
    resize_disk,
)
from corral.agent.compute.qemu.process import (
    ExitWatcher,
    kill_processes_of,
    pid_start_ticks,
    process_is,
    read_pid,
    start_daemonized,
)
from corral.agent.compute.qemu.qmp import (
    GuestMonitor,
    agent_event_from_qmp,
    exit_reason,
    run_state_from_qmp_status,
)
from corral.agent.compute.qemu.runtime import (
    RuntimePaths,
    SavedRuntime,
    load_all_runtimes,
    load_runtime,
    save_runtime,
    tail_lines,
)
from corral.agent.compute.qemu.seed import SeedWriter, write_seed
from corral.errors import (
    Conflict,
    CorralError,
    GuestAgentError,
    HostError,
    LaunchError,
    NotFound,
    TemporaryError,
)
from corral.images.seed import write_nocloud_seed
from corral.model.names import validate_name
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

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
# QEMU's parent process exits once initialisation is done; this only bounds a hang.
_LAUNCH_TIMEOUT_S = 60.0
_QUIT_TIMEOUT_S = 5.0
_KILL_TIMEOUT_S = 10.0
# How long QEMU's last QMP events may take to arrive after its process is gone.
_DRAIN_TIMEOUT_S = 0.5


@dataclass
class _Guest:
    """What this backend holds for one attached (live) guest."""

    paths: RuntimePaths
    runtime: SavedRuntime
    monitor: GuestMonitor
    agent: GuestAgent
    watcher: ExitWatcher | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    # What we asked for last ("shutdown", "shutdown-forced", "killed"): it names the exit.
    intent: str | None = None
    shutdown_reason: str | None = None  # from the QMP SHUTDOWN event


class QemuBackend:
    """Guests as QEMU processes under `runtime_dir` (see the module docstring)."""

    name = "qemu"
    capabilities = ComputeCapabilities(
        kind="vm",
        live_migrate=False,
        console=True,
        snapshots=True,
        snapshots_with_memory=True,
        incremental_backup=True,
    )

    def __init__(
        self,
        runtime_dir: Path,
        qemu_binary: str = "qemu-system-x86_64",
        *,
        seed_writer: SeedWriter | None = None,
        detach_timeout_s: float = DETACH_TIMEOUT_S,
        backup_speed_bps: int = 0,
    ) -> None:
        self.runtime_dir = runtime_dir.absolute()
        self.qemu_binary = qemu_binary
        self.detach_timeout_s = detach_timeout_s
        self.backup_speed_bps = backup_speed_bps  # 0: as fast as the disks go
        self._write_seed = seed_writer or write_nocloud_seed
        self._accel = probe_accel()
        self._tsc_khz = host_tsc_khz()
        self._version: str | None = None
        self._guests: dict[str, _Guest] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._attach_locks: dict[str, asyncio.Lock] = {}
        self._disk_locks: dict[str, asyncio.Lock] = {}
        self._handlers: list[AgentEventHandler] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def __repr__(self) -> str:
        return (
            f"QemuBackend(runtime_dir={str(self.runtime_dir)!r}, accel={self._accel.accel}, "
            f"attached={sorted(self._guests)})"
        )

    # -- host facts ----------------------------------------------------------------------------

    def accel_info(self) -> AccelInfo:
        """KVM or TCG, and why (probed once per process)."""
        return self._accel

    def version(self) -> str:
        """QEMU's version, e.g. "7.2.22" (asked once)."""
        if self._version is None:
            try:
                out = subprocess.run(
                    [self.qemu_binary, "--version"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=True,
                ).stdout
            except (OSError, subprocess.SubprocessError) as err:
                raise HostError(
                    f"cannot run {self.qemu_binary} --version: {err}; is qemu-system-x86 installed?"
                ) from err
            match = re.search(r"version (\S+)", out)
            self._version = match.group(1) if match else out.strip()
        return self._version

    # -- lifecycle -----------------------------------------------------------------------------

    async def launch(self, req: LaunchRequest) -> GuestObservation:
        """Start QEMU detached; on any failure leave no process and no runtime dir behind."""
        validate_name(req.name)
        async with self._lock(req.name):
            paths = RuntimePaths.for_guest(self.runtime_dir, req.name)
            previous = load_runtime(paths)
            if previous is not None and process_is(previous.pid, previous.pid_start_ticks):
                raise Conflict(f"guest {req.name!r} is already running", code="invalid_state")
            paths.check_socket_lengths()
            argv = build_argv(
                req, paths, self._accel.accel, self.qemu_binary, tsc_khz=self._tsc_khz
            )
            ended = self._guests.get(req.name)
            if ended is not None:  # let its EXITED go out before the new run replaces it
                await _wait_event(ended.exited, _DRAIN_TIMEOUT_S + 0.5)
            await self._drop(req.name)
            if paths.dir.exists():
                shutil.rmtree(paths.dir)  # the files of an earlier run that has ended
            paths.dir.mkdir(parents=True, mode=0o700)
            try:
                if req.cloud_init is not None:
                    await write_seed(self._write_seed, req.name, req.cloud_init, paths.seed_image)
                guest = await self._start(req, paths, argv)
                observation = await self._observe_attached(guest)
                if observation.state is GuestRunState.ABSENT:
                    raise LaunchError(
                        f"guest {req.name!r} did not start: QEMU exited right after starting "
                        f"({observation.exit_reason})",
                        stderr_tail=tail_lines(paths.stderr_log, STDERR_TAIL_LINES),
                    )
            except LaunchError:
                await asyncio.shield(self._undo_launch(req.name, paths))
                raise
            except CorralError as err:
                tail = tail_lines(paths.stderr_log, STDERR_TAIL_LINES)
                await asyncio.shield(self._undo_launch(req.name, paths))
                raise LaunchError(
                    f"guest {req.name!r} did not start: {err.message}", stderr_tail=tail
                ) from err
            except BaseException:
                await asyncio.shield(self._undo_launch(req.name, paths))
                raise
        self._emit(req.name, AgentEventKind.STARTED, pid=guest.runtime.pid)
        return observation

    async def _start(self, req: LaunchRequest, paths: RuntimePaths, argv: list[str]) -> _Guest:
        started_at = datetime.now(UTC)
        status = await start_daemonized(argv, paths.stderr_log, _LAUNCH_TIMEOUT_S)
        if status != 0:
            tail = tail_lines(paths.stderr_log, STDERR_TAIL_LINES)
            last = tail.splitlines()[-1] if tail.strip() else f"QEMU exited with status {status}"
            raise LaunchError(f"guest {req.name!r} did not start: {last}", stderr_tail=tail)
        pid = read_pid(paths.pidfile)
        ticks = pid_start_ticks(pid) if pid is not None else None
        if pid is None or ticks is None:
            raise LaunchError(
                f"guest {req.name!r} did not start: QEMU exited right after initialisation",
                stderr_tail=tail_lines(paths.stderr_log, STDERR_TAIL_LINES),
            )
        runtime = SavedRuntime(
            name=req.name,
            uid=req.uid,
            pid=pid,
            pid_start_ticks=ticks,
            argv=argv,
            accel=self._accel.accel,
            machine=req.machine,
            started_at=started_at,
        )
        save_runtime(paths, runtime)
        return await self._attach(paths, runtime, require_monitor=True)

    async def _undo_launch(self, name: str, paths: RuntimePaths) -> None:
        """Kill whatever this launch started (found by its unique pid file path) and remove
        the runtime dir; the guest was never announced, so no event is sent."""
        await self._drop(name)
        for pid in await kill_processes_of(paths.pidfile, _KILL_TIMEOUT_S):
            log.error("guest %s: QEMU pid %d survived SIGKILL after a failed launch", name, pid)
        shutil.rmtree(paths.dir, ignore_errors=True)

    async def shutdown(self, name: str, timeout_s: float) -> None:
        """ACPI power-off; after `timeout_s` QMP quit, then SIGKILL. Idempotent."""
        async with self._lock(name):
            guest = await self._attached(name)
            if guest is None:
                return
            guest.intent = "shutdown"
            try:
                await guest.monitor.execute("system_powerdown")
            except HostError as err:
                log.warning("guest %s: system_powerdown failed (%s); quitting QEMU", name, err)
            else:
                if await _wait_event(guest.exited, timeout_s):
                    return
                log.warning(
                    "guest %s did not power off within %g s; quitting QEMU", name, timeout_s
                )
            guest.intent = "shutdown-forced"
            await guest.monitor.quit_quietly()
            if not await _wait_event(guest.exited, _QUIT_TIMEOUT_S):
                await self._kill_attached(guest, intent="shutdown-forced")

    async def kill(self, name: str) -> None:
        """SIGKILL the guest's QEMU and wait until it is gone. Idempotent."""
        async with self._lock(name):
            guest = await self._attached(name)
            if guest is not None:
                await self._kill_attached(guest, intent="killed")

    async def _kill_attached(self, guest: _Guest, intent: str) -> None:
        guest.intent = intent
        if guest.watcher is not None:
            guest.watcher.send_signal(signal.SIGKILL)
        if not await _wait_event(guest.exited, _KILL_TIMEOUT_S):
            raise HostError(
                f"QEMU of guest {guest.runtime.name!r} (pid {guest.runtime.pid}) survived "
                f"SIGKILL for {_KILL_TIMEOUT_S:g} s; it may be stuck in the kernel (state D)"
            )

    async def forget(self, name: str) -> None:
        """Remove the runtime dir of a guest that is not running. Idempotent."""
        validate_name(name)
        async with self._lock(name):
            paths = RuntimePaths.for_guest(self.runtime_dir, name)
            runtime = load_runtime(paths)
            if runtime is not None and process_is(runtime.pid, runtime.pid_start_ticks):
                raise Conflict(
                    f"guest {name!r} is running; stop it before forgetting it",
                    code="invalid_state",
                )
            await self._drop(name)
            shutil.rmtree(paths.dir, ignore_errors=True)

    # -- observation ---------------------------------------------------------------------------

    async def observe(self, name: str) -> GuestObservation:
        """Process alive (same start time) -> QMP query-status; otherwise ABSENT."""
        guest = await self._attached(name)
        if guest is not None:
            return await self._observe_attached(guest)
        runtime = load_runtime(RuntimePaths.for_guest(self.runtime_dir, name))
        return GuestObservation(
            name=name,
            state=GuestRunState.ABSENT,
            accel=runtime.accel if runtime else None,
            argv=runtime.argv if runtime else [],
            exit_reason=runtime.exit_reason if runtime else None,
        )

    async def observe_all(self) -> list[GuestObservation]:
        """Every guest with a saved runtime; attaches to the running ones."""
        return [await self.observe(rt.name) for _, rt in load_all_runtimes(self.runtime_dir)]

    async def _observe_attached(self, guest: _Guest) -> GuestObservation:
        runtime = guest.runtime
        try:
            status = await guest.monitor.query_status()
            disks = await query_disks(guest.monitor)
        except HostError as err:
            # Most often QEMU is just exiting: give the exit watcher a moment to say so.
            if await _wait_event(guest.exited, 1.0) or _gone(guest):
                return await self.observe(runtime.name)
            raise TemporaryError(
                f"guest {runtime.name!r} (pid {runtime.pid}) is alive but its monitor does not "
                f"answer: {err.message}",
                delay=2.0,
            ) from err
        return GuestObservation(
            name=runtime.name,
            state=run_state_from_qmp_status(status),
            pid=runtime.pid,
            started_at=runtime.started_at,
            accel=runtime.accel,
            argv=runtime.argv,
            qmp_status=status,
            disks=[disk.id for disk in disks],
        )

    async def wait_ready(self, name: str, timeout_s: float) -> float:
        """Until qemu-ga answers sync + guest-ping; returns the seconds waited.

        qemu-ga's reply is read as soon as it is written (the connection is opened at once and
        the sync waits in the socket until the guest opens its port), so this adds no polling
        delay to the boot. Fails early if QEMU exits meanwhile.
        """
        started = time.monotonic()
        guest = await self._attached(name)
        if guest is None:
            raise GuestAgentError(f"guest {name!r} is not running; it cannot become ready")
        ready = asyncio.ensure_future(guest.agent.wait_until_answers(timeout_s))
        exited = asyncio.ensure_future(guest.exited.wait())
        try:
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            if not ready.done():
                ready.cancel()
                with contextlib.suppress(asyncio.CancelledError, GuestAgentError):
                    await ready
        if not ready.cancelled():
            try:
                ready.result()
            except GuestAgentError as err:
                raise GuestAgentError(
                    f"guest {name!r} was not ready within {timeout_s:g} s: {err.message}. "
                    f"Last console lines:\n{self._console_tail_text(name)}",
                    code=err.code,
                ) from err
            return time.monotonic() - started
        raise GuestAgentError(
            f"guest {name!r} exited ({guest.runtime.exit_reason}) while waiting for its guest "
            f"agent. Last console lines:\n{self._console_tail_text(name)}",
            code="guest_exited",
        )

    # -- disks -------------------------------------------------------------------------------

    async def attach_disk(self, name: str, disk: DiskAttachment) -> None:
        """Hot-plug `disk` (blockdev-add + device_add); an attached id is a no-op. On failure
        no block node is left behind. microvm refuses (Conflict)."""
        guest = await self._running(name, f"attach disk {disk.id!r}")
        async with self._disk_lock(name):
            await attach_disk(guest.monitor, name, guest.runtime.machine, disk)

    async def detach_disk(self, name: str, disk_id: str) -> None:
        """device_del, wait for the guest to release it (DEVICE_DELETED, `detach_timeout_s`),
        blockdev-del. A disk or guest that is absent is a no-op."""
        check_disk_id(disk_id)
        guest = await self._attached(name)
        if guest is None:
            return
        async with self._disk_lock(name):
            await detach_disk(
                guest.monitor,
                name,
                guest.runtime.machine,
                disk_id,
                exited=guest.exited,
                timeout_s=self.detach_timeout_s,
            )

    async def resize_disk(self, name: str, disk_id: str, size_bytes: int) -> None:
        """Grow an attached disk (block_resize); the guest sees the new size at once."""
        guest = await self._running(name, f"resize disk {disk_id!r}")
        async with self._disk_lock(name):
            await resize_disk(guest.monitor, name, disk_id, size_bytes)

    async def _running(self, name: str, action: str) -> _Guest:
        guest = await self._attached(name)
        if guest is None:
            raise Conflict(
                f"guest {name!r} is not running; cannot {action} (that needs a running guest)",
                code="invalid_state",
            )
        return guest

    # -- snapshots and backups (snapshots.py, backups.py) -------------------------------------

    async def snapshot_create(self, req: SnapshotRequest) -> SnapshotResult:
        """Internal snapshot of the guest's qcow2 disks in one transaction (+ RAM)."""
        guest = await self._running(req.instance, f"take snapshot {req.tag!r}")
        async with self._disk_lock(req.instance):
            return await snapshots.take_snapshot(guest.monitor, guest.agent, req.instance, req)

    async def snapshot_revert(self, req: SnapshotRequest) -> None:
        """Load memory snapshot `req.tag`: the guest goes on from it without a reboot."""
        guest = await self._running(req.instance, f"revert to snapshot {req.tag!r}")
        async with self._disk_lock(req.instance):
            await snapshots.revert_snapshot(guest.monitor, guest.agent, req.instance, req)

    async def snapshot_delete(self, req: SnapshotRequest) -> None:
        """Drop `req.tag` from the guest's disks (absent: no-op)."""
        guest = await self._running(req.instance, f"delete snapshot {req.tag!r}")
        async with self._disk_lock(req.instance):
            await snapshots.delete_snapshot(guest.monitor, guest.agent, req.instance, req)

    async def snapshot_tags(self, req: SnapshotRequest) -> dict[str, list[str]]:
        """Snapshot tags per disk, as QEMU holds them."""
        guest = await self._running(req.instance, "list snapshots")
        async with self._disk_lock(req.instance):
            return await snapshots.snapshot_tags(guest.monitor, guest.agent, req.instance, req)

    async def backup(self, req: BackupRequest, progress: ProgressFn) -> BackupResult:
        """Full or incremental backup of an attached disk (a job; the guest keeps running)."""
        name = req.instance or ""
        guest = await self._running(name, f"back up disk {req.disk.id!r}")
        return await backups.run_backup(
            guest.monitor, name, req, progress, speed_bps=self.backup_speed_bps
        )

    async def abort_backup(self, req: BackupRequest) -> None:
        """Cancel the guest's backup job for `req.target_path`, drop its node and files."""
        guest = await self._attached(req.instance or "")
        if guest is not None:
            await backups.abort_backup(guest.monitor, guest.runtime.name, req)

    def _disk_lock(self, name: str) -> asyncio.Lock:
        """Serialises the disk changes of one guest (not with kill: that must never wait)."""
        return self._disk_locks.setdefault(name, asyncio.Lock())

    # -- guest access --------------------------------------------------------------------------

    async def exec(self, req: ExecRequest) -> ExecResult:
        """Run a command in the guest through qemu-ga."""
        guest = await self._attached(req.name)
        if guest is None:
            raise GuestAgentError(f"guest {req.name!r} is not running", code="invalid_state")
        return await guest.agent.exec(req.command, req.input, req.timeout_s)

    async def open_console(self, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The serial console. QEMU serves one client at a time: a second one waits its turn."""
        guest = await self._attached(name)
        if guest is None:
            raise NotFound(f"guest {name!r} is not running; it has no console")
        try:
            return await asyncio.open_unix_connection(str(guest.paths.console_socket))
        except OSError as err:
            raise HostError(f"cannot open the console of guest {name!r}: {err}") from err

    async def console_log(self, name: str, max_bytes: int) -> bytes:
        """The last `max_bytes` of the console log (kept after the guest stops, until forget)."""
        validate_name(name)
        path = RuntimePaths.for_guest(self.runtime_dir, name).console_log
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - max_bytes))
                return handle.read(max_bytes)
        except FileNotFoundError as err:
            raise NotFound(f"guest {name!r} has no console log") from err

    def _console_tail_text(self, name: str, lines: int = 15) -> str:
        path = RuntimePaths.for_guest(self.runtime_dir, name).console_log
        return tail_lines(path, lines) or "(nothing on the console)"

    # -- events --------------------------------------------------------------------------------

    def subscribe(self, handler: AgentEventHandler) -> None:
        """Deliver QMP events and process exits of attached guests to `handler`."""
        self._handlers.append(handler)

    def _emit(self, name: str, kind: AgentEventKind, **detail: object) -> None:
        self._deliver(AgentEvent(name=name, kind=kind, detail=detail, time=datetime.now(UTC)))

    def _deliver(self, event: AgentEvent) -> None:
        for handler in list(self._handlers):
            try:
                handler(event)
            except Exception:
                log.exception("event handler failed on %s %s", event.name, event.kind)

    def _on_qmp_event(self, guest: _Guest, raw: dict[str, Any]) -> None:
        if raw.get("event") == "SHUTDOWN":
            data = raw.get("data")
            if isinstance(data, dict) and isinstance(data.get("reason"), str):
                guest.shutdown_reason = data["reason"]
        event = agent_event_from_qmp(guest.runtime.name, raw)
        if event is not None:
            self._deliver(event)

    # -- attach / exit -------------------------------------------------------------------------

    async def _attached(self, name: str) -> _Guest | None:
        """The live guest `name`, attaching to it if this backend has not yet; None if not live."""
        validate_name(name)
        guest = self._guests.get(name)
        if guest is not None:
            return None if _gone(guest) else guest
        async with self._attach_locks.setdefault(name, asyncio.Lock()):
            if name in self._guests:
                return await self._attached(name)
            paths = RuntimePaths.for_guest(self.runtime_dir, name)
            runtime = load_runtime(paths)
            if runtime is None or not process_is(runtime.pid, runtime.pid_start_ticks):
                return None
            log.info("attaching to running guest %s (pid %d)", name, runtime.pid)
            return await self._attach(paths, runtime, require_monitor=False)

    async def _attach(
        self, paths: RuntimePaths, runtime: SavedRuntime, *, require_monitor: bool
    ) -> _Guest:
        """Hold a live guest: exit watcher first (so no exit is missed), then QMP.

        A re-attach tolerates an unreachable monitor (kill must still work, and commands retry
        the connection); a launch does not.
        """
        monitor = GuestMonitor(runtime.name, paths.qmp_socket, lambda ev: None)
        guest = _Guest(paths, runtime, monitor, GuestAgent(runtime.name, paths.qga_socket))
        monitor.on_event = lambda raw: self._on_qmp_event(guest, raw)
        guest.watcher = ExitWatcher(
            runtime.pid, runtime.pid_start_ticks, lambda: self._on_exit(guest)
        )
        self._guests[runtime.name] = guest
        guest.watcher.start()
        try:
            await monitor.connect()
        except HostError as err:
            if require_monitor:
                await self._drop(runtime.name)
                raise
            log.warning("guest %s: %s (retried on the next command)", runtime.name, err.message)
        except BaseException:
            await self._drop(runtime.name)
            raise
        return guest

    def _on_exit(self, guest: _Guest) -> None:
        """The QEMU process is gone (called once by its ExitWatcher)."""
        self._spawn(self._finish_exit(guest))

    async def _finish_exit(self, guest: _Guest) -> None:
        """Record why the guest exited, tell the subscribers once, let go of it.

        The pidfd can wake us before the QMP reader has read QEMU's last events (SHUTDOWN and
        its reason), so those are drained first: they decide the exit reason and come first.
        """
        await guest.monitor.drain(_DRAIN_TIMEOUT_S)
        reason = exit_reason(guest.intent, guest.shutdown_reason)
        guest.runtime = guest.runtime.model_copy(update={"exit_reason": reason})
        try:
            if guest.paths.runtime_file.exists():
                save_runtime(guest.paths, guest.runtime)
        except OSError as err:
            log.warning("guest %s: cannot save its exit reason: %s", guest.runtime.name, err)
        log.info("guest %s exited (%s)", guest.runtime.name, reason)
        guest.exited.set()
        # A guest dropped meanwhile (failed launch, close) is no longer ours to report.
        if self._guests.get(guest.runtime.name) is guest:
            self._emit(guest.runtime.name, AgentEventKind.EXITED, reason=reason)
        await self._release(guest)

    async def _release(self, guest: _Guest) -> None:
        if self._guests.get(guest.runtime.name) is guest:
            del self._guests[guest.runtime.name]
        await guest.monitor.close()
        await guest.agent.close()

    async def _drop(self, name: str) -> None:
        """Let go of the in-memory guest without touching its process."""
        guest = self._guests.pop(name, None)
        if guest is not None:
            if guest.watcher is not None:
                guest.watcher.stop()
            await guest.monitor.close()
            await guest.agent.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lock(self, name: str) -> asyncio.Lock:
        """Serialises launch/shutdown/kill/forget of one guest."""
        return self._locks.setdefault(name, asyncio.Lock())

    async def close(self) -> None:
        """Let go of every guest: monitor and agent connections close, guests keep running."""
        for name in list(self._guests):
            await self._drop(name)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _gone(guest: _Guest) -> bool:
    """True when the guest's process has exited (asks /proc if the watcher has not said yet)."""
    if guest.exited.is_set():
        return True
    return guest.watcher is not None and guest.watcher.check_now()


async def _wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(max(timeout_s, 0.0)):
            await event.wait()
    except TimeoutError:
        return False
    return True
