"""Backups of a real guest's disk through the agent: full then incrementals from a dirty
bitmap, each point restored byte-identical to what the guest had; an aborted backup loses no
change; the bitmap lives through an agent restart and a clean QEMU exit, and a kill -9 makes
the next backup full, saying why.

Two boots of the tiny guest for the whole file, plus one QEMU start that is killed before the
guest is up (a backup is a QMP job: it needs no guest). The guest writes to its raw block device (no
filesystem), so the disk's bytes are exactly what the test wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from corral.agent import Agent, build_agent
from corral.agent.compute.qemu.driver import QemuBackend
from corral.errors import HostError
from corral.images.builder import BuiltImage
from corral.model.rpc import DiskAttachment, GuestRunState, PoolConfig, VolumeRequest
from corral.model.rpc_snapshots import BackupRequest, BackupResult
from tests.agent.conftest import kill_processes_under, make_qcow2
from tests.agent.test_snapshots_qemu import boot, launch_request, sh

pytestmark = [
    pytest.mark.slow,
]

MIB = 1024 * 1024
GIB = 1024 * MIB
REGION_MIB = 32  # every write of the test lands in the disk's first 32 MiB
AgentFactory = Callable[[], Agent]


@pytest.fixture
async def new_agent(short_dir: Path) -> AsyncIterator[AgentFactory]:
    """Agents on one runtime dir (a second one is the same host after an agent restart)."""
    made: list[Agent] = []

    def make() -> Agent:
        agent = build_agent(
            "qemu",
            host_name="test-host",
            runtime_dir=short_dir / "run",
            images_dir=short_dir / "images",
            cache_dir=short_dir / "cache",
            pools_dir=short_dir / "pools",
        )
        made.append(agent)
        return agent

    yield make
    for agent in made:
        await agent.close()
    assert kill_processes_under(short_dir) == [], "a test left a guest process behind"


CRASHING_AGENT = """
import asyncio, sys
from pathlib import Path
from corral.agent import build_agent
from corral.model.rpc_snapshots import BackupRequest

async def main() -> None:
    scratch, req = Path(sys.argv[1]), BackupRequest.model_validate_json(sys.argv[2])
    agent = build_agent("qemu", host_name="test-host", runtime_dir=scratch / "run",
                        images_dir=scratch / "images", cache_dir=scratch / "cache",
                        pools_dir=scratch / "pools")
    agent.compute.backup_speed_bps = 1 << 20
    await agent.backup(req, lambda fraction, message: print(fraction, flush=True))

