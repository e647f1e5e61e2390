"""The pure parts of snapshots and backups: which disks take part, when a backup may be
incremental, and how QEMU's and qemu-img's answers are read (samples from QEMU 7.2)."""

from __future__ import annotations

import json

import pytest

from corral.agent.compute.qemu.backups import backup_names, parse_backup_job
from corral.agent.compute.qemu.block_jobs import parse_jobs, parse_node_states
from corral.agent.compute.snapshot_rules import (
    BitmapState,
    check_backup_request,
    check_tag,
    choose_backup_kind,
    partial_path,
    snapshot_disks,
)
from corral.agent.storage.offline_snapshots import parse_image_state
from corral.errors import InvalidInput
from corral.model.rpc import DiskAttachment
from corral.model.rpc_snapshots import BackupRequest
from corral.model.snapshot import BackupKind


def disk(disk_id: str, fmt: str = "qcow2", read_only: bool = False) -> DiskAttachment:
    return DiskAttachment(
        id=disk_id, path=f"/p/{disk_id}.{fmt}", format=fmt, read_only=read_only, serial=disk_id
    )


@pytest.mark.parametrize(
    ("disks", "memory", "taken", "code"),
    [
        ([disk("a"), disk("b")], False, ["a", "b"], None),
        ([disk("a"), disk("b")], True, ["a", "b"], None),
        ([disk("iso", "raw", read_only=True), disk("a")], True, ["a"], None),
        ([disk("ro", read_only=True), disk("a")], False, ["a"], None),
        ([disk("a"), disk("r", "raw")], False, None, "snapshot_needs_qcow2"),
        ([disk("r", "raw")], True, None, "snapshot_needs_qcow2"),
        ([], True, None, "memory_snapshot_needs_disk"),
        ([disk("ro", read_only=True)], True, None, "memory_snapshot_needs_disk"),
        ([], False, None, "snapshot_needs_disk"),
    ],
)
def test_a_snapshot_takes_every_writable_qcow2_disk_or_is_refused(
    disks: list[DiskAttachment], memory: bool, taken: list[str] | None, code: str | None
) -> None:
    if code is None:
        assert [d.id for d in snapshot_disks(disks, memory=memory)] == taken
        return
    with pytest.raises(InvalidInput) as refused:
        snapshot_disks(disks, memory=memory)
    assert (refused.value.code, refused.value.field) == (code, "disks")
    if code == "memory_snapshot_needs_disk":
        assert "attach a qcow2 volume" in refused.value.message


