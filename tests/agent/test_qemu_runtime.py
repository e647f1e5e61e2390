"""Runtime files of a guest, the saved runtime, and process identity / exit watching."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.agent.compute.qemu.process import (
    ExitWatcher,
    kill_and_wait,
    pid_start_ticks,
    process_is,
    processes_mentioning,
    read_pid,
)
from corral.agent.compute.qemu.runtime import (
    SUN_PATH_MAX,
    RuntimePaths,
    SavedRuntime,
    load_all_runtimes,
    load_runtime,
    save_runtime,
    tail_lines,
)
from corral.errors import InvalidInput


def saved(name: str = "web1", pid: int = 4242) -> SavedRuntime:
    return SavedRuntime(
        name=name,
        uid="6f1c2a8e-3d4b-4c5a-9e7f-0a1b2c3d4e5f",
        pid=pid,
        pid_start_ticks=1234,
        argv=["qemu-system-x86_64", "-daemonize"],
        accel="tcg",
        machine="pc",
        started_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_paths_live_under_runtime_dir_slash_name(tmp_path: Path) -> None:
    paths = RuntimePaths.for_guest(tmp_path, "web1")
    assert paths.dir == tmp_path / "web1"
    names = {
        paths.qmp_socket.name,
        paths.qga_socket.name,
        paths.console_socket.name,
        paths.console_log.name,
        paths.pidfile.name,
        paths.stderr_log.name,
        paths.runtime_file.name,
    }
    assert names == {
        "qmp.sock",
        "qga.sock",
        "console.sock",
        "console.log",
        "qemu.pid",
        "stderr.log",
        "runtime.json",
    }


def test_relative_runtime_dir_becomes_absolute() -> None:
    # QEMU -daemonize changes its directory to /, so every path it gets must be absolute.
    assert RuntimePaths.for_guest(Path("run"), "web1").dir.is_absolute()


def test_socket_path_over_sun_path_limit_is_refused_with_advice() -> None:
    name = "g" * 63
    room = SUN_PATH_MAX - len(f"/{name}/console.sock")  # the longest socket name
    base = Path("/" + "d" * (room - 1))
    RuntimePaths.for_guest(base, name).check_socket_lengths()  # exactly 107 bytes: fits
    too_long = RuntimePaths.for_guest(Path(str(base) + "x"), name)
    with pytest.raises(InvalidInput) as caught:
        too_long.check_socket_lengths()
    assert "107" in caught.value.message
    assert "shorter" in caught.value.message


def test_saved_runtime_round_trips_and_leaves_no_temp_files(tmp_path: Path) -> None:
    paths = RuntimePaths.for_guest(tmp_path, "web1")
    paths.dir.mkdir()
    save_runtime(paths, saved())
    save_runtime(paths, saved(pid=4343))
    assert load_runtime(paths) == saved(pid=4343)
    assert sorted(p.name for p in paths.dir.iterdir()) == ["runtime.json"]


def test_load_all_skips_dirs_without_a_readable_runtime(tmp_path: Path) -> None:
    for name in ("b-guest", "a-guest"):
        paths = RuntimePaths.for_guest(tmp_path, name)
        paths.dir.mkdir()
        save_runtime(paths, saved(name))
    (tmp_path / "half-launched").mkdir()
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "runtime.json").write_text("{not json")
    (tmp_path / "stray-file").write_text("x")
    found = [runtime.name for _, runtime in load_all_runtimes(tmp_path)]
    assert found == ["a-guest", "b-guest"]
    assert load_all_runtimes(tmp_path / "missing") == []


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert tail_lines(log, 3) == "line 47\nline 48\nline 49"
    assert tail_lines(tmp_path / "missing", 3) == ""


def test_pid_identity_needs_the_same_start_time() -> None:
    ticks = pid_start_ticks(os.getpid())
    assert ticks is not None
    assert process_is(os.getpid(), ticks)
    assert not process_is(os.getpid(), ticks + 1)  # a recycled pid started at another time


def test_exited_and_zombie_processes_count_as_gone() -> None:
    child = subprocess.Popen(["true"])
    # Not reaped yet: a zombie.
    for _ in range(200):
        if pid_start_ticks(child.pid) is None:
            break
        os.sched_yield()
    assert pid_start_ticks(child.pid) is None
    child.wait()
    assert pid_start_ticks(child.pid) is None


def test_read_pid(tmp_path: Path) -> None:
    (tmp_path / "ok.pid").write_text("1234\n")
    (tmp_path / "bad.pid").write_text("x")
    assert read_pid(tmp_path / "ok.pid") == 1234
    assert read_pid(tmp_path / "bad.pid") is None
    assert read_pid(tmp_path / "none.pid") is None


async def test_exit_watcher_fires_once_when_the_process_dies(tmp_path: Path) -> None:
    marker = tmp_path / "sleeper-marker"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)", str(marker)
    )
    ticks = pid_start_ticks(proc.pid)
    assert ticks is not None
    assert processes_mentioning(str(marker)) == [proc.pid]
    fired: list[int] = []
    watcher = ExitWatcher(proc.pid, ticks, lambda: fired.append(proc.pid))
    watcher.start()
    await asyncio.sleep(0.05)
    assert fired == []
    watcher.send_signal(signal.SIGKILL)
    await proc.wait()
    for _ in range(100):
        if fired:
            break
        await asyncio.sleep(0.01)
    assert fired == [proc.pid]
    assert watcher.check_now() is True
    assert fired == [proc.pid]


async def test_exit_watcher_on_an_already_gone_process_fires_soon() -> None:
    fired: list[bool] = []
    ExitWatcher(2**22 + 1, 1, lambda: fired.append(True)).start()
    await asyncio.sleep(0.01)
    assert fired == [True]


async def test_kill_and_wait_ends_a_process() -> None:
    proc = await asyncio.create_subprocess_exec("sleep", "30")
    waiter = asyncio.ensure_future(proc.wait())  # reap it, as init would for a daemon
    assert await kill_and_wait(proc.pid, 5.0)
    assert await waiter == -signal.SIGKILL
    assert await kill_and_wait(proc.pid, 5.0)  # already gone: fine
