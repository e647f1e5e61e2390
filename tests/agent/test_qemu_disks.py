"""QEMU-only disk promises beyond the shared contract: bytes written in one guest reach the
host and a second guest, QEMU's image lock keeps two writers apart, q35 hot-plugs through its
root ports, the cloud-init seed disk, and a guest that does not release a disk.

Three guest boots in all (each costs seconds under TCG); the seed is the images module's (vfat).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.agent.compute.qemu.driver import QemuBackend
from corral.agent.compute.qemu.hotplug import block_node_names
from corral.errors import HostError, ImageBuildError, LaunchError, TemporaryError
from corral.images.builder import BuiltImage
from corral.model.rpc import CloudInitSeed, DiskAttachment, ExecRequest, LaunchRequest
from tests.agent.conftest import kill_processes_under, make_qcow2
from tests.agent.test_compute_disks import GuestDisk, guest_disks, wait_for_guest_disks

pytestmark = [
    pytest.mark.slow,
]

READY_TIMEOUT_S = 90.0
MIB = 1024 * 1024


@pytest.fixture
async def qemu(short_dir: Path) -> AsyncIterator[QemuBackend]:
    backend = QemuBackend(short_dir / "run", detach_timeout_s=3.0)
    yield backend
    await backend.close()
    assert kill_processes_under(short_dir) == [], "a test left a guest process behind"


def launch_request(image: BuiltImage, name: str, **overrides: object) -> LaunchRequest:
    fields: dict[str, object] = {
        "name": name,
        "uid": str(uuid.uuid4()),
        "cpus": 1,
        "memory_mib": 256,
        "machine": "pc",
        "kernel": str(image.kernel),
        "initrd": str(image.initrd),
        "cmdline": image.cmdline,
    }
    fields.update(overrides)
    return LaunchRequest.model_validate(fields)


async def sh(backend: QemuBackend, name: str, script: str) -> str:
    result = await backend.exec(ExecRequest(name=name, command=["sh", "-c", script]))
    assert result.exit_code == 0, f"{script!r} failed in {name}: {result.stderr}"
    return result.stdout


async def device_with_serial(backend: QemuBackend, name: str, serial: str) -> str:
    """/dev/vdX of the disk the guest shows with `serial`, once it shows it."""
    seen = await wait_for_guest_disks(
        backend, name, lambda disks: any(d.serial == serial for d in disks.values())
    )
    return "/dev/" + next(dev for dev, d in seen.items() if d.serial == serial)


def image_is_locked(path: Path) -> bool:
    """True while a QEMU holds the image (qemu-img without -U cannot take its lock)."""
    result = subprocess.run(["qemu-img", "info", str(path)], capture_output=True, text=True)
    return result.returncode != 0 and "lock" in result.stderr


def host_bytes(path: Path, scratch: Path) -> bytes:
    """The disk's guest-visible bytes, read on the host (qemu-img convert to raw)."""
    raw = scratch / f"{path.stem}.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(path), str(raw)], check=True)
    try:
        return raw.read_bytes()
    finally:
        raw.unlink()


async def test_a_hot_plugged_disk_carries_its_bytes_to_the_host_and_to_another_guest(
    qemu: QemuBackend, tiny_image: BuiltImage, short_dir: Path
) -> None:
    shared = make_qcow2(short_dir / "shared.qcow2", 32 * MIB)
    volume = DiskAttachment(id="shared", path=str(shared), serial="crl-shared")
    marker = f"written-in-alpha-{uuid.uuid4()}"
    await qemu.launch(launch_request(tiny_image, "alpha", machine="pc"))
    await qemu.launch(launch_request(tiny_image, "beta", machine="q35"))
    await asyncio.gather(
        qemu.wait_ready("alpha", READY_TIMEOUT_S), qemu.wait_ready("beta", READY_TIMEOUT_S)
    )

    await qemu.attach_disk("alpha", volume)
    dev = await device_with_serial(qemu, "alpha", "crl-shared")
    await sh(
        qemu,
        "alpha",
        f"mke2fs -q {dev} && mkdir -p /mnt/shared && mount {dev} /mnt/shared && "
        f"echo {marker} > /mnt/shared/marker && umount /mnt/shared && sync",
    )
    assert image_is_locked(shared)

    # While alpha writes to it, QEMU's image lock keeps beta out, and the failed attach leaves
    # nothing behind in beta's QEMU.
    beta_nodes = await block_node_names(qemu._guests["beta"].monitor)
    with pytest.raises(HostError) as locked:
        await qemu.attach_disk("beta", volume)
    assert "lock" in locked.value.message
    assert await block_node_names(qemu._guests["beta"].monitor) == beta_nodes
    assert (await qemu.observe("beta")).disks == []

    await qemu.detach_disk("alpha", "shared")
    assert "crl-shared" not in {d.serial for d in (await guest_disks(qemu, "alpha")).values()}
    assert not image_is_locked(shared), "QEMU still holds the image after the detach"
    assert marker.encode() in host_bytes(shared, short_dir)

    # q35: the disk goes into one of the spare pcie-root-ports.
    await qemu.attach_disk("beta", volume)
    dev = await device_with_serial(qemu, "beta", "crl-shared")
    read = await sh(
        qemu,
        "beta",
        f"mkdir -p /mnt/shared && mount -o ro {dev} /mnt/shared && cat /mnt/shared/marker && "
        "umount /mnt/shared",
    )
    assert read.strip() == marker
    await qemu.detach_disk("beta", "shared")
    assert not image_is_locked(shared)
    await asyncio.gather(qemu.kill("alpha"), qemu.kill("beta"))


