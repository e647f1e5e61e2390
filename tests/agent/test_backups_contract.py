"""Backups through the agent's API, the same promises on the fake and on the real agent.

Stopped instances and detached volumes are backed up with qemu-img (real files) or the fake's
model; a running fake guest stands for the QEMU job here (the QEMU cases that boot guests are in
test_backups_qemu.py, marked slow). A point restores into a new, independent volume through
create_volume(source_path=point, full_copy=True). Nothing here boots a guest.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from corral.agent.compute.fake import FakeComputeBackend
from corral.errors import NotFound
from corral.model.rpc import DiskAttachment, PoolConfig, VolumeRequest
from corral.model.rpc_snapshots import BackupRequest, BackupResult, SnapshotRequest
from tests.agent.test_snapshots_contract import MIB, Host, reads, write

pytest_plugins = ["tests.agent.test_snapshots_contract"]


def bk(
    disk: DiskAttachment, target: Path, parent: Path | None = None, **fields: object
) -> BackupRequest:
    values: dict[str, object] = {
        "instance": "web",
        "disk": disk,
        "target_path": str(target),
        "parent_path": str(parent) if parent else None,
    }
    values.update(fields)
    return BackupRequest.model_validate(values)


class Progress:
    """Records what a backup reports."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, message: str) -> None:
        self.calls.append((fraction, message))


def bitmaps_of(disk: DiskAttachment) -> dict[str, list[str]]:
    """Bitmap name -> flags, from the disk file."""
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", disk.path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = json.loads(out).get("format-specific", {}).get("data", {}).get("bitmaps", [])
    return {b["name"]: b["flags"] for b in found}


async def test_a_stopped_disk_is_backed_up_in_full_and_gets_its_bitmap(host: Host) -> None:
    data = host.disk("data")
    if host.real:
        write(data, 0x5A, 0, 2 * MIB)
    backups = host.dir / "backups"
    progress = Progress()
    first = await host.agent.backup(bk(data, backups / "p1.qcow2"), progress)
    assert (first.kind, first.reason) == ("full", "")
    assert first.virtual_size_bytes == 32 * MIB
    assert (backups / "p1.qcow2").is_file() and not (backups / "p1.qcow2.partial").exists()
    assert progress.calls[0][0] == 0.0 and progress.calls[-1][0] == 1.0
    if host.real:
        assert first.file_size_bytes >= 2 * MIB
        assert bitmaps_of(data) == {"corral-backup": ["auto"]}

    second = await host.agent.backup(
        bk(data, backups / "p2.qcow2", backups / "p1.qcow2"), Progress()
    )
    assert second.kind == "full" and "not attached to a running guest" in second.reason
    # A retried call whose answer was lost finds the point made.
    again = await host.agent.backup(
        bk(data, backups / "p2.qcow2", backups / "p1.qcow2"), Progress()
    )
    assert again.kind == "full" and again.target_path == second.target_path


async def test_abort_removes_the_point_and_a_completed_one_takes_the_bitmap(host: Host) -> None:
    data = host.disk("data")
    backups = host.dir / "backups"
    await host.agent.backup(bk(data, backups / "p1.qcow2"), Progress())
    # What a crash mid-copy leaves: a partial file, no point.
    (backups / "p2.qcow2.partial").write_bytes(b"half")
    await host.agent.abort_backup(bk(data, backups / "p2.qcow2", backups / "p1.qcow2"))
    assert not (backups / "p2.qcow2.partial").exists()
    if host.real:
        assert "corral-backup" in bitmaps_of(data), "an unfinished point keeps the bitmap"

    await host.agent.abort_backup(bk(data, backups / "p1.qcow2"))
    await host.agent.abort_backup(bk(data, backups / "p1.qcow2"))  # idempotent
    assert list(backups.iterdir()) == []
    if host.real:
        assert bitmaps_of(data) == {}, "a discarded point must take its bitmap with it"


async def test_a_detached_volume_is_backed_up_without_an_instance(host: Host) -> None:
    data = host.disk("data")
    point = host.dir / "backups" / "vol.qcow2"
    done = await host.agent.backup(bk(data, point, instance=None), Progress())
    assert done.kind == "full" and point.is_file()


