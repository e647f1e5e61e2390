"""QEMU-only promises beyond the shared contract: reboot and power-off from inside the guest,
microvm, forced shutdown, pid-reuse safety, socket path limits."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.agent.compute.qemu.driver import QemuBackend
from corral.agent.compute.qemu.process import pid_start_ticks
from corral.agent.compute.qemu.qmp import exit_reason
from corral.agent.compute.qemu.runtime import RuntimePaths, SavedRuntime, save_runtime
from corral.errors import InvalidInput
from corral.images.builder import BuiltImage
from corral.model.rpc import AgentEvent, AgentEventKind, ExecRequest, GuestRunState, LaunchRequest

READY_TIMEOUT_S = 90.0


def launch_request(image: BuiltImage, name: str = "web1", machine: str = "pc") -> LaunchRequest:
    return LaunchRequest(
        name=name,
        uid=str(uuid.uuid4()),
        cpus=1,
        memory_mib=256,
        machine=machine,
        kernel=str(image.kernel),
        initrd=str(image.initrd),
        cmdline=image.cmdline,
    )


@pytest.fixture
async def qemu(short_dir: Path) -> AsyncIterator[tuple[QemuBackend, list[AgentEvent]]]:
    backend = QemuBackend(short_dir / "run")
    events: list[AgentEvent] = []
    backend.subscribe(events.append)
    yield backend, events
    await backend.close()


async def wait_for_event(events: list[AgentEvent], kind: AgentEventKind, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not any(event.kind == kind for event in events):
            await asyncio.sleep(0.05)


async def in_background(backend: QemuBackend, name: str, script: str) -> None:
    """Run `script` in the guest detached, so the exec returns before it takes effect."""
    command = ["sh", "-c", f"(sleep 0.3; {script}) </dev/null >/dev/null 2>&1 &"]
    result = await backend.exec(ExecRequest(name=name, command=command))
    assert result.exit_code == 0


@pytest.mark.parametrize(
    ("intent", "shutdown_reason", "reason"),
    [
        ("shutdown", "guest-shutdown", "shutdown"),
        ("shutdown", None, "shutdown"),
        ("shutdown", "host-qmp-quit", "shutdown (host-qmp-quit)"),
        ("shutdown-forced", "host-qmp-quit", "shutdown-forced"),
        ("killed", None, "killed"),
        (None, "guest-shutdown", "guest-poweroff"),
        (None, "guest-panic", "guest-panic"),
        (None, "host-signal", "host-signal"),
        (None, None, "unexpected-exit"),
    ],
)
def test_exit_reason(intent: str | None, shutdown_reason: str | None, reason: str) -> None:
    assert exit_reason(intent, shutdown_reason) == reason


def test_version_is_qemus_version(short_dir: Path) -> None:
    version = QemuBackend(short_dir).version()
    assert version[0].isdigit() and "." in version


def test_a_socket_path_too_long_is_refused_before_anything_is_made(short_dir: Path) -> None:
    deep = short_dir / ("d" * 60)
    backend = QemuBackend(deep)
    request = LaunchRequest(
        name="g" * 50, uid=str(uuid.uuid4()), cpus=1, memory_mib=64, kernel="/nonexistent"
    )
    with pytest.raises(InvalidInput) as caught:
        asyncio.run(backend.launch(request))
    assert caught.value.code == "path_too_long"
    assert list(deep.iterdir()) == []


async def test_a_recycled_pid_is_not_mistaken_for_the_guest(short_dir: Path) -> None:
    backend = QemuBackend(short_dir / "run")
    paths = RuntimePaths.for_guest(short_dir / "run", "web1")
    paths.dir.mkdir(parents=True)
    ticks = pid_start_ticks(os.getpid())
    assert ticks is not None
    # Our own (live) pid, but started at another time than the saved QEMU did.
    save_runtime(
        paths,
        SavedRuntime(
            name="web1",
            uid=str(uuid.uuid4()),
            pid=os.getpid(),
            pid_start_ticks=ticks - 1,
            argv=["qemu-system-x86_64"],
            accel="tcg",
            machine="pc",
            started_at=datetime.now(UTC),
        ),
    )
    assert (await backend.observe("web1")).state == GuestRunState.ABSENT
    await backend.kill("web1")  # must not signal the pid's new owner (us)
    await backend.forget("web1")
    assert not paths.dir.exists()
    await backend.close()


@pytest.mark.slow
async def test_a_reboot_inside_the_guest_keeps_the_vm_running(
    qemu: tuple[QemuBackend, list[AgentEvent]], tiny_image: BuiltImage
) -> None:
    backend, events = qemu
    first = await backend.launch(launch_request(tiny_image))
    await backend.wait_ready("web1", READY_TIMEOUT_S)
    await in_background(backend, "web1", "reboot -f")
    await wait_for_event(events, AgentEventKind.RESET, 30)
    await backend.wait_ready("web1", READY_TIMEOUT_S)
    after = await backend.observe("web1")
    assert (after.state, after.pid) == (GuestRunState.RUNNING, first.pid)
    uptime = await backend.exec(ExecRequest(name="web1", command=["cat", "/proc/uptime"]))
    assert float(uptime.stdout.split()[0]) < 30  # a fresh boot
    assert AgentEventKind.EXITED not in [event.kind for event in events]
    await backend.kill("web1")


@pytest.mark.slow
async def test_a_power_off_inside_the_guest_ends_qemu(
    qemu: tuple[QemuBackend, list[AgentEvent]], tiny_image: BuiltImage
) -> None:
    backend, events = qemu
    await backend.launch(launch_request(tiny_image))
    await backend.wait_ready("web1", READY_TIMEOUT_S)
    await in_background(backend, "web1", "poweroff -f")
    await wait_for_event(events, AgentEventKind.EXITED, 30)
    observation = await backend.observe("web1")
    assert (observation.state, observation.exit_reason) == (GuestRunState.ABSENT, "guest-poweroff")
    shutdown = next(event for event in events if event.kind == AgentEventKind.SHUTDOWN)
    assert shutdown.detail["reason"] == "guest-shutdown"


@pytest.mark.slow
async def test_a_guest_that_ignores_acpi_is_quit_after_the_timeout(
    qemu: tuple[QemuBackend, list[AgentEvent]], tiny_image: BuiltImage
) -> None:
    backend, _ = qemu
    await backend.launch(launch_request(tiny_image))
    await backend.wait_ready("web1", READY_TIMEOUT_S)
    stop_acpid = ["sh", "-c", "kill $(cat /run/acpid.pid)"]
    assert (await backend.exec(ExecRequest(name="web1", command=stop_acpid))).exit_code == 0
    await backend.shutdown("web1", timeout_s=1.0)
    observation = await backend.observe("web1")
    assert (observation.state, observation.exit_reason) == (GuestRunState.ABSENT, "shutdown-forced")


@pytest.mark.slow
async def test_microvm_boots_runs_commands_and_powers_off(
    qemu: tuple[QemuBackend, list[AgentEvent]], tiny_image: BuiltImage
) -> None:
    backend, _ = qemu
    observation = await backend.launch(launch_request(tiny_image, machine="microvm"))
    assert any(word.startswith("microvm,") for word in observation.argv)
    await backend.wait_ready("web1", READY_TIMEOUT_S)
    result = await backend.exec(ExecRequest(name="web1", command=["uname", "-r"]))
    assert result.exit_code == 0
    await backend.shutdown("web1", 30)
    assert (await backend.observe("web1")).exit_reason == "shutdown"
    assert b"Power down" in await backend.console_log("web1", 4096)
