"""Disk ids, serials and attachment records: pure functions, one row per rule."""

from __future__ import annotations

import pytest

from corral.agent.compute.disks import check_disk_id
from corral.controller.disks import (
    MAX_DISK_ID_LENGTH,
    MAX_SERIAL_LENGTH,
    attachment_changes,
    disk_id,
    disk_serial,
    is_volume_disk,
)
from corral.model.names import MAX_NAME_LENGTH

LONG = "a" * MAX_NAME_LENGTH


# The hashed forms are pinned on purpose: a running guest's disks are found again by these ids
# (after an upgrade too), so changing the function would orphan attached disks.
@pytest.mark.parametrize(
    ("volume", "expected_id", "expected_serial"),
    [
        ("data", "disk-data", "data"),
        ("vm1-root", "disk-vm1-root", "vm1-root"),
        ("abcdefghijklmno", "disk-abcdefghijklmno", "abcdefghijklmno"),  # 20: fits exactly
        ("abcdefghijklmnop", "disk-abcdef-f39dac6c", "abcdefghijklmnop"),
        ("twenty-characters-xy", "disk-twenty-9b7ad4ce", "twenty-characters-xy"),
        ("twenty-one-characters", "disk-twenty-0f5d9dd1", "twenty-one-0f5d9dd1"),
    ],
)
def test_disk_ids_and_serials(volume: str, expected_id: str, expected_serial: str) -> None:
    got_id, got_serial = disk_id(volume), disk_serial(volume)
    assert (got_id, got_serial) == (expected_id, expected_serial)
    assert len(got_id) <= MAX_DISK_ID_LENGTH and len(got_serial) <= MAX_SERIAL_LENGTH


@pytest.mark.parametrize("volume", ["a", "data-1", "x" * 15, "y" * 16, LONG, "a-" * 31 + "b"])
def test_every_volume_name_gives_an_id_the_compute_backends_accept(volume: str) -> None:
    device = disk_id(volume)
    check_disk_id(device)  # the agent's own rule: raises if QEMU could not take it
    assert is_volume_disk(device)
    assert disk_id(volume) == device  # stable


def test_long_names_that_start_alike_get_different_ids_and_serials() -> None:
    first, second = "database-volume-number-1", "database-volume-number-2"
    assert disk_id(first) != disk_id(second)
    assert disk_serial(first) != disk_serial(second)


def test_the_cloud_init_seed_is_not_a_volume_disk() -> None:
    assert not is_volume_disk("corral_seed")


@pytest.mark.parametrize(
    ("claimed", "recorded", "guest", "expected"),
    [
        # a running guest: attached exactly when the guest has the disk
        (["a"], {}, {disk_id("a")}, {"a": "vm"}),
        (["a"], {"a": None}, set(), {}),  # hot-plug failed or pending: not attached
        (["a"], {"a": "vm"}, {disk_id("a")}, {}),  # nothing changed
        ([], {"a": "vm"}, set(), {"a": None}),  # detached
        ([], {"a": "vm"}, {disk_id("a")}, {}),  # still in the guest: still attached
        # a stopped instance: attached when its spec lists the volume
        (["a", "b"], {"a": None}, None, {"a": "vm", "b": "vm"}),
        ([], {"a": "vm"}, None, {"a": None}),
        # attached elsewhere: the other instance's reconcile owns that record
        (["a"], {"a": "other"}, None, {}),
        (["a"], {"a": "other"}, {disk_id("a")}, {}),
    ],
)
def test_attachment_changes(
    claimed: list[str],
    recorded: dict[str, str | None],
    guest: set[str] | None,
    expected: dict[str, str | None],
) -> None:
    assert attachment_changes("vm", claimed, recorded, guest) == expected