async def test_a_point_restores_into_an_independent_volume(host: Host) -> None:
    data = host.disk("data")
    if host.real:
        write(data, 0x11, 0, MIB)
    backups = host.dir / "backups"
    point = backups / "p1.qcow2"
    await host.agent.backup(bk(data, point), Progress())
    await host.agent.ensure_pool(PoolConfig(name="restore", driver="dir"))
    restored = await host.agent.create_volume(
        VolumeRequest(pool="restore", name="from-p1", source_path=str(point), full_copy=True)
    )
    assert restored.backing is None and restored.virtual_size_bytes == 32 * MIB
    if not host.real:
        return
    restored_disk = DiskAttachment(id="r", path=restored.path, serial="r")
    assert reads(restored_disk, 0x11, 0, MIB)

    # A chain full <- incremental (as QEMU writes it: the file names its parent) flattens too.
    child = backups / "p2.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(point), "-F", "qcow2", str(child)],
        check=True,
    )
    write(DiskAttachment(id="c", path=str(child), serial="c"), 0x22, 4 * MIB, MIB)
    flat = await host.agent.create_volume(
        VolumeRequest(pool="restore", name="from-p2", source_path=str(child), full_copy=True)
    )
    assert flat.backing is None
    flat_disk = DiskAttachment(id="f", path=flat.path, serial="f")
    assert reads(flat_disk, 0x11, 0, MIB) and reads(flat_disk, 0x22, 4 * MIB, MIB)
    point.unlink()
    assert reads(flat_disk, 0x22, 4 * MIB, MIB), "the restored volume still needs the chain"
    for name in ("from-p1", "from-p2"):
        await host.agent.delete_volume("restore", name)
    await host.agent.delete_pool("restore")


async def test_a_missing_disk_file_is_not_found(host: Host) -> None:
    data = host.disk("data")
    Path(data.path).unlink()
    try:
        await host.agent.backup(bk(data, host.dir / "p1.qcow2"), Progress())
    except NotFound as err:
        assert err.code == "unknown_volume"
    else:
        raise AssertionError("a backup of a missing file succeeded")


# -- a running (fake) guest ---------------------------------------------------------------------


async def test_a_running_guest_backs_up_incrementally_until_its_chain_breaks(
    fake_host: Host,
) -> None:
    agent = fake_host.agent
    data = fake_host.disk("data")
    await fake_host.launch("web", [data])
    b = fake_host.dir / "backups"

    async def backup(name: str, parent: str | None) -> BackupResult:
        return await agent.backup(
            bk(data, b / f"{name}.qcow2", b / f"{parent}.qcow2" if parent else None), Progress()
        )

    assert (await backup("p1", None)).kind == "full"
    incremental = await backup("p2", "p1")
    assert (incremental.kind, incremental.reason) == ("incremental", "")
    assert incremental.file_size_bytes < 1 * MIB
    missing_parent = await backup("p3", "gone")
    assert missing_parent.kind == "full" and "missing" in missing_parent.reason

    # kill -9 of the guest's QEMU: the bitmap was never stored, the next backup is full.
    compute = agent.compute
    assert isinstance(compute, FakeComputeBackend)
    compute.simulate_crash("web")
    await fake_host.launch("web", [data])
    after_crash = await backup("p4", "p3")
    assert after_crash.kind == "full" and "inconsistent" in after_crash.reason
    assert (await backup("p5", "p4")).kind == "incremental"

    # A revert changes the disk behind the bitmap's back: it is dropped, the next one is full.
    snap = SnapshotRequest(instance="web", tag="m1", disks=[data], memory=True)
    await agent.snapshot_create(snap)
    await agent.snapshot_revert(snap)
    after_revert = await backup("p6", "p5")
    assert after_revert.kind == "full" and "not on disk" in after_revert.reason

    # A disk the running guest does not have attached is backed up from its file.
    other = fake_host.disk("other")
    await agent.backup(bk(other, b / "o1.qcow2"), Progress())
    detached = await agent.backup(bk(other, b / "o2.qcow2", b / "o1.qcow2"), Progress())
    assert detached.kind == "full" and "not attached to a running guest" in detached.reason

    # Throwing away a completed point takes the bitmap along: no incremental on a stale base.
    await agent.abort_backup(bk(data, b / "p6.qcow2", b / "p5.qcow2"))
    assert not (b / "p6.qcow2").exists()
    after_abort = await backup("p7", "p5")
    assert after_abort.kind == "full" and "not on disk" in after_abort.reason
    await agent.kill("web")
