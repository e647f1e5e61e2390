"""Instance records: uniqueness, optimistic locking, status vs spec columns, fast listing."""

from __future__ import annotations

import json

import pytest

from corral.errors import Conflict, NotFound, PreconditionFailed
from corral.model.instance import InstanceSpec, InstanceState, InstanceStatus, PowerState
from corral.store import Database
from corral.store import instances as store


def _spec(**changes: object) -> InstanceSpec:
    return InstanceSpec(image="tiny").model_copy(update=changes)


def test_create_starts_at_generation_one_with_a_pending_status(db: Database) -> None:
    with db.transaction() as s:
        created = store.create_instance(s, "vm1", _spec())
    assert created.generation == 1
    assert created.status.state == InstanceState.PENDING
    assert created.created_at.tzinfo is not None
    with db.transaction() as s:
        assert store.get_instance(s, "vm1").instance == created


def test_a_duplicate_name_is_already_exists(db: Database) -> None:
    with db.transaction() as s:
        store.create_instance(s, "vm1", _spec())
    with pytest.raises(Conflict) as caught, db.transaction() as s:
        store.create_instance(s, "vm1", _spec())
    assert caught.value.code == "already_exists"
    assert caught.value.field == "name"


def test_a_missing_instance_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound), db.transaction() as s:
        store.get_instance(s, "ghost")
    with db.transaction() as s:
        assert store.find_instance(s, "ghost") is None


def test_update_spec_bumps_generation_and_refuses_a_stale_one(db: Database) -> None:
    with db.transaction() as s:
        store.create_instance(s, "vm1", _spec())
    with db.transaction() as s:
        changed = store.update_spec(s, "vm1", _spec(cpus=2), expected_generation=1)
    assert changed.generation == 2
    assert changed.spec.cpus == 2
    with pytest.raises(PreconditionFailed) as caught, db.transaction() as s:
        store.update_spec(s, "vm1", _spec(cpus=3), expected_generation=1)
    assert caught.value.code == "etag_mismatch"
    with db.transaction() as s:
        assert store.get_instance(s, "vm1").instance.spec.cpus == 2


def test_a_restart_is_pending_until_its_generation_is_observed(db: Database) -> None:
    with db.transaction() as s:
        store.create_instance(s, "vm1", _spec())
        store.update_spec(s, "vm1", _spec(), restart=True)
        record = store.get_instance(s, "vm1")
    assert record.restart_requested
    status = record.instance.status.model_copy(update={"observed_generation": 2})
    with db.transaction() as s:
        store.update_status(s, "vm1", status)
        assert not store.get_instance(s, "vm1").restart_requested


def test_status_writes_leave_the_spec_alone(db: Database) -> None:
    with db.transaction() as s:
        store.create_instance(s, "vm1", _spec())
        store.update_spec(s, "vm1", _spec(memory_mib=512))
    with db.transaction() as s:
        store.update_status(s, "vm1", InstanceStatus(state=InstanceState.RUNNING, pid=42))
        got = store.get_instance(s, "vm1").instance
    assert got.spec.memory_mib == 512
    assert got.generation == 2
    assert got.status.pid == 42


def test_running_allocation_counts_only_instances_meant_to_run(db: Database) -> None:
    with db.transaction() as s:
        store.create_instance(s, "a", _spec(cpus=2, memory_mib=512))
        store.create_instance(s, "b", _spec(cpus=1, memory_mib=256))
        store.create_instance(s, "c", _spec(cpus=4, memory_mib=1024, power=PowerState.STOPPED))
        assert store.running_allocation(s) == store.Allocation(cpus=3, memory_mib=768)
        assert store.running_allocation(s, excluding="a") == store.Allocation(1, 256)
        assert store.instances_using_image(s, "tiny") == ["a", "b", "c"]


def test_listing_documents_match_the_models_json(db: Database) -> None:
    with db.transaction() as s:
        store.create_instance(s, "vm1", _spec())
        store.update_status(s, "vm1", InstanceStatus(state=InstanceState.STOPPED))
        store.create_instance(s, "vm2", _spec(cpus=2))
        rows = store.list_instance_json(s)
        models = store.list_instances(s)
        one = store.list_instance_json(s, name="vm2")
    assert [json.loads(row.text) for row in rows] == [
        m.model_dump(mode="json") | {"etag": m.etag} for m in models
    ]
    assert [(r.name, r.generation) for r in rows] == [("vm1", 1), ("vm2", 1)]
    assert one == [rows[1]]


def test_deleting_is_a_flag_then_a_removal(db: Database) -> None:
    with db.transaction() as s:
        store.create_instance(s, "vm1", _spec())
        assert store.mark_deleting(s, "vm1").deleting
        with pytest.raises(Conflict):
            store.update_spec(s, "vm1", _spec(cpus=2))
        store.delete_instance(s, "vm1")
        store.delete_instance(s, "vm1")  # idempotent
        assert store.list_instance_names(s) == []
