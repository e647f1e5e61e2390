"""The `btrfs` pool: image files on btrfs, thin clones by reflink.

Either on an existing btrfs mount (`config.path`), or on a loop file the pool makes:
`<pools_dir>/<name>.btrfs` (fallocated, so the host cannot run out under it), formatted and
mounted at `<pools_dir>/<name>`. `ensure()` mounts it again after a reboot (no loop device, no
mount) and adopts a loop device that is still attached to the file.

A thin clone in the source's format is a reflink (FICLONE): it shares extents but not fate, so
the source may be deleted while clones live. A source on another filesystem (an image outside
the pool) cannot be reflinked; then the clone is a qcow2 overlay, as in the `dir` pool.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from corral.agent.storage import qemu_img
from corral.agent.storage.base import CloneMethod, StorageCapabilities, choose_clone_method
from corral.agent.storage.files import PARTIAL_SUFFIX, FileVolumePool, VolumeFile, check_pool_path
from corral.agent.storage.host import (
    fstype_of,
    loop_backing_file,
    loop_devices_for,
    mount_at,
    os_error,
    reflink,
    run_command,
)
from corral.agent.storage.reverter import Reverter
from corral.errors import HostError, InvalidInput
from corral.model.rpc import PoolConfig, VolumeFacts

log = logging.getLogger(__name__)

MIN_LOOP_BYTES = 128 * 1024 * 1024  # mkfs.btrfs needs about 110 MiB with its defaults
_NO_REFLINK_ERRNOS = (errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY)
_ADVICE = "check `dmesg` and the pool's loop file"


def parse_btrfs_du(text: str) -> int:
    """Bytes on disk from `btrfs filesystem du -s --raw`: exclusive + shared (counted once)."""
    for line in reversed(text.strip().splitlines()):
        fields = line.split()
        if len(fields) >= 3 and fields[0].isdigit():
            exclusive = int(fields[1]) if fields[1].isdigit() else 0
            shared = int(fields[2]) if fields[2].isdigit() else 0
            return exclusive + shared
    raise ValueError(f"no summary line in btrfs filesystem du output: {text!r}")


class BtrfsPool(FileVolumePool):
    """Image files on btrfs: `config.path` (a btrfs mount or a directory in one), or a loop."""

    driver: str = "btrfs"
    capabilities: StorageCapabilities = StorageCapabilities(thin_clone=True, reflink=True)

    def __init__(self, config: PoolConfig, pools_dir: Path) -> None:
        self.loop_file: Path | None
        if config.path:
            path, self.loop_file = check_pool_path(config.path), None
        else:
            path, self.loop_file = pools_dir / config.name, pools_dir / f"{config.name}.btrfs"
        super().__init__(config, path)
        self.pools_dir = pools_dir

    def __repr__(self) -> str:
        where = f"loop={str(self.loop_file)!r}" if self.loop_file else "on an existing mount"
        return f"BtrfsPool(name={self.name!r}, path={str(self.path)!r}, {where})"

    # -- ensure / destroy -----------------------------------------------------------------------

    def ensure(self) -> None:
        """Loop file, filesystem and mount as needed, then the pool directory."""
        if self.loop_file is None:
            fstype = fstype_of(self.path)
            if fstype != "btrfs":
                raise InvalidInput(
                    f"pool path {self.path} is on {fstype or 'an unknown filesystem'}, not "
                    "btrfs; give a path on a btrfs mount, or no path and a size for a loop file",
                    code="not_btrfs",
                    field="spec.path",
                )
            self._claim_directory()
            return
        with Reverter() as reverter:
            self._make_loop_file(self.loop_file, reverter)
            self._mount(self.loop_file, reverter)
            self._claim_directory()

    def _make_loop_file(self, loop_file: Path, reverter: Reverter) -> None:
        if loop_file.exists():
            return
        size = self.config.size_bytes
        if size is None or size < MIN_LOOP_BYTES:
            raise InvalidInput(
                f"btrfs pool {self.name!r} needs `size_bytes` of at least {MIN_LOOP_BYTES} for "
                "its loop file",
                code="size_required",
                field="spec.size_bytes",
            )
        what = f"making the loop file of btrfs pool {self.name!r}"
        tmp = loop_file.with_name(loop_file.name + PARTIAL_SUFFIX)
        try:
            self.pools_dir.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
            run_command(
                ["mkfs.btrfs", "-q", "--nodiscard", "-L", f"corral-{self.name}", str(tmp)],
                what=what,
                advice=_ADVICE,
                timeout_s=120,
            )
            os.rename(tmp, loop_file)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise os_error(err, what) from err
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        reverter.add(f"remove {loop_file}", lambda: loop_file.unlink(missing_ok=True))

    def _mount(self, loop_file: Path, reverter: Reverter) -> None:
        mounted = mount_at(self.path)
        if mounted is not None:
            if mounted.fstype == "btrfs" and loop_backing_file(mounted.source) == str(
                loop_file.resolve()
            ):
                return
            raise HostError(
                f"{self.path} already has {mounted.fstype} from {mounted.source} mounted on it; "
                f"unmount it, or give the pool another name",
                code="pool_mount_conflict",
            )
        what = f"mounting btrfs pool {self.name!r}"
        if not self.path.exists():
            try:
                self.path.mkdir(parents=True)
            except OSError as err:
                raise os_error(err, what) from err
            reverter.add(f"remove {self.path}", self.path.rmdir)
        attached = loop_devices_for(loop_file)
        if attached:
            device = attached[0]  # still attached (mount failed or was undone by hand): reuse
        else:
            device = run_command(
                ["losetup", "--find", "--show", "--nooverlap", str(loop_file)],
                what=what,
                advice=_ADVICE,
                timeout_s=60,
            ).strip()
            reverter.add(f"detach {device}", lambda: _detach(device, what))
        run_command(
            ["mount", "-t", "btrfs", "-o", "noatime,nodiscard", device, str(self.path)],
            what=what,
            advice=_ADVICE,
            timeout_s=60,
        )
        reverter.add(f"unmount {self.path}", lambda: _unmount(self.path, what))
        log.info("btrfs pool %s: mounted %s (%s) at %s", self.name, loop_file, device, self.path)

    def destroy(self) -> None:
        """Refuse while volumes remain; else unmount, detach, and remove the loop file."""
        if self.loop_file is None:
            if self.path.is_dir():
                self._refuse_if_not_empty()
                self._release_directory()
            return
        what = f"removing btrfs pool {self.name!r}"
        if self.loop_file.exists():
            if mount_at(self.path) is None:
                with Reverter() as reverter:  # mount to see whether volumes remain
                    self._mount(self.loop_file, reverter)
            self._refuse_if_not_empty()
            self._remove_partials()
        if mount_at(self.path) is not None:
            _unmount(self.path, what)
        for device in loop_devices_for(self.loop_file):
            _detach(device, what)
        try:
            self.loop_file.unlink(missing_ok=True)
            self.loop_file.with_name(self.loop_file.name + PARTIAL_SUFFIX).unlink(missing_ok=True)
            if self.path.is_dir():
                self.path.rmdir()
        except OSError as err:
            raise os_error(err, what) from err

    # -- hooks ----------------------------------------------------------------------------------

    def _require_ready(self) -> None:
        if self.loop_file is not None and not os.path.ismount(self.path):
            raise HostError(
                f"btrfs pool {self.name!r} is not mounted at {self.path}; ensure the pool "
                "(it mounts the loop file again)",
                code="pool_not_ready",
            )
        super()._require_ready()

    def _thin_clone(
        self, source: VolumeFile, source_size: int, dest: Path, fmt: str, size: int, what: str
    ) -> None:
        method = choose_clone_method(fmt, source.format, can_reflink=True)
        if method is CloneMethod.REFLINK:
            try:
                reflink(source.path, dest)
            except OSError as err:
                if err.errno not in _NO_REFLINK_ERRNOS:
                    raise os_error(err, what) from err
                dest.unlink(missing_ok=True)
                log.info("pool %s: cannot reflink %s (%s); overlay", self.name, source.path, err)
                method = choose_clone_method(fmt, source.format, can_reflink=False)
            else:
                if size > source_size:
                    qemu_img.resize(dest, fmt, size, what=what)
                return
        self._overlay(source, dest, size, what)

    def _allocated_total(self, volumes: list[VolumeFacts]) -> int:
        if not volumes:
            return 0
        out = run_command(
            ["btrfs", "filesystem", "du", "-s", "--raw", str(self.path)],
            what=f"measuring btrfs pool {self.name!r}",
            advice=_ADVICE,
            timeout_s=120,
        )
        try:
            return parse_btrfs_du(out)
        except ValueError as err:
            raise HostError(f"measuring btrfs pool {self.name!r} failed: {err}") from err


def _unmount(path: Path, what: str) -> None:
    run_command(
        ["umount", str(path)],
        what=what,
        advice="a process still uses files in the pool (a running guest?); stop it first",
        timeout_s=60,
    )


def _detach(device: str, what: str) -> None:
    run_command(["losetup", "-d", device], what=what, advice=_ADVICE, timeout_s=60)
