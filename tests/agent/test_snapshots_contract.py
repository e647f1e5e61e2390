"""Snapshots through the agent's API, the same promises on the fake and on the real agent.

A stopped instance's disks are snapshotted with qemu-img (real files: the data really goes
back) or the fake's model; a running fake guest stands for QMP here (the QEMU cases that boot
guests are in test_snapshots_qemu.py, marked slow). Nothing here boots a guest.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.agent import Agent, build_agent
from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.model.rpc import DiskAttachment, GuestRunState, LaunchRequest
from corral.model.rpc_snapshots import SnapshotRequest
from tests.agent.conftest import make_qcow2

MIB = 1024 * 1024


@dataclass
class Host:
    """An agent of one kind on a scratch dir, with disk files in it."""

    kind: str
    agent: Agent
    dir: Path

    @property
    def real(self) -> bool:
        return self.kind == "qemu"

    def disk(self, disk_id: str, fmt: str = "qcow2", **fields: object) -> DiskAttachment:
        path = self.dir / f"{disk_id}.{fmt}"
        if not path.exists():
            if fmt == "qcow2":
                make_qcow2(path, 32 * MIB)
            else:
                with path.open("wb") as handle:
                    handle.truncate(32 * MIB)
        values: dict[str, object] = {
            "id": disk_id,
            "path": str(path),
            "format": fmt,
            "serial": f"crl-{disk_id}",
        }
        values.update(fields)
        return DiskAttachment.model_validate(values)

    async def launch(self, name: str, disks: list[DiskAttachment]) -> None:
        """Start a fake guest (only the fake host starts guests in these tests)."""
        assert not self.real
        kernel = self.dir / "vmlinux"
        kernel.write_bytes(b"\x7fELF fake kernel")
        await self.agent.launch(
            LaunchRequest(
                name=name,
                uid=str(uuid.uuid4()),
                cpus=1,
                memory_mib=256,
                kernel=str(kernel),
                disks=disks,
            )
        )


async def make_host(kind: str, scratch: Path) -> Host:
    agent = build_agent(
        kind,
        host_name="test-host",
        runtime_dir=scratch / "run",
        images_dir=scratch / "images",
        cache_dir=scratch / "cache",
        pools_dir=scratch / "pools",
    )
    return Host(kind, agent, scratch)


@pytest.fixture(params=["fake", "qemu"])
async def host(request: pytest.FixtureRequest, short_dir: Path) -> AsyncIterator[Host]:
    """The fake agent, and the real one (stopped instances only: qemu-img on real files)."""
    made = await make_host(request.param, short_dir)
    yield made
    await made.agent.close()


@pytest.fixture
async def fake_host(short_dir: Path) -> AsyncIterator[Host]:
    """The fake agent, whose guests 'run' without booting."""
    made = await make_host("fake", short_dir)
    yield made
    await made.agent.close()


def write(disk: DiskAttachment, pattern: int, offset: int = 0, length: int = MIB) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern:#x} {offset} {length}", disk.path],
        check=True,
        capture_output=True,
    )


def reads(disk: DiskAttachment, pattern: int, offset: int = 0, length: int = MIB) -> bool:
    result = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern:#x} {offset} {length}", disk.path],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and "verification failed" not in result.stdout


def snap(instance: str, tag: str, disks: list[DiskAttachment], **fields: object) -> SnapshotRequest:
    return SnapshotRequest.model_validate(
        {"instance": instance, "tag": tag, "disks": disks, **fields}
    )


# -- stopped instances (qemu-img / the fake's model) --------------------------------------------


async def test_a_stopped_instance_goes_back_to_a_snapshot_of_all_its_disks(host: Host) -> None:
    d1, d2 = host.disk("d1"), host.disk("d2")
    if host.real:
        write(d1, 0x11)
    taken = await host.agent.snapshot_create(snap("web", "s1", [d1, d2]))
    assert (taken.tag, taken.memory, taken.running, taken.quiesced) == ("s1", False, False, False)
    assert await host.agent.snapshot_tags(snap("web", "s1", [d1, d2])) == {
        "d1": ["s1"],
        "d2": ["s1"],
    }
    with pytest.raises(Conflict) as again:
        await host.agent.snapshot_create(snap("web", "s1", [d1, d2]))
    assert again.value.code == "snapshot_exists"

    if host.real:
        write(d1, 0x22)
    await host.agent.snapshot_revert(snap("web", "s1", [d1, d2]))
    if host.real:
        assert reads(d1, 0x11), "the disk did not go back to the snapshot"

    await host.agent.snapshot_create(snap("web", "s2", [d1, d2]))
    await host.agent.snapshot_delete(snap("web", "s1", [d1, d2]))
    assert await host.agent.snapshot_tags(snap("web", "s2", [d1, d2])) == {
        "d1": ["s2"],
        "d2": ["s2"],
    }
    await host.agent.snapshot_delete(snap("web", "s1", [d1, d2]))  # absent: no-op
    with pytest.raises(NotFound) as unknown:
        await host.agent.snapshot_revert(snap("web", "s1", [d1, d2]))
    assert unknown.value.code == "unknown_snapshot"


async def test_a_memory_snapshot_of_a_stopped_instance_is_refused(host: Host) -> None:
    with pytest.raises(Conflict) as refused:
        await host.agent.snapshot_create(snap("web", "m1", [host.disk("d1")], memory=True))
    assert refused.value.code == "invalid_state"
    assert "Start it" in refused.value.message


async def test_a_raw_disk_refuses_the_snapshot_before_any_disk_is_touched(host: Host) -> None:
    d1, raw = host.disk("d1"), host.disk("r1", "raw")
    iso = host.disk("iso", "raw", read_only=True)
    with pytest.raises(InvalidInput) as refused:
        await host.agent.snapshot_create(snap("web", "s1", [d1, raw]))
    assert refused.value.code == "snapshot_needs_qcow2"
    assert await host.agent.snapshot_tags(snap("web", "s1", [d1, raw])) == {"d1": [], "r1": []}
    # A read-only raw disk (an ISO, a seed) cannot change: it is simply left out.
    await host.agent.snapshot_create(snap("web", "s1", [d1, iso]))
    assert await host.agent.snapshot_tags(snap("web", "s1", [d1, iso])) == {
        "d1": ["s1"],
        "iso": [],
    }


@pytest.fixture
def held_open(short_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """qemu-io processes that keep an image open (and its write lock), as a QEMU would."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


