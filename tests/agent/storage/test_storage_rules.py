"""The pure parts of the storage drivers: request rules, clone choice, and the parsers of what
host tools print."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.agent.storage import make_storage_backend
from corral.agent.storage.base import (
    CloneMethod,
    check_volume_request,
    choose_clone_method,
    grown_size,
)
from corral.agent.storage.btrfs import parse_btrfs_du
from corral.agent.storage.host import (
    classify_failure,
    loop_devices_for,
    mount_containing,
    parse_mountinfo,
)
from corral.agent.storage.qemu_img import parse_info
from corral.errors import InvalidInput
from corral.model.rpc import PoolConfig, VolumeRequest

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"name": "a", "format": "vmdk", "size_bytes": MiB}, "unknown_format", "spec.format"),
        (
            {"name": "a", "source_path": "/i.qcow2", "source_volume": "b"},
            "two_sources",
            "spec.source",
        ),
        ({"name": "a", "source_volume": "a"}, "self_source", "spec.source.volume"),
        ({"name": "a", "full_copy": True}, "copy_needs_source", "spec.source"),
        ({"name": "a"}, "size_required", "spec.size_bytes"),
        ({"name": "a", "size_bytes": MiB + 1}, "size_unaligned", "spec.size_bytes"),
        ({"name": "a", "size_bytes": 4096}, "invalid_size", "spec.size_bytes"),
        ({"name": "a", "source_path": "i.qcow2"}, "invalid_path", "spec.source.image"),
        ({"name": "a/b", "size_bytes": MiB}, "invalid_name", "name"),
        ({"name": "a", "source_volume": "../b"}, "invalid_name", "spec.source.volume"),
        ({"name": "a", "pool": "P", "size_bytes": MiB}, "invalid_name", "spec.pool"),
    ],
)
def test_requests_no_driver_could_honour_are_refused(
    fields: dict[str, object], code: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_volume_request(VolumeRequest.model_validate({"pool": "p1"} | fields))
    assert (refused.value.code, refused.value.field) == (code, field)


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "a", "size_bytes": MiB},
        {"name": "a", "size_bytes": MiB, "format": "raw"},
        {"name": "a", "source_volume": "b"},
        {"name": "a", "source_path": "/var/lib/corral/images/x/disk.qcow2", "full_copy": True},
    ],
)
def test_good_requests_pass(fields: dict[str, object]) -> None:
    check_volume_request(VolumeRequest.model_validate({"pool": "p1"} | fields))


@pytest.mark.parametrize(
    ("requested", "current", "expected"),
    [(None, 64 * MiB, 64 * MiB), (64 * MiB, 64 * MiB, 64 * MiB), (128 * MiB, 64 * MiB, 128 * MiB)],
)
def test_grown_size_keeps_or_grows(requested: int | None, current: int, expected: int) -> None:
    assert grown_size(requested, current, "volume 'a'") == expected


def test_grown_size_refuses_to_shrink_and_says_the_minimum() -> None:
    with pytest.raises(InvalidInput) as refused:
        grown_size(32 * MiB, 64 * MiB, "volume 'a'")
    assert (refused.value.code, refused.value.field) == ("shrink_refused", "spec.size_bytes")
    assert str(64 * MiB) in refused.value.message


@pytest.mark.parametrize(
    ("requested", "source", "can_reflink", "method"),
    [
        ("qcow2", "qcow2", True, CloneMethod.REFLINK),
        ("raw", "raw", True, CloneMethod.REFLINK),
        ("qcow2", "raw", True, CloneMethod.BACKING),
        ("qcow2", "qcow2", False, CloneMethod.BACKING),
        ("qcow2", "raw", False, CloneMethod.BACKING),
        ("raw", "qcow2", True, None),
        ("raw", "raw", False, None),
    ],
)
def test_clone_method(
    requested: str, source: str, can_reflink: bool, method: CloneMethod | None
) -> None:
    if method is None:
        with pytest.raises(InvalidInput) as refused:
            choose_clone_method(requested, source, can_reflink)
        assert refused.value.code == "thin_clone_needs_qcow2"
    else:
        assert choose_clone_method(requested, source, can_reflink) is method


@pytest.mark.parametrize(
    ("stderr", "code"),
    [
        ("qemu-img: error while writing at byte 6291456: No space left on device", "pool_full"),
        ("cp: failed to clone 'x': Disk quota exceeded", "pool_full"),
        (
            "qemu-img: Could not open 'a.qcow2': Failed to get \"write\" lock\n"
            "Is another process using the image [a.qcow2]?",
            "volume_attached",
        ),
        (
            "qemu-img: Could not open 'a.qcow2': Failed to get shared \"write\" lock",
            "volume_attached",
        ),
        ("qemu-img: Could not open 'x': No such file or directory", None),
    ],
)
def test_tool_complaints_are_classified(stderr: str, code: str | None) -> None:
    assert classify_failure(stderr) == code


MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /tmp/pools rw shared:9 - tmpfs tmpfs rw,size=1024k
41 30 7:0 / /tmp/pools/fast rw,noatime shared:12 - btrfs /dev/loop0 rw,space_cache=v2
42 22 0:40 / /tmp/with\\040space rw - tmpfs none rw
"""


