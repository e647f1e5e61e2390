"""The reconcile loop against the fake backend: create, stop, start, restart, delete."""

from __future__ import annotations

from corral.model.instance import (
    InstanceCreate,
    InstanceSpec,
    InstanceSpecPatch,
    InstanceState,
    PowerState,
)
from corral.model.operation import OperationState
from corral.model.rpc import GuestRunState
from tests.controller.conftest import Harness, wait_until


async def test_create_boots_to_running_and_ready(harness: Harness) -> None:
    op = await harness.create("vm1")
    assert op.state == OperationState.SUCCEEDED, op
    assert op.progress == 1.0
    vm = harness.instance("vm1")
    status = vm.status
    assert status.state == InstanceState.RUNNING
    assert status.ready
    assert status.pid is not None
    assert status.host == "test-host"
    assert status.observed_generation == vm.generation == 1
    assert status.started_at is not None and status.ready_at is not None
    assert status.create_to_ready_ms is not None and status.create_to_ready_ms > 0
    ready = status.condition("Ready")
    assert ready is not None and ready.status and ready.reason == "GuestAgentAnswered"
    seen = await harness.agent.observe("vm1")
    assert seen.state == GuestRunState.RUNNING and seen.pid == status.pid
    types = harness.event_types("vm1")
    assert types[0] == "instance.created"
    assert "instance.state" in types
    assert "operation.done" in harness.event_types(op.id)


async def test_stop_keeps_the_console_log_and_start_boots_again(harness: Harness) -> None:
    await harness.create("vm1")
    first_pid = harness.instance("vm1").status.pid
    ctl = harness.controller.instances
    stopped = await harness.wait_op(ctl.stop("vm1", force=False, timeout_s=None))
    assert stopped.state == OperationState.SUCCEEDED
    vm = harness.instance("vm1")
    assert vm.spec.power == PowerState.STOPPED
    assert vm.status.state == InstanceState.STOPPED and vm.status.pid is None
    assert (await harness.agent.observe("vm1")).state == GuestRunState.ABSENT
    assert b"Power down" in await harness.agent.console_log("vm1", 4096)

    started = await harness.wait_op(ctl.start("vm1"))
    assert started.state == OperationState.SUCCEEDED
    vm = harness.instance("vm1")
    assert vm.status.state == InstanceState.RUNNING and vm.status.ready
    assert vm.status.pid != first_pid


async def test_start_and_stop_of_what_already_is_finish_at_once(harness: Harness) -> None:
    await harness.create("vm1")
    ctl = harness.controller.instances
    again = ctl.start("vm1")
    assert again.state == OperationState.SUCCEEDED
    assert "already running" in again.message


async def test_restart_boots_a_new_guest_process(harness: Harness) -> None:
    await harness.create("vm1")
    before = harness.instance("vm1").status.pid
    op = await harness.wait_op(harness.controller.instances.restart("vm1", force=False,
                                                                     timeout_s=None))  # fmt: skip
    assert op.state == OperationState.SUCCEEDED, op
    after = harness.instance("vm1").status
    assert after.state == InstanceState.RUNNING and after.ready
    assert after.pid != before


async def test_delete_of_a_running_instance_shuts_it_down_first(harness: Harness) -> None:
    await harness.create("vm1")
    op = await harness.wait_op(harness.controller.instances.delete("vm1"))
    assert op.state == OperationState.SUCCEEDED, op
    assert not harness.exists("vm1")
    assert (await harness.agent.observe("vm1")).state == GuestRunState.ABSENT
    assert not (harness.runtime_dir / "vm1").exists()
    types = harness.event_types("vm1")
    assert types[-1] == "instance.deleted"
    states = [e.data["state"] for e in harness.seen if e.type == "instance.state"]
    assert "deleting" in states and "stopping" in states


async def test_a_second_delete_returns_the_running_delete(harness: Harness) -> None:
    harness.fake.boot_delay_s = 0.3
    harness.controller.instances.create(InstanceCreate(name="vm1", spec=InstanceSpec(image="tiny")))
    first = harness.controller.instances.delete("vm1")
    second = harness.controller.instances.delete("vm1")
    assert first.id == second.id
    await harness.wait_op(first)
    assert not harness.exists("vm1")


async def test_patch_while_stopped_is_observed_without_booting(harness: Harness) -> None:
    await harness.create("vm1", power=PowerState.STOPPED)
    vm = harness.instance("vm1")
    assert vm.status.state == InstanceState.STOPPED
    op, changed = harness.controller.instances.patch("vm1", InstanceSpecPatch(cpus=2), '"1"')
    assert changed.generation == 2
    done = await harness.wait_op(op)
    assert done.state == OperationState.SUCCEEDED
    vm = harness.instance("vm1")
    assert vm.status.observed_generation == 2
    assert vm.status.state == InstanceState.STOPPED
    assert (await harness.agent.observe("vm1")).state == GuestRunState.ABSENT


async def test_deleting_cuts_a_slow_boot_short(harness: Harness) -> None:
    harness.fake.boot_delay_s = 60.0  # the guest agent would answer only after a minute
    create = harness.controller.instances.create(
        InstanceCreate(name="slow", spec=InstanceSpec(image="tiny"))
    )
    await wait_until(lambda: harness.instance("slow").status.pid, 5, "launch")
    delete = await harness.wait_op(harness.controller.instances.delete("slow"), timeout_s=5)
    assert delete.state == OperationState.SUCCEEDED
    finished = harness.operation(create.id)
    assert finished.state == OperationState.FAILED
    assert finished.error is not None and finished.error.code == "invalid_state"
