"""Snapshots and backups of a real guest (QEMU, TCG here), through the CLI.

One tiny guest serves every test, in file order, and boots twice in all (created; booted again
by the disk-only revert): (a) data written in the guest comes back after a disk-only revert;
(b) a memory revert drops a process started after the snapshot and the guest never reboots;
(c) full then incremental backups restore byte-identical to new volumes, an incremental point
being a fraction of the full one; (d) kill -9 of the server during a backup: after a restart
the backup is complete or gone, no partial file stays, the guest runs on and backs up again.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import CorralServer, pid_alive, wait_for

pytestmark = pytest.mark.slow

VM = "snapvm"
MIB = 1024**2
CHECKED_MIB = 32  # the region of the backup volume the tests write to and compare


@pytest.fixture(scope="module")
def server(snapshot_server: CorralServer) -> Iterator[CorralServer]:
    """The session server with `snapvm` running, a qcow2 volume `snapdata` attached."""
    srv = snapshot_server
    srv.cli("volume", "create", "snapdata", "--size", "64M")
    srv.cli("create", VM, "--image", "tiny", "--attach", "snapdata")
    yield srv
    if srv.process is None:  # a test failed while the server was down
        srv.start()
    srv.cli("delete", VM, "--force", check=False)


def sh(srv: CorralServer, script: str) -> str:
    """Run a busybox shell script in the guest; its stdout, stripped."""
    return srv.cli("exec", VM, "--", "sh", "-c", script, timeout=120).stdout.strip()


def device_of(srv: CorralServer, serial: str) -> str | None:
    """The guest's block device (vdb, ...) whose serial is `serial`."""
    listing = sh(
        srv,
        "for d in /sys/block/vd*; do [ -e $d/serial ] && echo ${d##*/} $(cat $d/serial); done;"
        " true",
    )
    for line in listing.splitlines():
        dev, _, seen = line.partition(" ")
        if seen.strip() == serial:
            return dev
    return None


def boot_id(srv: CorralServer) -> str:
    return sh(srv, "cat /proc/sys/kernel/random/boot_id")


def qemu_pid(srv: CorralServer) -> int:
    pid = srv.cli("show", VM, "-o", "json").json()["status"]["pid"]
    assert isinstance(pid, int)
    return pid


def snapshots(srv: CorralServer) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in srv.cli("snapshot", "list", VM, "-o", "json").json()}


def test_a_disk_only_revert_brings_the_old_data_back(server: CorralServer) -> None:
    dev = wait_for(lambda: device_of(server, "snapdata"), 30)
    mount = f"mkdir -p /mnt/data && mount -t ext2 /dev/{dev} /mnt/data"
    sh(server, f"mke2fs -F /dev/{dev} >/dev/null 2>&1")
    assert sh(server, f"{mount} && echo A=1 > /mnt/data/file && sync && cat /mnt/data/file") == (
        "A=1"
    )
    took = server.cli("snapshot", "create", VM, "s1")
    assert took.stdout.startswith(f"Took snapshot s1 of {VM}")
    assert sh(server, "echo A=2 > /mnt/data/file && sync && cat /mnt/data/file") == "A=2"
    before = qemu_pid(server)

    reverted = server.cli("snapshot", "revert", VM, "s1")
    assert "runs again" in reverted.stdout, reverted.stdout
    assert qemu_pid(server) != before  # shut down, reverted offline, booted again
    dev = wait_for(lambda: device_of(server, "snapdata"), 30)
    mount = f"mkdir -p /mnt/data && mount -t ext2 /dev/{dev} /mnt/data"
    assert sh(server, f"{mount} && cat /mnt/data/file") == "A=1"
    tree = snapshots(server)
    assert tree["s1"]["current"] and tree["s1"]["state"] == "ready"


def test_a_memory_revert_drops_later_processes_without_a_reboot(server: CorralServer) -> None:
    boot, pid = boot_id(server), qemu_pid(server)
    server.cli("snapshot", "create", VM, "m1", "--memory")
    sleeper = sh(server, "sleep 4242 >/dev/null 2>&1 </dev/null & echo $!")
    assert sleeper.isdigit()
    count = "ps | grep -c '[s]leep 4242' || true"
    assert sh(server, count) == "1"

    server.cli("snapshot", "revert", VM, "m1")
    assert sh(server, count) == "0"  # the process started after the snapshot is gone
    assert boot_id(server) == boot  # the same boot: no reboot
    assert qemu_pid(server) == pid and pid_alive(pid)
    tree = snapshots(server)
    assert (tree["m1"]["parent"], tree["m1"]["current"], tree["m1"]["memory"]) == (
        "s1",
        True,
        True,
    )
    listing = server.cli("snapshot", "list", VM).stdout
    assert "m1" in listing and "<- current" in listing