@pytest.mark.parametrize("tag", ["", "1", "a/b", "..", "A", "a b", "x" * 64, "a\n"])
def test_a_bad_tag_is_refused_with_its_field(tag: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_tag(tag)
    assert (refused.value.code, refused.value.field) == ("invalid_name", "tag")


def backup_req(**fields: object) -> BackupRequest:
    values: dict[str, object] = {
        "instance": "web",
        "disk": disk("data"),
        "target_path": "/b/p2.qcow2",
        "parent_path": "/b/p1.qcow2",
    }
    values.update(fields)
    return BackupRequest.model_validate(values)


@pytest.mark.parametrize(
    ("fields", "parent_exists", "bitmap", "running", "kind", "reason"),
    [
        ({"parent_path": None}, False, BitmapState.MISSING, True, "full", ""),
        ({}, True, BitmapState.OK, True, "incremental", ""),
        ({"disk": disk("data", "raw")}, True, BitmapState.OK, True, "full", "is raw"),
        ({}, False, BitmapState.OK, True, "full", "is missing on this host"),
        ({}, True, BitmapState.MISSING, True, "full", "is not on disk"),
        ({}, True, BitmapState.INCONSISTENT, True, "full", "inconsistent"),
        ({}, True, BitmapState.INCONSISTENT, False, "full", "inconsistent"),
        ({}, True, BitmapState.UNTRUSTED, True, "full", "was interrupted"),
        ({}, True, BitmapState.OK, False, "full", "not attached to a running guest"),
    ],
)
def test_a_backup_is_incremental_only_on_an_intact_chain(
    fields: dict[str, object],
    parent_exists: bool,
    bitmap: BitmapState,
    running: bool,
    kind: str,
    reason: str,
) -> None:
    chosen, why = choose_backup_kind(
        backup_req(**fields), parent_exists=parent_exists, bitmap=bitmap, running=running
    )
    assert chosen is BackupKind(kind)
    assert reason in why
    assert bool(why) == bool(reason)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"target_path": "relative.qcow2"}, "target_path"),
        ({"target_path": "/b/../etc/p.qcow2"}, "target_path"),
        ({"target_path": "/b/p\n.qcow2"}, "target_path"),
        ({"target_path": "/b/p.qcow2.partial"}, "target_path"),
        ({"target_path": "/p/data.qcow2"}, "target_path"),
        ({"parent_path": "/b/p2.qcow2"}, "parent_path"),
        ({"parent_path": "b/p1.qcow2"}, "parent_path"),
        ({"bitmap": "Bad Name"}, "bitmap"),
        ({"instance": "../x"}, "instance"),
    ],
)
def test_a_backup_request_with_a_bad_path_or_name_is_refused(
    fields: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_backup_request(backup_req(**fields))
    assert refused.value.field == field


def test_backup_names_fit_qemu_and_follow_the_target() -> None:
    long_id = "a-very-long-disk-identifier-for-a-volume"
    one = backup_names(long_id, "/b/p1.qcow2")
    assert len(one.target_node) < 32
    assert one.job_id.startswith("corral-backup-") and one.node in one.job_id
    assert backup_names(long_id, "/b/p1.qcow2") == one
    assert backup_names(long_id, "/b/p2.qcow2").job_id != one.job_id
    assert str(partial_path("/b/p1.qcow2")) == "/b/p1.qcow2.partial"
    # Jobs of disk "data" are told apart from those of disk "data-2".
    data, data2 = backup_names("data", "/b/p.qcow2"), backup_names("data-2", "/b/p.qcow2")
    assert parse_backup_job(data.job_id) == ("data", data.target_node)
    assert parse_backup_job(data2.job_id) == ("data-2", data2.target_node)
    assert parse_backup_job("corral-snap-save-m1") is None
    assert parse_backup_job("corral-backup-x") is None


QUERY_NAMED_BLOCK_NODES = [
    {
        "node-name": "data",
        "dirty-bitmaps": [
            {"recording": False, "persistent": False, "busy": False, "granularity": 65536,
             "count": 7340032},
            {"name": "corral-backup", "recording": True, "persistent": True, "busy": True,
             "granularity": 65536, "count": 8388608},
        ],
        "image": {
            "filename": "/p/data.qcow2",
            "format": "qcow2",
            "snapshots": [
                {"vm-clock-nsec": 28042990, "name": "s0", "date-sec": 1795313090,
                 "date-nsec": 99107000, "vm-clock-sec": 6, "id": "1", "vm-state-size": 0},
                {"vm-clock-nsec": 40436933, "name": "m1", "date-sec": 1795313090,
                 "date-nsec": 111477000, "vm-clock-sec": 6, "id": "3",
                 "vm-state-size": 87791841},
            ],
        },
    },
    {"node-name": "data-file", "image": {"filename": "/p/data.qcow2", "format": "file"}},
    {
        "node-name": "logs",
        "dirty-bitmaps": [
            {"name": "corral-backup", "recording": False, "persistent": True, "busy": False,
             "granularity": 65536, "count": 0, "inconsistent": True},
        ],
        "image": {"filename": "/p/logs.qcow2", "format": "qcow2"},
    },
]  # fmt: skip


def test_node_states_read_snapshots_and_named_bitmaps() -> None:
    states = parse_node_states(QUERY_NAMED_BLOCK_NODES)
    data = states["data"]
    assert [s.name for s in data.snapshots] == ["s0", "m1"]
    assert data.snapshot("m1") is not None and data.snapshot("m1").vmstate_bytes == 87791841
    assert data.snapshot("nope") is None
    assert list(data.bitmaps) == ["corral-backup"]  # a job's nameless bitmap is left out
    assert data.bitmaps["corral-backup"].busy and not data.bitmaps["corral-backup"].inconsistent
    assert states["logs"].bitmaps["corral-backup"].inconsistent
    assert states["data-file"].snapshots == [] and states["data-file"].bitmaps == {}
    assert parse_node_states({"unexpected": True}) == {}


def test_jobs_are_read_with_progress_and_error() -> None:
    jobs = parse_jobs(
        [
            {"current-progress": 1048576, "status": "running", "total-progress": 8388608,
             "type": "backup", "id": "corral-backup-data-1"},
            {"current-progress": 1, "status": "concluded", "total-progress": 1,
             "type": "snapshot-load", "id": "corral-snap-load-m1",
             "error": "Could not load snapshot 'm1' on 'data': Device has active dirty bitmaps"},
        ]
    )  # fmt: skip
    backup = jobs["corral-backup-data-1"]
    assert (backup.current, backup.total, backup.concluded, backup.error) == (
        1048576,
        8388608,
        False,
        None,
    )
    load = jobs["corral-snap-load-m1"]
    assert load.concluded and load.error is not None and "dirty bitmaps" in load.error


QEMU_IMG_INFO = {
    "snapshots": [
        {"icount": 0, "vm-clock-nsec": 0, "name": "s1", "date-sec": 1795312849,
         "date-nsec": 566281000, "vm-clock-sec": 0, "id": "1", "vm-state-size": 0},
        {"icount": 0, "vm-clock-nsec": 0, "name": "m1", "date-sec": 1795312849,
         "date-nsec": 566281000, "vm-clock-sec": 0, "id": "2", "vm-state-size": 4096},
    ],
    "virtual-size": 67108864,
    "filename": "a.qcow2",
    "format": "qcow2",
    "format-specific": {
        "type": "qcow2",
        "data": {
            "compat": "1.1",
            "bitmaps": [
                {"flags": ["auto"], "name": "corral-backup", "granularity": 65536},
                {"flags": ["in-use", "auto"], "name": "old", "granularity": 65536},
            ],
        },
    },
}  # fmt: skip


def test_image_state_reads_qemu_img_info() -> None:
    state = parse_image_state(json.dumps(QEMU_IMG_INFO))
    assert state.tags() == ["s1", "m1"]
    assert (state.vmstate_bytes("s1"), state.vmstate_bytes("m1")) == (0, 4096)
    assert state.bitmaps == {
        "corral-backup": BitmapState.OK,
        "old": BitmapState.INCONSISTENT,
    }
    bare = parse_image_state(json.dumps({"format": "qcow2", "virtual-size": 1}))
    assert bare.tags() == [] and bare.bitmaps == {}
