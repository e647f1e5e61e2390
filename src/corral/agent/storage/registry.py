"""Storage drivers by name: `dir` and `btrfs` for real pools, `fake` for fast tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from corral.agent.storage.base import StorageBackend
from corral.errors import InvalidInput
from corral.model.rpc import PoolConfig


def _dir(config: PoolConfig, pools_dir: Path) -> StorageBackend:
    from corral.agent.storage.dir import DirPool

    return DirPool(config, pools_dir)


def _btrfs(config: PoolConfig, pools_dir: Path) -> StorageBackend:
    from corral.agent.storage.btrfs import BtrfsPool

    return BtrfsPool(config, pools_dir)


def _fake(config: PoolConfig, pools_dir: Path) -> StorageBackend:
    from corral.agent.storage.fake import FakePool

    return FakePool(config, pools_dir)


STORAGE_DRIVERS: dict[str, Callable[[PoolConfig, Path], StorageBackend]] = {
    "dir": _dir,
    "btrfs": _btrfs,
    "fake": _fake,
}


def make_storage_backend(config: PoolConfig, pools_dir: Path) -> StorageBackend:
    """The backend for one pool; `pools_dir` holds pools that have no path of their own."""
    try:
        factory = STORAGE_DRIVERS[config.driver]
    except KeyError:
        known = ", ".join(sorted(STORAGE_DRIVERS))
        raise InvalidInput(
            f"unknown storage driver {config.driver!r}; choose one of: {known}",
            code="unknown_driver",
            field="spec.driver",
        ) from None
    return factory(config, pools_dir)