def test_mountinfo_is_parsed_with_escapes() -> None:
    mounts = parse_mountinfo(MOUNTINFO + "garbage line\n")
    assert [(m.mount_point, m.fstype, m.source) for m in mounts] == [
        ("/", "ext4", "/dev/vda"),
        ("/tmp/pools", "tmpfs", "tmpfs"),
        ("/tmp/pools/fast", "btrfs", "/dev/loop0"),
        ("/tmp/with space", "tmpfs", "none"),
    ]


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/tmp/pools/fast/a.qcow2", "btrfs"),
        ("/tmp/pools/fast", "btrfs"),
        ("/tmp/pools/faster", "tmpfs"),
        ("/tmp/pools", "tmpfs"),
        ("/tmp/poolsx", "ext4"),
        ("/", "ext4"),
    ],
)
def test_the_mount_holding_a_path_is_the_longest_prefix(path: str, fstype: str) -> None:
    mount = mount_containing(path, parse_mountinfo(MOUNTINFO))
    assert mount is not None and mount.fstype == fstype


def test_loop_devices_are_found_by_backing_file_in_sysfs(tmp_path: Path) -> None:
    sys_block = tmp_path / "sys"
    for device, backing in [("loop0", "/p/a.btrfs"), ("loop1", "/p/b.btrfs (deleted)")]:
        (sys_block / device / "loop").mkdir(parents=True)
        (sys_block / device / "loop" / "backing_file").write_text(backing + "\n")
    (sys_block / "loop2").mkdir()  # not attached
    assert loop_devices_for(Path("/p/a.btrfs"), sys_block) == ["/dev/loop0"]
    assert loop_devices_for(Path("/p/b.btrfs"), sys_block) == ["/dev/loop1"]
    assert loop_devices_for(Path("/p/c.btrfs"), sys_block) == []


@pytest.mark.parametrize(
    ("text", "allocated"),
    [
        (
            "     Total   Exclusive  Set shared  Filename\n"
            "  84418560           0    42209280  /p/fast\n",
            42209280,
        ),
        ("     Total   Exclusive  Set shared  Filename\n  4096  4096  -  /p/fast\n", 4096),
    ],
)
def test_btrfs_du_counts_shared_extents_once(text: str, allocated: int) -> None:
    assert parse_btrfs_du(text) == allocated


def test_qemu_img_info_names_the_full_backing_path() -> None:
    info = parse_info(
        '{"virtual-size": 2147483648, "filename": "c.qcow2", "format": "qcow2", '
        '"actual-size": 200704, "full-backing-filename": "/img/base.qcow2", '
        '"backing-filename": "base.qcow2"}'
    )
    assert (info.format, info.virtual_size, info.actual_size, info.backing) == (
        "qcow2",
        2147483648,
        200704,
        "/img/base.qcow2",
    )
    assert parse_info('{"virtual-size": 1, "format": "raw"}').backing is None


def test_unknown_drivers_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as refused:
        make_storage_backend(PoolConfig(name="p1", driver="zfs"), tmp_path)
    assert (refused.value.code, refused.value.field) == ("unknown_driver", "spec.driver")
    assert "btrfs, dir, fake" in refused.value.message
