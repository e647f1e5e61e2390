"""The disk rules every compute backend applies (corral.agent.compute.disks)."""

from __future__ import annotations

import pytest

from corral.agent.compute.disks import (
    RESERVED_DISK_IDS,
    SEED_DISK_ID,
    boot_order,
    check_disk,
    check_disk_id,
    check_grow,
    machine_has_hotplug,
)
from corral.agent.compute.qemu.cmdline import GUEST_AGENT_DEVICE_ID
from corral.errors import InvalidInput
from corral.model.names import name_problem
from corral.model.rpc import DiskAttachment


def disk(**overrides: object) -> DiskAttachment:
    fields: dict[str, object] = {"id": "data", "path": "/pool/data.qcow2", "serial": "crl-data"}
    fields.update(overrides)
    return DiskAttachment.model_validate(fields)


def test_a_well_formed_disk_passes() -> None:
    check_disk(disk())
    check_disk(disk(id="v" * 63, serial="s" * 20, format="raw", read_only=True))


@pytest.mark.parametrize(
    ("overrides", "field", "says"),
    [
        ({"id": ""}, "disk.id", "empty"),
        ({"id": "9lives"}, "disk.id", "start with a letter"),
        ({"id": "a/b"}, "disk.id", "'/'"),
        ({"id": "v" * 64}, "disk.id", "64 characters"),
        ({"id": "vser0"}, "disk.id", "reserved"),
        ({"serial": "s" * 21}, "disk.serial", "at most 20"),
        ({"serial": "a,b"}, "disk.serial", "only letters"),
        ({"serial": ""}, "disk.serial", "only letters"),
        ({"format": "vmdk"}, "disk.format", "qcow2, raw"),
        ({"path": "pool/d.qcow2"}, "disk.path", "absolute"),
        ({"path": "/pool/d\n.qcow2"}, "disk.path", "control"),
    ],
)
def test_a_disk_the_guest_cannot_be_given_names_the_field(
    overrides: dict[str, object], field: str, says: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_disk(disk(**overrides))
    assert caught.value.field == field
    assert says in caught.value.message


def test_corral_device_ids_are_reserved_and_the_seed_id_is_not_a_name() -> None:
    assert GUEST_AGENT_DEVICE_ID in RESERVED_DISK_IDS and "vser0" in RESERVED_DISK_IDS
    assert name_problem(SEED_DISK_ID) is not None  # so no disk can take the seed's id
    with pytest.raises(InvalidInput):
        check_disk_id(SEED_DISK_ID)


def test_boot_disks_come_first_in_the_order_given() -> None:
    disks = [disk(id="a"), disk(id="b", boot=True), disk(id="c"), disk(id="d", boot=True)]
    assert [d.id for d in boot_order(disks)] == ["b", "d", "a", "c"]


@pytest.mark.parametrize(
    ("current", "requested", "grows", "code"),
    [
        (1024, 2048, True, None),
        (1024, 1024, False, None),
        (2048, 1024, None, "shrink_refused"),
        (1024, 1500, None, "invalid_input"),
    ],
)
def test_disks_only_grow_by_whole_sectors(
    current: int, requested: int, grows: bool | None, code: str | None
) -> None:
    if code is None:
        assert check_grow("data", current, requested) is grows
        return
    with pytest.raises(InvalidInput) as caught:
        check_grow("data", current, requested)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("machine", "hotplug"), [("pc", True), ("q35", True), ("pc-q35-7.2", True), ("microvm", False)]
)
def test_only_pci_machines_hot_plug(machine: str, hotplug: bool) -> None:
    assert machine_has_hotplug(machine) is hotplug
