"""What the file-based drivers (`dir`, `btrfs`) do beside the contract: they respect the image
lock of a running QEMU, so a disk in use is never deleted, resized offline or cloned half-written.
(The fake has no files to lock; the control plane refuses these on its records.)"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from corral.errors import Conflict
from corral.model.rpc import VolumeRequest
from tests.agent.storage.conftest import MiB, Pools


@contextmanager
def qemu_holding(path: Path, fmt: str) -> Iterator[None]:
    """A QEMU process (no guest) with `path` open read-write, as a running VM has its disk."""
    proc = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-machine",
            "none",
            "-accel",
            "tcg",  # never KVM here: this host's /dev/kvm is kvm_pvm
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "none",
            "-blockdev",
            f"driver={fmt},node-name=d0,file.driver=file,file.filename={path}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until QEMU holds the image lock
            probe = subprocess.run(
                ["qemu-img", "info", "-f", fmt, str(path)], capture_output=True, check=False
            )
            if probe.returncode != 0:
                break
            if proc.poll() is not None:
                pytest.fail(f"qemu exited before it opened the disk: {proc.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        yield
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(params=["dir", "btrfs"])
def file_pools(request: pytest.FixtureRequest, scratch: Path) -> Iterator[Pools]:
    made = Pools(request.param, scratch)
    try:
        yield made
    finally:
        made.teardown()


def test_a_volume_a_running_guest_holds_is_not_deleted_resized_or_cloned(
    file_pools: Pools,
) -> None:
    pool = file_pools.make()
    pool.create_volume(VolumeRequest(pool=pool.name, name="disk", size_bytes=32 * MiB))

    with qemu_holding(pool.volume_path("disk"), "qcow2"):
        assert pool.volume_facts("disk").virtual_size_bytes == 32 * MiB  # reading is fine
        attempts: list[Callable[[], object]] = [
            lambda: pool.delete_volume("disk"),
            lambda: pool.resize_volume("disk", 64 * MiB),
            lambda: pool.create_volume(
                VolumeRequest(pool=pool.name, name="clone", source_volume="disk")
            ),
            lambda: pool.create_volume(
                VolumeRequest(pool=pool.name, name="copy", source_volume="disk", full_copy=True)
            ),
        ]
        for attempt in attempts:
            with pytest.raises(Conflict) as refused:
                attempt()
            assert refused.value.code == "volume_attached"
            assert "detach it first" in refused.value.message
        assert [v.name for v in pool.list_volumes()] == ["disk"]

    assert pool.resize_volume("disk", 64 * MiB).virtual_size_bytes == 64 * MiB
    pool.delete_volume("disk")
    assert pool.list_volumes() == []