async def test_the_seed_disk_and_a_guest_that_does_not_release_a_disk(
    qemu: QemuBackend, tiny_image: BuiltImage, short_dir: Path
) -> None:
    root = make_qcow2(short_dir / "root.qcow2", 64 * MIB)
    extra = make_qcow2(short_dir / "extra.qcow2", 16 * MIB)
    seed = CloudInitSeed(instance_id=f"i-{uuid.uuid4().hex[:12]}", hostname="gamma")
    root_disk = DiskAttachment(id="root", path=str(root), serial="crl-root", boot=True)
    request = launch_request(tiny_image, "gamma", disks=[root_disk], cloud_init=seed)
    observation = await qemu.launch(request)
    assert observation.disks == ["root"]  # the seed is Corral's, not one of the guest's disks
    await qemu.wait_ready("gamma", READY_TIMEOUT_S)

    seen = await guest_disks(qemu, "gamma")
    assert seen["vda"] == GuestDisk(64 * MIB, "crl-root", False)
    seed_disk = seen["vdb"]
    assert (seed_disk.serial, seed_disk.read_only) == ("cidata", True)
    assert seed.instance_id in await sh(qemu, "gamma", "strings /dev/vdb")

    # An attach interrupted after its first step (agent killed) left the file node behind:
    # the next attach takes it away first instead of failing on a duplicate node name.
    monitor = qemu._guests["gamma"].monitor
    nodes_before = await block_node_names(monitor)
    stray = {"driver": "file", "node-name": "extra-file", "filename": str(extra)}
    await monitor.execute("blockdev-add", stray)
    await qemu.attach_disk("gamma", DiskAttachment(id="extra", path=str(extra), serial="crl-x"))
    await device_with_serial(qemu, "gamma", "crl-x")

    # A paused guest cannot answer the unplug request: a temporary error, the disk stays.
    await monitor.execute("stop")
    started = time.monotonic()
    with pytest.raises(TemporaryError) as pending:
        await qemu.detach_disk("gamma", "extra")
    assert pending.value.code == "disk_not_released"
    assert "did not release disk 'extra'" in pending.value.message
    assert time.monotonic() - started < 10
    assert "extra" in (await qemu.observe("gamma")).disks
    # Running again, the guest answers the pending request; detaching again finishes the job.
    await monitor.execute("cont")
    await qemu.detach_disk("gamma", "extra")
    assert (await qemu.observe("gamma")).disks == ["root"]
    assert await block_node_names(monitor) == nodes_before
    assert not image_is_locked(extra)
    assert {d.serial for d in (await guest_disks(qemu, "gamma")).values()} == {"crl-root", "cidata"}

    await qemu.kill("gamma")
    await qemu.forget("gamma")
    assert not (short_dir / "run" / "gamma").exists()  # the seed went with the runtime dir


async def test_a_seed_that_cannot_be_written_fails_the_launch_and_leaves_nothing(
    tiny_image: BuiltImage, short_dir: Path
) -> None:
    def broken_writer(seed: CloudInitSeed, dest: Path) -> Path:
        raise ImageBuildError("mkfs.vfat is not installed; cloud-init seeds need it")

    backend = QemuBackend(short_dir / "run", seed_writer=broken_writer)
    seed = CloudInitSeed(instance_id="i-1", hostname="delta")
    with pytest.raises(LaunchError) as caught:
        await backend.launch(launch_request(tiny_image, "delta", cloud_init=seed))
    assert "cloud-init seed" in caught.value.message
    assert "mkfs.vfat" in caught.value.message
    assert not (short_dir / "run" / "delta").exists()
    assert kill_processes_under(short_dir) == []
    await backend.close()
