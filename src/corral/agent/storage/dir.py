"""The `dir` pool: qcow2/raw files in a directory, made with qemu-img.

Thin clones are qcow2 overlays with an absolute backing path (the source must stay, so deleting
it is refused while clones exist); full copies are `qemu-img convert` (chains flattened).
Capacity and use come from the directory's filesystem.
"""

from __future__ import annotations

from pathlib import Path

from corral.agent.storage.base import StorageCapabilities
from corral.agent.storage.files import FileVolumePool, check_pool_path
from corral.model.rpc import PoolConfig


class DirPool(FileVolumePool):
    """A directory of image files: `config.path`, or `<pools_dir>/<name>`."""

    driver: str = "dir"
    capabilities: StorageCapabilities = StorageCapabilities(thin_clone=True)

    def __init__(self, config: PoolConfig, pools_dir: Path) -> None:
        path = check_pool_path(config.path) if config.path else pools_dir / config.name
        super().__init__(config, path)

    def ensure(self) -> None:
        """Make the directory (or adopt an existing one) and clear unfinished volume files."""
        self._claim_directory()

    def destroy(self) -> None:
        """Refuse while volumes remain; remove the marker, and the directory if it made it."""
        if not self.path.is_dir():
            return
        self._refuse_if_not_empty()
        self._release_directory()
