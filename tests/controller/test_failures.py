"""What goes wrong: launch failures, guests dying behind Corral's back, slow guest agents,
a control plane that fails, and a control plane that restarts while guests run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from corral.errors import Conflict, HostError
from corral.model.instance import InstanceCreate, InstanceSpec, InstanceState, OnCrash, PowerState
from corral.model.operation import OperationState
from corral.model.rpc import GuestObservation, GuestRunState
from corral.store import images as image_store
from corral.store import open_database, sqlite_url
from corral.store import operations as operation_store
from tests.controller.conftest import Harness, start_harness, stop_harness, wait_until


async def test_a_launch_failure_fails_the_operation_and_leaves_nothing(harness: Harness) -> None:
    with harness.db.transaction() as session:
        kernel = image_store.get_image(session, "tiny").kernel
    assert kernel is not None
    Path(kernel).unlink()
    op = await harness.create("doomed")
    assert op.state == OperationState.FAILED
    assert op.error is not None and op.error.code == "launch_failed"
    assert "could not load kernel" in op.error.message  # the runtime's stderr tail
    vm = harness.instance("doomed")
    assert vm.status.state == InstanceState.FAILED
    failed = vm.status.condition("Failed")
    assert failed is not None and failed.status and "kernel" in failed.message
    assert not (harness.runtime_dir / "doomed").exists()
    # a failure waits for a new generation: resyncs do not retry it
    await harness.controller.reconciler.reconcile("doomed")
    assert harness.instance("doomed").status.observed_generation == 1
    deleted = await harness.wait_op(harness.controller.instances.delete("doomed"))
    assert deleted.state == OperationState.SUCCEEDED


async def test_a_guest_killed_outside_is_stopped_within_one_resync(harness: Harness) -> None:
    await harness.create("victim")
    before = harness.instance("victim")
    harness.fake.simulate_crash("victim")  # no event: only the resync can notice
    seen = await wait_until(
        lambda: vm if (vm := harness.instance("victim")).status.state == "stopped" else None,
        harness.settings.resync_s * 2 + 1,
        "stopped",
    )
    assert seen.spec.power == PowerState.STOPPED
    assert seen.generation == before.generation + 1
    assert seen.status.observed_generation == seen.generation
    exited = seen.status.condition("GuestExited")
    assert exited is not None and exited.status and exited.reason == "killed"
    assert "instance.exited" in harness.event_types("victim")


async def test_on_crash_restart_boots_the_guest_again(harness: Harness) -> None:
    await harness.create("phoenix", on_crash=OnCrash.RESTART)
    first = harness.instance("phoenix").status.pid
    harness.fake.simulate_crash("phoenix")
    seen = await wait_until(
        lambda: (
            vm
            if (vm := harness.instance("phoenix")).status.ready and vm.status.pid != first
            else None
        ),
        harness.settings.resync_s * 2 + 2,
        "relaunch",
    )
    assert seen.spec.power == PowerState.RUNNING
    assert seen.status.restarts == 1
    assert seen.status.state == InstanceState.RUNNING


async def test_a_slow_guest_agent_fails_the_operation_but_the_guest_runs(tmp_path: Path) -> None:
    harness = await start_harness(tmp_path / "data", ready_timeout_s=0.2)
    try:
        await harness.build_tiny()
        harness.fake.boot_delay_s = 60.0
        op = await harness.create("sleepy")
        assert op.state == OperationState.FAILED
        assert op.error is not None and op.error.code == "guest_agent_error"
        vm = harness.instance("sleepy")
        assert vm.status.state == InstanceState.RUNNING and not vm.status.ready
        assert (await harness.agent.observe("sleepy")).state == GuestRunState.RUNNING
        await harness.controller.reconciler.reconcile("sleepy")  # no second wait, no relaunch
        assert harness.instance("sleepy").status.pid == vm.status.pid
    finally:
        await stop_harness(harness)
        shutil.rmtree(harness.runtime_dir, ignore_errors=True)


async def test_a_controller_restart_adopts_running_guests(tmp_path: Path) -> None:
    first = await start_harness(tmp_path / "data")
    try:
        await first.build_tiny()
        for name in ("keep-1", "keep-2"):
            assert (await first.create(name)).state == OperationState.SUCCEEDED
        before = {n: first.instance(n).status for n in ("keep-1", "keep-2")}
    finally:
        await stop_harness(first)  # the control plane goes; the guests stay
    second = await start_harness(tmp_path / "data")
    try:
        for name, status in before.items():
            seen = await second.agent.observe(name)
            assert seen.state == GuestRunState.RUNNING and seen.pid == status.pid
        await wait_until(lambda: second.controller.queue.idle, 5, "queue drained")
        for name, status in before.items():
            after = second.instance(name).status
            assert after.state == InstanceState.RUNNING and after.ready
            assert after.pid == status.pid
            assert after.started_at == status.started_at
        assert not [e for e in second.seen if e.type == "instance.state"]  # nothing changed
    finally:
        await stop_harness(second)
        shutil.rmtree(second.runtime_dir, ignore_errors=True)


class FailingObserveAgent:
    """The fake agent, except that `observe` fails while `broken` is set (an agent outage)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def observe(self, name: str) -> GuestObservation:
        if self.broken:
            raise HostError("agent unreachable (test)")
        result: GuestObservation = await self._inner.observe(name)
        return result