asyncio.run(main())
"""


async def backup_then_crash(scratch: Path, req: BackupRequest) -> None:
    """An agent process starts `req` (slowed down) and is killed -9 while QEMU copies."""
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_AGENT, str(scratch), req.model_dump_json(),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert agent.stdout is not None
    try:
        line = await asyncio.wait_for(agent.stdout.readline(), 30)
        assert line, "the agent process ended before its backup made progress"
        assert Path(req.target_path + ".partial").exists()
    finally:
        agent.kill()
        await agent.wait()


class Progress:
    def __init__(self) -> None:
        self.fractions: list[float] = []

    def __call__(self, fraction: float, message: str) -> None:
        self.fractions.append(fraction)


def bitmaps_of(path: str) -> dict[str, list[str]]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path], check=True, capture_output=True
    ).stdout
    found = json.loads(out).get("format-specific", {}).get("data", {}).get("bitmaps", [])
    return {b["name"]: b["flags"] for b in found}


def region_md5(path: str, scratch: Path) -> str:
    """md5 of the first REGION_MIB of an image, read through its chain; and the image must
    hold no data past that region (what the test never wrote must read as zeros)."""
    raw_file = scratch / "region.raw"
    subprocess.run(
        ["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=1M", f"count={REGION_MIB}",
         f"if={path}", f"of={raw_file}"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    raw = raw_file.read_bytes()
    raw_file.unlink()
    extents = json.loads(
        subprocess.run(
            ["qemu-img", "map", "--output=json", "-f", "qcow2", path],
            check=True,
            capture_output=True,
        ).stdout
    )
    beyond = [e for e in extents if e["data"] and e["start"] + e["length"] > REGION_MIB * MIB]
    assert beyond == [], f"{path} holds data past the written region: {beyond[:3]}"
    return hashlib.md5(raw).hexdigest()


async def test_backups_restore_every_point_and_survive_restarts_and_crashes(
    new_agent: AgentFactory, tiny_image: BuiltImage, short_dir: Path
) -> None:
    agent = new_agent()
    data = DiskAttachment(
        id="data", path=str(make_qcow2(short_dir / "data.qcow2", GIB)), serial="crl-data"
    )
    points = short_dir / "backups"
    guest_sums: dict[str, str] = {}

    async def write(dev: str, label: str, offset_mib: int, size_mib: int) -> None:
        await sh(
            agent,
            "keeper",
            f"yes point-{label} | head -c {size_mib * MIB} | "
            f"dd of={dev} bs=1M seek={offset_mib} conv=fsync 2>/dev/null",
        )

    async def guest_sum(dev: str) -> str:
        out = await sh(
            agent, "keeper", f"dd if={dev} bs=1M count={REGION_MIB} 2>/dev/null | md5sum"
        )
        return out.split()[0]

    def req(name: str, parent: str | None) -> BackupRequest:
        return BackupRequest(
            instance="keeper",
            disk=data,
            target_path=str(points / f"{name}.qcow2"),
            parent_path=str(points / f"{parent}.qcow2") if parent else None,
        )

    async def backup(name: str, parent: str | None) -> BackupResult:
        progress = Progress()
        done = await agent.backup(req(name, parent), progress)
        assert progress.fractions and progress.fractions[-1] == 1.0
        assert not Path(done.target_path + ".partial").exists()
        return done

    # -- A full; a clean exit stores the bitmap in the qcow2 -----------------------------------
    dev = await boot(agent, tiny_image, "keeper", [data])
    await write(dev, "A", 0, 8)
    guest_sums["p1"] = await guest_sum(dev)
    full = await backup("p1", None)
    assert (full.kind, full.reason, full.virtual_size_bytes) == ("full", "", GIB)
    assert full.file_size_bytes >= 8 * MIB
    await agent.shutdown("keeper", 30)
    assert bitmaps_of(data.path) == {"corral-backup": ["auto"]}

    # -- B incremental after the restart: the bitmap came back with the disk ---------------------
    dev = await boot(agent, tiny_image, "keeper", [data])
    await write(dev, "B", 16, 4)
    guest_sums["p2"] = await guest_sum(dev)
    incremental = await backup("p2", "p1")
    assert (incremental.kind, incremental.reason) == ("incremental", "")
    assert 4 * MIB <= incremental.file_size_bytes < 10 * MIB, "not proportional to the change"

    # -- an aborted backup loses no change: the next incremental still carries C ----------------
    await write(dev, "C", 4, 4)
    guest_sums["p3"] = await guest_sum(dev)
    compute = agent.compute
    assert isinstance(compute, QemuBackend)
    compute.backup_speed_bps = MIB  # 4 MiB to copy: ~4 s, plenty of time to abort it
    running = asyncio.create_task(agent.backup(req("aborted", "p2"), Progress()))
    partial = points / "aborted.qcow2.partial"
    deadline = time.monotonic() + 10
    while not partial.exists():
        assert time.monotonic() < deadline and not running.done(), "the backup never started"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    await agent.abort_backup(req("aborted", "p2"))
    with pytest.raises(HostError) as aborted:
        await running
    assert aborted.value.code in ("backup_aborted", "backup_failed")
    assert not partial.exists() and not (points / "aborted.qcow2").exists()
    compute.backup_speed_bps = 0
    after_abort = await backup("p3", "p2")
    assert after_abort.kind == "incremental" and after_abort.file_size_bytes >= 4 * MIB

    # -- an agent restart: QEMU keeps the bitmap in memory ---------------------------------------
    await agent.close()
    agent = new_agent()
    await write(dev, "D", 24, 1)
    guest_sums["p4"] = await guest_sum(dev)
    assert (await backup("p4", "p3")).kind == "incremental"

    # -- kill -9 of the agent mid-backup: the next agent finishes or aborts what QEMU still runs -
    await write(dev, "F", 28, 4)
    guest_sums["p5"] = await guest_sum(dev)
    await agent.close()
    await backup_then_crash(short_dir, req("p5", "p4"))
    agent = new_agent()
    resumed = await backup("p5", "p4")  # the same request: the job is adopted and finished
    assert resumed.kind == "incremental" and resumed.file_size_bytes >= 4 * MIB

    await write(dev, "G", 12, 4)
    guest_sums["p6"] = await guest_sum(dev)
    await agent.close()
    await backup_then_crash(short_dir, req("crashed", "p5"))
    agent = new_agent()
    await agent.abort_backup(req("crashed", "p5"))  # what recovery does with a pending point
    assert list(points.glob("crashed*")) == []
    after_crash_abort = await backup("p6", "p5")
    assert after_crash_abort.kind == "incremental", after_crash_abort.reason

    # -- kill -9 of QEMU: the stored bitmap stays flagged in use, the next backup is full --------
    pid = (await agent.observe("keeper")).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (await agent.observe("keeper")).state is not GuestRunState.ABSENT:
        assert time.monotonic() < deadline, "QEMU survived SIGKILL"
        await asyncio.sleep(0.05)
    assert "in-use" in bitmaps_of(data.path)["corral-backup"]
    # The disk after the crash, read on the host: what the next point must hold (the guest
    # flushed every write, so it is the guest's last view).
    assert region_md5(data.path, short_dir) == guest_sums["p6"]
    # QEMU only, no need to wait for the guest: the backup is a QMP job.
    await agent.launch(launch_request(tiny_image, "keeper", [data]))
    after_crash = await backup("p7", "p6")
    assert after_crash.kind == "full" and "inconsistent" in after_crash.reason
    guest_sums["p7"] = guest_sums["p6"]
    await agent.kill("keeper")

    # -- a stopped disk: a full copy, and a fresh bitmap for the next running backup -------------
    # (the bitmap the last full made lived only in the killed QEMU's memory)
    stopped = await backup("p8", "p7")
    assert stopped.kind == "full" and "QEMU was killed" in stopped.reason
    assert bitmaps_of(data.path) == {"corral-backup": ["auto"]}
    guest_sums["p8"] = guest_sums["p7"]

    # -- every point restores, byte-identical, into an independent volume -------------------------
    await agent.ensure_pool(PoolConfig(name="restore", driver="dir"))
    for name, expected in guest_sums.items():
        volume = await agent.create_volume(
            VolumeRequest(
                pool="restore", name=f"from-{name}", source_path=str(points / f"{name}.qcow2"),
                full_copy=True,
            )
        )  # fmt: skip
        assert volume.backing is None
        assert region_md5(volume.path, short_dir) == expected, (
            f"point {name} restored different bytes"
        )
        await agent.delete_volume("restore", f"from-{name}")
    await agent.delete_pool("restore")
