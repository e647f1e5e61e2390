"""One contract for every compute backend: the fake and real QEMU keep the same promises.

Outcomes are checked inside the guest (exec, console), on the host (processes, files) and in
the events, not only in return values. Real-QEMU cases boot the tiny image under TCG and are
marked slow.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from corral.agent.compute.base import ComputeBackend
from corral.errors import Conflict, GuestAgentError, LaunchError, NotFound
from corral.model.rpc import AgentEventKind, ExecRequest, GuestRunState
from tests.agent.conftest import Harness

READY_TIMEOUT_S = 90.0  # TCG on a busy 2-core machine; a guest is usually ready in ~3 s
SHUTDOWN_TIMEOUT_S = 30.0
READY_MARKER = b"corral-guest: ready"


async def running_guest(harness: Harness, backend: ComputeBackend, name: str) -> int:
    """Launch `name`, wait until its guest agent answers; return its pid."""
    observation = await backend.launch(harness.request(name))
    assert observation.pid is not None
    await backend.wait_ready(name, READY_TIMEOUT_S)
    return observation.pid


async def wait_for_console(backend: ComputeBackend, name: str, needle: bytes) -> bytes:
    deadline = time.monotonic() + 10
    while True:
        log = await backend.console_log(name, 64 * 1024)
        if needle in log or time.monotonic() > deadline:
            return log
        await asyncio.sleep(0.1)


async def assert_console_answers(backend: ComputeBackend, name: str) -> None:
    """Type a command on the serial console and read the shell's answer back."""
    reader, writer = await backend.open_console(name)
    try:
        writer.write(b"\necho hi-$((6*7))\n")
        await writer.drain()
        seen = b""
        async with asyncio.timeout(15):
            while b"hi-42" not in seen:  # the typed line echoes as "hi-$((6*7))"
                chunk = await reader.read(4096)
                assert chunk, f"console closed; saw {seen!r}"
                seen += chunk
    finally:
        writer.close()


async def test_launch_gives_a_running_guest_with_a_live_pid(
    harness: Harness, backend: ComputeBackend
) -> None:
    observation = await backend.launch(harness.request("web1"))
    assert observation.state == GuestRunState.RUNNING
    assert observation.pid is not None
    assert observation.started_at is not None
    assert observation.accel == backend.accel_info().accel
    again = await backend.observe("web1")
    assert (again.state, again.pid) == (GuestRunState.RUNNING, observation.pid)
    if harness.real:
        assert harness.host_processes() == [observation.pid]
        assert observation.qmp_status == "running"
    assert [o.name for o in await backend.observe_all()] == ["web1"]
    await backend.kill("web1")


async def test_ready_guest_runs_commands_with_their_exit_codes_and_input(
    harness: Harness, backend: ComputeBackend
) -> None:
    await running_guest(harness, backend, "web1")
    uname = await backend.exec(ExecRequest(name="web1", command=["uname", "-a"]))
    assert uname.exit_code == 0
    assert "Linux" in uname.stdout
    failing = await backend.exec(ExecRequest(name="web1", command=["sh", "-c", "exit 3"]))
    assert failing.exit_code == 3
    echoed = await backend.exec(ExecRequest(name="web1", command=["cat"], input="piped in\n"))
    assert (echoed.exit_code, echoed.stdout) == (0, "piped in\n")
    hostname = await backend.exec(ExecRequest(name="web1", command=["hostname"]))
    assert hostname.stdout.strip() == "web1"
    await backend.kill("web1")


async def test_console_log_and_interactive_console(
    harness: Harness, backend: ComputeBackend
) -> None:
    await running_guest(harness, backend, "web1")
    assert READY_MARKER in await wait_for_console(backend, "web1", READY_MARKER)
    await assert_console_answers(backend, "web1")
    await backend.kill("web1")


async def test_shutdown_powers_the_guest_off_by_itself(
    harness: Harness, backend: ComputeBackend
) -> None:
    pid = await running_guest(harness, backend, "web1")
    started = time.monotonic()
    await backend.shutdown("web1", SHUTDOWN_TIMEOUT_S)
    assert time.monotonic() - started < SHUTDOWN_TIMEOUT_S
    observation = await backend.observe("web1")
    assert observation.state == GuestRunState.ABSENT
    # The guest went down by itself (ACPI), not by quit or kill.
    assert observation.exit_reason == "shutdown"
    assert b"Power down" in await backend.console_log("web1", 4096)
    if harness.real:
        assert not Path(f"/proc/{pid}").exists() or harness.host_processes() == []
    await backend.shutdown("web1", SHUTDOWN_TIMEOUT_S)  # idempotent


async def test_shutdown_sends_shutdown_then_exited_events(
    harness: Harness, backend: ComputeBackend
) -> None:
    await running_guest(harness, backend, "web1")
    await backend.shutdown("web1", SHUTDOWN_TIMEOUT_S)
    kinds = harness.kinds("web1")
    assert kinds[0] == AgentEventKind.STARTED
    assert AgentEventKind.SHUTDOWN in kinds
    assert AgentEventKind.EXITED in kinds
    assert kinds.index(AgentEventKind.SHUTDOWN) < kinds.index(AgentEventKind.EXITED)
    exited = next(e for e in harness.events if e.kind == AgentEventKind.EXITED)
    assert exited.detail["reason"] == "shutdown"