def _write(server: CorralServer, dev: str, offset_mib: float, size_kib: int) -> str:
    """Write random data in the guest, flush it, and return the md5 of the checked region."""
    seek = int(offset_mib * 16)  # in 64 KiB blocks
    return sh(
        server,
        f"dd if=/dev/urandom of=/dev/{dev} bs=64k seek={seek} count={size_kib // 64} "
        f"conv=notrunc,fsync 2>/dev/null && sync && "
        f"dd if=/dev/{dev} bs=1M count={CHECKED_MIB} 2>/dev/null | md5sum",
    ).split()[0]


def _restored_md5(server: CorralServer, volume: str, scratch: Path) -> str:
    path = server.cli("volume", "show", volume, "-o", "json").json()["status"]["path"]
    raw = scratch / f"{volume}.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", path, str(raw)], check=True)
    with raw.open("rb") as image:
        digest = hashlib.md5(image.read(CHECKED_MIB * MIB)).hexdigest()
    raw.unlink()
    return digest


def test_backups_restore_byte_identical_and_incrementals_are_small(
    server: CorralServer, tmp_path: Path
) -> None:
    server.cli("volume", "create", "bkdata", "--size", "64M")
    server.cli("volume", "attach", "bkdata", VM)
    dev = wait_for(lambda: device_of(server, "bkdata"), 30)

    sums = {"b0001": _write(server, dev, 0, 8192)}  # A: 8 MiB
    made = server.cli("backup", "create", "bkdata")
    assert made.stdout.startswith("Backed up volume bkdata: b0001 (full")
    sums["b0002"] = _write(server, dev, 8, 1024)  # B: 1 MiB more
    server.cli("backup", "create", "bkdata")
    sums["b0003"] = _write(server, dev, 4, 64)  # C: 64 KiB rewritten
    server.cli("backup", "create", "bkdata")

    points = server.cli("backup", "list", "bkdata", "-o", "json").json()
    assert [(p["id"], p["kind"], p["parent"]) for p in points] == [
        ("b0001", "full", None),
        ("b0002", "incremental", "b0001"),
        ("b0003", "incremental", "b0002"),
    ]
    full, small = points[0]["size_bytes"], points[2]["size_bytes"]
    assert full >= 8 * MIB and small * 8 < full, (full, small)
    assert len(set(sums.values())) == 3
    table = server.cli("backup", "list", "bkdata").stdout
    assert "b0003" in table and "incremental" in table

    for point, want in sums.items():
        target = f"r-{point}"
        server.cli("backup", "restore", "bkdata", point, "--to", target)
        assert _restored_md5(server, target, tmp_path) == want, point
        server.cli("volume", "delete", target)


def test_kill_9_during_a_backup_finishes_or_rolls_it_back(server: CorralServer) -> None:
    dev = wait_for(lambda: device_of(server, "bkdata"), 30)
    _write(server, dev, 16, 16384)  # 16 MiB more, so the full copy takes a moment
    boot, pid = boot_id(server), qemu_pid(server)
    backups = server.data_dir / "backups" / "bkdata"
    op = server.cli("-o", "json", "backup", "create", "bkdata", "--full", "--no-wait").json()
    server.kill9()
    time.sleep(0.5)  # QEMU may still be copying for the server it lost
    server.start()

    with server.api() as api:
        done = api.get(f"/v1/operations/{op['id']}", params={"wait": 30}).json()
    points = server.cli("backup", "list", "bkdata", "-o", "json").json()
    ids = [p["id"] for p in points]
    if done["state"] == "succeeded":
        assert ids == ["b0001", "b0002", "b0003", "b0004"]
    else:
        assert done["error"]["code"] == "interrupted", done
        assert ids == ["b0001", "b0002", "b0003"]
    assert sorted(p.name for p in backups.iterdir()) == [f"{i}.qcow2" for i in ids]  # no .partial
    assert pid_alive(pid) and qemu_pid(server) == pid and boot_id(server) == boot

    server.cli("backup", "create", "bkdata")
    after = server.cli("backup", "list", "bkdata", "-o", "json").json()
    newest = after[-1]
    assert newest["id"] == "b0005" and newest["size_bytes"] > 0
    if done["state"] != "succeeded":
        assert newest["kind"] == "full" and "cut short" in newest["reason"]
