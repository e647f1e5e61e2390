"""Fixtures for the storage tests: a scratch dir whose mounts, loop devices and files are all
removed on teardown (even when a test failed half-way), pools per driver, and image helpers."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.agent.storage import StorageBackend, make_storage_backend
from corral.agent.storage.host import current_mounts, loop_devices_for
from corral.errors import Conflict
from corral.model.rpc import PoolConfig

MiB = 1024 * 1024
DRIVERS = ["fake", "dir", "btrfs"]
BTRFS_LOOP_BYTES = 384 * MiB


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root)
    points = [
        m.mount_point
        for m in current_mounts()
        if m.mount_point == prefix or m.mount_point.startswith(prefix + "/")
    ]
    return sorted(points, key=len, reverse=True)


def loops_under(root: Path) -> list[str]:
    """Loop devices whose backing file lies below `root`."""
    devices = []
    for entry in Path("/sys/block").glob("loop*"):
        with contextlib.suppress(OSError):
            backing = (entry / "loop" / "backing_file").read_text().strip()
            if backing.startswith(str(root) + "/"):
                devices.append(f"/dev/{entry.name}")
    return devices


def run(*argv: str) -> str:
    """Run a command for a test's own setup; fail the test with its stderr."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr.strip()}"
    return result.stdout


def simulate_reboot(mount_point: Path, loop_file: Path) -> None:
    """What a host reboot does to a loop-mounted pool: no mount, no loop device."""
    run("umount", str(mount_point))
    for device in loop_devices_for(loop_file):
        run("losetup", "-d", device)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A fresh dir for pools and images; teardown unmounts, detaches and removes everything
    below it, and refuses to delete files while anything is still mounted there."""
    root = Path(tempfile.mkdtemp(prefix="crl-st-", dir="/tmp"))
    try:
        yield root
    finally:
        for point in mounts_under(root):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
        for device in loops_under(root):
            subprocess.run(["losetup", "-d", device], capture_output=True)
        left = mounts_under(root)
        assert not left, f"still mounted after teardown: {left}"
        shutil.rmtree(root, ignore_errors=True)


# -- images ----------------------------------------------------------------------------------------


def make_image(path: Path, size: int, data: int = MiB, pattern: int = 0xAB) -> Path:
    """A qcow2 "disk image" of `size` bytes whose first `data` bytes are `pattern`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run("qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size))
    if data:
        write_pattern(path, "qcow2", pattern, 0, data)
    return path


def write_pattern(path: Path | str, fmt: str, pattern: int, offset: int, length: int) -> None:
    """Write `length` bytes of `pattern` at `offset` through QEMU's block layer."""
    run("qemu-io", "-f", fmt, "-c", f"write -P {pattern:#x} {offset} {length}", str(path))


def reads_pattern(path: Path | str, fmt: str, pattern: int, offset: int, length: int) -> bool:
    """True when the image reads `pattern` over the whole range (through its backing chain)."""
    result = subprocess.run(
        ["qemu-io", "-f", fmt, "-c", f"read -P {pattern:#x} {offset} {length}", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and "verification failed" not in result.stdout + result.stderr


# -- pools -----------------------------------------------------------------------------------------


@dataclass
class Pools:
    """Makes pools of one driver under a scratch dir and tears them all down."""

    driver: str
    scratch: Path
    made: list[StorageBackend] = field(default_factory=list)

    @property
    def pools_dir(self) -> Path:
        return self.scratch / "pools"

    @property
    def real(self) -> bool:
        """Whether volumes are real image files (everything but the fake)."""
        return self.driver != "fake"

    def config(
        self, name: str = "p1", *, path: Path | None = None, size_bytes: int | None = None
    ) -> PoolConfig:
        if size_bytes is None and self.driver == "btrfs" and path is None:
            size_bytes = BTRFS_LOOP_BYTES
        return PoolConfig(
            name=name,
            driver=self.driver,
            path=str(path) if path is not None else None,
            size_bytes=size_bytes,
        )

    def make(
        self, name: str = "p1", *, path: Path | None = None, size_bytes: int | None = None
    ) -> StorageBackend:
        """A new, ensured pool."""
        backend = make_storage_backend(
            self.config(name, path=path, size_bytes=size_bytes), self.pools_dir
        )
        self.made.append(backend)
        backend.ensure()
        return backend

    def reopen(self, pool: StorageBackend, **overrides: object) -> StorageBackend:
        """A new backend object for an existing pool, as after an agent restart."""
        config = self.config(pool.name, size_bytes=None)
        if pool.path != self.pools_dir / pool.name:
            config.path = str(pool.path)
        backend = make_storage_backend(config.model_copy(update=overrides), self.pools_dir)
        self.made.append(backend)
        return backend

    def teardown(self) -> None:
        """Delete every volume (clones before their sources) and destroy every pool."""
        for backend in reversed(self.made):
            with contextlib.suppress(Exception):
                backend.ensure()
                for _ in range(10):
                    left = backend.list_volumes()
                    if not left:
                        break
                    for volume in left:
                        with contextlib.suppress(Conflict):
                            backend.delete_volume(volume.name)
            with contextlib.suppress(Exception):
                backend.destroy()


@pytest.fixture(params=DRIVERS)
def pools(request: pytest.FixtureRequest, scratch: Path) -> Iterator[Pools]:
    """Pools of each driver in turn."""
    made = Pools(request.param, scratch)
    try:
        yield made
    finally:
        made.teardown()


@pytest.fixture
def tmpfs(scratch: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs, for filling a `dir` pool."""
    point = scratch / "tmpfs"
    point.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=48m", "corral-test", str(point))
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], capture_output=True)