async def test_a_snapshot_that_fails_on_one_disk_leaves_no_disk_tagged(
    host: Host, held_open: list[subprocess.Popen[bytes]]
) -> None:
    d1, d2 = host.disk("d1"), host.disk("d2")
    if host.real:
        # Something else has d2 open for writing: qemu-img cannot take its lock.
        held_open.append(hold_open(Path(d2.path)))
    else:
        Path(d2.path).unlink()
    with pytest.raises(CorralError) as failed:
        await host.agent.snapshot_create(snap("web", "s1", [d1, d2]))
    assert failed.value.code == ("volume_attached" if host.real else "unknown_volume")
    assert await host.agent.snapshot_tags(snap("web", "s1", [d1])) == {"d1": []}


def hold_open(path: Path) -> subprocess.Popen[bytes]:
    """A qemu-io process that has opened `path` read-write (it answered a command)."""
    for _ in range(10):
        proc = subprocess.Popen(
            ["qemu-io", "-f", "qcow2", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"info\n")
        proc.stdin.flush()
        if proc.stdout.readline():  # it has the image open (EOF: it could not open it)
            return proc
        proc.wait()
    raise AssertionError(f"qemu-io could not open {path}")


async def test_bad_names_are_refused_with_their_field(host: Host) -> None:
    with pytest.raises(InvalidInput) as tag:
        await host.agent.snapshot_create(snap("web", "../x", [host.disk("d1")]))
    assert tag.value.field == "tag"
    with pytest.raises(InvalidInput) as instance:
        await host.agent.snapshot_create(snap("a/b", "s1", [host.disk("d1")]))
    assert instance.value.field == "instance"


# -- running instances (the fake stands for QMP) -------------------------------------------------


async def test_a_running_instance_snapshots_with_and_without_memory(fake_host: Host) -> None:
    agent = fake_host.agent
    d1, d2 = fake_host.disk("d1"), fake_host.disk("d2")
    await fake_host.launch("web", [d1, d2])

    disk_only = await agent.snapshot_create(snap("web", "s1", [d1, d2]))
    assert (disk_only.running, disk_only.quiesced, disk_only.memory) == (True, True, False)
    unquiesced = await agent.snapshot_create(snap("web", "s2", [d1, d2], quiesce=False))
    assert not unquiesced.quiesced
    memory = await agent.snapshot_create(snap("web", "m1", [d1, d2], memory=True))
    assert memory.memory and memory.vmstate_bytes > 0 and not memory.quiesced
    assert (await agent.snapshot_tags(snap("web", "m1", [d1, d2])))["d2"] == ["s1", "s2", "m1"]

    with pytest.raises(Conflict) as needs_stop:
        await agent.snapshot_revert(snap("web", "s1", [d1, d2]))
    assert needs_stop.value.code == "invalid_state"
    await agent.snapshot_revert(snap("web", "m1", [d1, d2]))
    assert (await agent.observe("web")).state is GuestRunState.RUNNING

    await agent.snapshot_delete(snap("web", "s2", [d1, d2]))
    assert (await agent.snapshot_tags(snap("web", "s2", [d1, d2])))["d1"] == ["s1", "m1"]

    stray = fake_host.disk("stray")
    with pytest.raises(Conflict) as not_attached:
        await agent.snapshot_create(snap("web", "s3", [d1, stray]))
    assert not_attached.value.code == "disk_not_attached"
    # Listing and deleting also reach disks the guest does not have attached (their files).
    assert await agent.snapshot_tags(snap("web", "s1", [d1, stray])) == {
        "d1": ["s1", "m1"],
        "stray": [],
    }

    # Stopped, a memory snapshot goes back as disk-only (the guest would boot from it).
    await agent.shutdown("web", 5)
    await agent.snapshot_revert(snap("web", "m1", [d1, d2]))
    await agent.kill("web")


async def test_a_memory_snapshot_needs_a_writable_qcow2_disk(fake_host: Host) -> None:
    iso = fake_host.disk("iso", "raw", read_only=True)
    await fake_host.launch("web", [iso])
    with pytest.raises(InvalidInput) as refused:
        await fake_host.agent.snapshot_create(snap("web", "m1", [iso], memory=True))
    assert refused.value.code == "memory_snapshot_needs_disk"
    assert "attach a qcow2 volume" in refused.value.message
