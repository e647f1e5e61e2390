"""QEMU processes as seen from /proc: identity (pid + start time), exit watching, signalling.

A daemonized QEMU is not our child, so we can neither wait() for it nor trust a bare pid: a pid
is only "our guest" while its start time (/proc/PID/stat field 22) matches the saved one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_POLL_INTERVAL_S = 0.5


def pid_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22); None if gone.

    A zombie counts as gone: a daemonized QEMU is re-parented, and its new parent may be slow
    to reap it (or never do).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_is(pid: int, start_ticks: int) -> bool:
    """True when `pid` is alive and is the very process that started at `start_ticks`."""
    return pid_start_ticks(pid) == start_ticks


def read_pid(pidfile: Path) -> int | None:
    """The pid in a pid file, or None when it is missing or not a number."""
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def processes_mentioning(marker: str) -> list[int]:
    """Pids whose command line contains `marker` (a path unique to one guest)."""
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def kill_and_wait(pid: int, timeout_s: float) -> bool:
    """SIGKILL `pid` if it is alive and wait until it is gone; False if it outlived timeout_s."""
    ticks = pid_start_ticks(pid)
    if ticks is None:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while process_is(pid, ticks):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def start_daemonized(argv: list[str], stderr_log: Path, timeout_s: float) -> int:
    """Run a command that daemonizes itself (QEMU -daemonize), its stderr into `stderr_log`,
    until its parent exits; return that exit status (0: the daemon runs). On timeout or
    cancellation the command's whole session is killed."""
    with stderr_log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        async with asyncio.timeout(timeout_s):
            return await proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise


async def kill_processes_of(pidfile: Path, timeout_s: float) -> list[int]:
    """SIGKILL the process in `pidfile` and every process naming that (unique) path; return
    the pids still alive after `timeout_s`."""
    pids = set(processes_mentioning(str(pidfile)))
    pid = read_pid(pidfile)
    if pid is not None:
        pids.add(pid)
    return [pid for pid in sorted(pids) if not await kill_and_wait(pid, timeout_s)]


class ExitWatcher:
    """Calls `on_exit` once, from the event loop, when the process (pid, start ticks) is gone.

    Uses a pidfd (readable when the process exits; works for processes that are not our
    children) and falls back to polling /proc where pidfds are unavailable. The pidfd also lets
    `send_signal` reach exactly this process, never a successor with a recycled pid.
    """

    def __init__(self, pid: int, start_ticks: int, on_exit: Callable[[], None]) -> None:
        self.pid = pid
        self.start_ticks = start_ticks
        self._on_exit = on_exit
        self._pidfd: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._fired = False

    def __repr__(self) -> str:
        how = "pidfd" if self._pidfd is not None else ("polling" if self._poller else "idle")
        return f"ExitWatcher(pid={self.pid}, {how}, fired={self._fired})"

    def start(self) -> None:
        """Begin watching; if the process is already gone, `on_exit` is called soon."""
        loop = asyncio.get_running_loop()
        try:
            pidfd: int | None = os.pidfd_open(self.pid)
        except OSError:
            pidfd = None
        if pidfd is not None and not process_is(self.pid, self.start_ticks):
            os.close(pidfd)  # gone, or the pid was recycled before the open
            loop.call_soon(self._fire)
            return
        if pidfd is None:
            self._poller = loop.create_task(self._poll(), name=f"exit-poll-{self.pid}")
            return
        self._pidfd = pidfd
        loop.add_reader(pidfd, self._fire)

    def send_signal(self, signum: int) -> None:
        """Signal the watched process (nothing happens when it is already gone)."""
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signum)
            elif process_is(self.pid, self.start_ticks):
                os.kill(self.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Stop watching without calling `on_exit`."""
        if self._pidfd is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._poller is not None and self._poller is not asyncio.current_task():
            self._poller.cancel()
        self._poller = None

    def check_now(self) -> bool:
        """True (and `on_exit` called) when the process is gone but we were not told yet."""
        if not self._fired and not process_is(self.pid, self.start_ticks):
            self._fire()
        return self._fired

    def _fire(self) -> None:
        if self._fired:
            return
        self._fired = True
        self.stop()
        self._on_exit()

    async def _poll(self) -> None:
        while process_is(self.pid, self.start_ticks):
            await asyncio.sleep(_POLL_INTERVAL_S)
        self._fire()
