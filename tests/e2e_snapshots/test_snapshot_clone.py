"""An instance cloned from a snapshot of a real guest (QEMU, TCG here), through the CLI: data
written in the guest before the snapshot is in the clone, data written after it is not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.server import CorralServer, wait_for

pytestmark = pytest.mark.slow

VM = "clonesrc"
CLONE = "clonevm"


@pytest.fixture(scope="module")
def server(snapshot_server: CorralServer) -> Iterator[CorralServer]:
    """The session server with `clonesrc` running, a qcow2 volume `clonedata` attached."""
    srv = snapshot_server
    srv.cli("volume", "create", "clonedata", "--size", "64M")
    srv.cli("create", VM, "--image", "tiny", "--attach", "clonedata")
    yield srv
    if srv.process is None:
        srv.start()
    for name in (CLONE, VM):
        srv.cli("delete", name, "--force", check=False)
    srv.cli("volume", "delete", f"{VM}-s1-0-base", check=False)


def sh(srv: CorralServer, instance: str, script: str) -> str:
    return srv.cli("exec", instance, "--", "sh", "-c", script, timeout=120).stdout.strip()


def device_of(srv: CorralServer, instance: str, serial: str) -> str | None:
    listing = sh(
        srv,
        instance,
        "for d in /sys/block/vd*; do [ -e $d/serial ] && echo ${d##*/} $(cat $d/serial); done;"
        " true",
    )
    for line in listing.splitlines():
        dev, _, seen = line.partition(" ")
        if seen.strip() == serial:
            return dev
    return None


def test_a_linked_clone_reads_the_data_of_the_snapshot(server: CorralServer) -> None:
    dev = wait_for(lambda: device_of(server, VM, "clonedata"), 30)
    mount = f"mkdir -p /mnt/data && mount -t ext2 /dev/{dev} /mnt/data"
    sh(server, VM, f"mke2fs -F /dev/{dev} >/dev/null 2>&1")
    write = f"{mount} && echo A=1 > /mnt/data/file && sync && cat /mnt/data/file"
    assert sh(server, VM, write) == "A=1"
    server.cli("snapshot", "create", VM, "s1")
    assert sh(server, VM, "echo A=2 > /mnt/data/file && sync && cat /mnt/data/file") == "A=2"

    server.cli("create", CLONE, "--from-snapshot", f"{VM}/s1", "--linked", timeout=300)

    disks = server.cli("show", CLONE, "-o", "json").json()["spec"]["disks"]
    assert [d["volume"] for d in disks] == [f"{CLONE}-0"]
    dev = wait_for(lambda: device_of(server, CLONE, f"{CLONE}-0"), 30)
    mount = f"mkdir -p /mnt/data && mount -t ext2 /dev/{dev} /mnt/data"
    assert sh(server, CLONE, f"{mount} && cat /mnt/data/file") == "A=1"
    assert sh(server, VM, "cat /mnt/data/file") == "A=2"  # the source is untouched