async def test_a_failing_agent_never_costs_a_guest(harness: Harness) -> None:
    await harness.create("steady")
    pid = harness.instance("steady").status.pid
    flaky = FailingObserveAgent(harness.agent)
    flaky.broken = True
    reconciler = harness.controller.reconciler
    reconciler._agent = flaky
    reconciler._steps._agent = flaky
    with pytest.raises(Exception, match="could not observe"):
        await reconciler.reconcile("steady")
    assert (await harness.agent.observe("steady")).pid == pid
    assert harness.instance("steady").status.state == InstanceState.RUNNING
    flaky.broken = False
    await reconciler.reconcile("steady")
    assert harness.instance("steady").status.pid == pid


async def test_capacity_is_checked_at_create(harness: Harness) -> None:
    facts = harness.controller.hosts.local_facts()
    assert facts is not None
    create = harness.controller.instances.create
    with pytest.raises(Conflict) as too_many_cpus:
        create(InstanceCreate(name="big", spec=InstanceSpec(image="tiny", cpus=facts.cpus + 1)))
    assert too_many_cpus.value.code == "insufficient_capacity"
    assert too_many_cpus.value.field == "spec.cpus"
    half = facts.memory_mib // 2 + 1
    create(InstanceCreate(name="half", spec=InstanceSpec(image="tiny", memory_mib=half)))
    with pytest.raises(Conflict) as no_memory:
        create(InstanceCreate(name="other", spec=InstanceSpec(image="tiny", memory_mib=half)))
    assert no_memory.value.field == "spec.memory_mib"
    # stopped instances take nothing; cpus are over-committed freely across instances
    stopped = InstanceSpec(image="tiny", memory_mib=half, power=PowerState.STOPPED)
    create(InstanceCreate(name="parked", spec=stopped))
    create(InstanceCreate(name="cpu-1", spec=InstanceSpec(image="tiny", cpus=facts.cpus)))
    create(InstanceCreate(name="cpu-2", spec=InstanceSpec(image="tiny", cpus=facts.cpus)))
    with pytest.raises(Conflict):
        harness.controller.instances.start("parked")


async def test_a_build_cut_short_by_a_server_stop_is_failed_at_the_next_start(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    db = open_database(sqlite_url(data / "corral.db"))
    with db.transaction() as session:
        image_store.start_image_build(session, "half", "tiny")
        op = operation_store.create_operation(session, "image-build", "image", "half")
    db.close()
    harness = await start_harness(data)
    try:
        assert harness.controller.images.get("half").state == "failed"
        done = harness.operation(op.id)
        assert done.state == OperationState.FAILED
        assert done.error is not None and done.error.code == "image_build_failed"
        rebuilt = await harness.wait_op(harness.controller.images.start_build("tiny", "half"))
        assert rebuilt.state == OperationState.SUCCEEDED
    finally:
        await stop_harness(harness)
        shutil.rmtree(harness.runtime_dir, ignore_errors=True)