async def test_kill_ends_the_guest_at_once_and_is_idempotent(
    harness: Harness, backend: ComputeBackend
) -> None:
    observation = await backend.launch(harness.request("web1"))
    await backend.kill("web1")
    after = await backend.observe("web1")
    assert (after.state, after.exit_reason) == (GuestRunState.ABSENT, "killed")
    assert harness.host_processes() == []
    assert AgentEventKind.EXITED in harness.kinds("web1")
    await backend.kill("web1")
    assert observation.pid is not None


async def test_forget_removes_the_files_and_refuses_a_running_guest(
    harness: Harness, backend: ComputeBackend
) -> None:
    await backend.launch(harness.request("web1"))
    with pytest.raises(Conflict):
        await backend.forget("web1")
    await backend.kill("web1")
    assert (harness.runtime_dir / "web1").exists()
    await backend.forget("web1")
    assert not (harness.runtime_dir / "web1").exists()
    assert (await backend.observe("web1")).state == GuestRunState.ABSENT
    assert await backend.observe_all() == []
    with pytest.raises(NotFound):
        await backend.console_log("web1", 100)
    await backend.forget("web1")  # idempotent


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"kernel": "/nonexistent/vmlinux"}, "/nonexistent/vmlinux"),
        ({"memory_mib": 1 << 30}, "memory"),
    ],
    ids=["missing-kernel", "absurd-memory"],
)
async def test_a_launch_qemu_refuses_leaves_nothing_behind(
    harness: Harness, backend: ComputeBackend, overrides: dict[str, object], says: str
) -> None:
    with pytest.raises(LaunchError) as caught:
        await backend.launch(harness.request("web1", **overrides))
    assert says in caught.value.stderr_tail
    assert "web1" in caught.value.message
    assert harness.host_processes() == []
    assert not (harness.runtime_dir / "web1").exists()
    assert (await backend.observe("web1")).state == GuestRunState.ABSENT
    assert harness.kinds("web1") == []


async def test_a_second_launch_of_a_running_guest_conflicts(
    harness: Harness, backend: ComputeBackend
) -> None:
    first = await backend.launch(harness.request("web1"))
    with pytest.raises(Conflict):
        await backend.launch(harness.request("web1"))
    assert (await backend.observe("web1")).pid == first.pid
    await backend.kill("web1")


async def test_a_new_backend_re_attaches_to_running_guests(
    harness: Harness, backend: ComputeBackend
) -> None:
    pid = await running_guest(harness, backend, "web1")
    await backend.close()  # the agent goes away; the guest must not
    successor = harness.new_backend()
    observations = await successor.observe_all()
    assert [(o.name, o.state, o.pid) for o in observations] == [
        ("web1", GuestRunState.RUNNING, pid)
    ]
    result = await successor.exec(ExecRequest(name="web1", command=["uname", "-a"]))
    assert (result.exit_code, "Linux" in result.stdout) == (0, True)
    await assert_console_answers(successor, "web1")
    await successor.wait_ready("web1", READY_TIMEOUT_S)
    harness.events.clear()
    await successor.shutdown("web1", SHUTDOWN_TIMEOUT_S)
    assert AgentEventKind.EXITED in harness.kinds("web1")
    assert (await successor.observe("web1")).exit_reason == "shutdown"


async def test_a_guest_killed_from_outside_is_seen_absent(
    harness: Harness, backend: ComputeBackend
) -> None:
    observation = await backend.launch(harness.request("web1"))
    assert observation.pid is not None
    harness.crash(backend, "web1", observation.pid)
    deadline = time.monotonic() + 5
    while (await backend.observe("web1")).state != GuestRunState.ABSENT:
        assert time.monotonic() < deadline, "the killed guest still looks alive"
        await asyncio.sleep(0.05)
    with pytest.raises(GuestAgentError):
        await backend.exec(ExecRequest(name="web1", command=["true"], timeout_s=5))


async def test_an_unknown_guest_is_absent_and_has_no_console(backend: ComputeBackend) -> None:
    assert (await backend.observe("ghost")).state == GuestRunState.ABSENT
    with pytest.raises(NotFound):
        await backend.open_console("ghost")
    with pytest.raises(GuestAgentError):
        await backend.wait_ready("ghost", 1)
    await backend.shutdown("ghost", 1)
    await backend.kill("ghost")
    await backend.forget("ghost")


async def test_a_stopped_guest_can_be_launched_again(
    harness: Harness, backend: ComputeBackend
) -> None:
    first = await backend.launch(harness.request("web1"))
    await backend.kill("web1")
    second = await backend.launch(harness.request("web1"))
    assert second.state == GuestRunState.RUNNING
    assert second.pid != first.pid
    assert (await backend.observe("web1")).exit_reason is None
    kinds = harness.kinds("web1")
    assert kinds == [
        AgentEventKind.STARTED,
        AgentEventKind.EXITED,
        AgentEventKind.STARTED,
    ]
    await backend.kill("web1")
