"""Storage pools on a host: one StorageBackend per pool, drivers `dir`, `btrfs` and `fake`."""

from corral.agent.storage.base import StorageBackend, StorageCapabilities
from corral.agent.storage.registry import STORAGE_DRIVERS, make_storage_backend

__all__ = ["STORAGE_DRIVERS", "StorageBackend", "StorageCapabilities", "make_storage_backend"]
