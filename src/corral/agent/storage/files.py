"""Volumes as image files in a directory: what the `dir` and `btrfs` drivers share.

A volume is `<pool dir>/<name>.<format>`. A new volume is written under a hidden temporary name
in the same directory and renamed when complete, so a volume file only ever appears whole; a
failure (full disk, qemu-img error, crash) leaves a temporary file at most, which is removed at
once or by the next `ensure()`. The pool directory holds a marker (`.corral-pool.json`) naming
its pool, so two pools never share a directory and `destroy` knows what it made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from corral.agent.storage import qemu_img
from corral.agent.storage.base import (
    FORMATS,
    CloneMethod,
    StorageCapabilities,
    check_size,
    check_volume_request,
    choose_clone_method,
    grown_size,
    volume_file_name,
)
from corral.agent.storage.host import fsync_path, os_error, space_facts
from corral.errors import Conflict, HostError, InvalidInput, NotFound
from corral.model.names import name_problem, validate_name
from corral.model.rpc import PoolConfig, PoolFacts, VolumeFacts, VolumeRequest

log = logging.getLogger(__name__)

MARKER = ".corral-pool.json"
PARTIAL_SUFFIX = ".partial"


def check_pool_path(path: str) -> Path:
    """A pool path from the control plane must be absolute and plain."""
    if (
        not os.path.isabs(path)
        or any(part == ".." for part in path.split("/"))
        or any(ord(c) < 32 or ord(c) == 127 for c in path)
    ):
        raise InvalidInput(
            f"pool path {path!r} must be absolute, without '..' or control characters",
            code="invalid_path",
            field="spec.path",
        )
    return Path(path)


@dataclass(frozen=True)
class VolumeFile:
    """A volume's file and format."""

    name: str
    path: Path
    format: str


@contextlib.contextmanager
def staged_file(final: Path, what: str) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success flush it and rename it to `final`,
    on any failure remove it. The caller made sure `final` does not exist."""
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    try:
        yield tmp
        fsync_path(tmp)
        os.rename(tmp, final)
        fsync_path(final.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise os_error(err, what) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FileVolumePool:
    """A pool whose volumes are qcow2/raw files in `path`; subclasses add how the directory
    comes to exist (`ensure`/`destroy`) and how thin clones share data (`_thin_clone`)."""

    driver: str = "files"
    capabilities: StorageCapabilities = StorageCapabilities()

    def __init__(self, config: PoolConfig, path: Path) -> None:
        validate_name(config.name, "name")
        self.name = config.name
        self.config = config
        self.path = path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, path={str(self.path)!r})"

    # -- hooks ----------------------------------------------------------------------------------

    def _require_ready(self) -> None:
        """Raise unless volumes can be read and written now."""
        if not (self.path / MARKER).is_file():
            raise HostError(
                f"pool {self.name!r} is not ready at {self.path}; ensure the pool first",
                code="pool_not_ready",
            )

    def _thin_clone(
        self, source: VolumeFile, source_size: int, dest: Path, fmt: str, size: int, what: str
    ) -> None:
        """Write a thin clone of `source` (`source_size` bytes), grown to `size`, at `dest`."""
        method = choose_clone_method(fmt, source.format, can_reflink=False)
        assert method is CloneMethod.BACKING
        self._overlay(source, dest, size, what)

    def _allocated_total(self, volumes: list[VolumeFacts]) -> int:
        """Bytes the pool's volumes occupy; shared data counted once."""
        return sum(v.allocated_bytes for v in volumes)

    # -- directory and marker -------------------------------------------------------------------

    def _read_marker(self) -> dict[str, object] | None:
        try:
            data = json.loads((self.path / MARKER).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise HostError(
                f"pool {self.name!r}: cannot read {self.path / MARKER}: {err}; remove the file "
                "if the directory belongs to no pool",
                code="pool_marker_unreadable",
            ) from err
        return data if isinstance(data, dict) else None

    def _claim_directory(self) -> None:
        """Make (or adopt) the pool directory and mark it as this pool's."""
        what = f"preparing directory {self.path} of pool {self.name!r}"
        created = False
        try:
            if not self.path.exists():
                self.path.mkdir(parents=True)
                created = True
            elif not self.path.is_dir():
                raise InvalidInput(
                    f"pool path {self.path} exists and is not a directory; choose another path",
                    code="invalid_path",
                    field="spec.path",
                )
            marker = self._read_marker()
            if marker is not None and marker.get("pool") != self.name:
                raise Conflict(
                    f"directory {self.path} belongs to pool {marker.get('pool')!r}; "
                    "give this pool another path",
                    code="pool_path_in_use",
                )
            if marker is None:
                tmp = self.path / f"{MARKER}{PARTIAL_SUFFIX}"
                record = {"pool": self.name, "driver": self.driver, "created_dir": created}
                tmp.write_text(json.dumps(record) + "\n")
                os.rename(tmp, self.path / MARKER)
        except OSError as err:
            raise os_error(err, what) from err
        self._remove_partials()

    def _remove_partials(self) -> None:
        """Delete temporary files of volume creations that never finished (crash, kill -9)."""
        for leftover in self.path.glob(f".*{PARTIAL_SUFFIX}"):
            log.info("pool %s: removing unfinished %s", self.name, leftover.name)
            leftover.unlink(missing_ok=True)

    def _release_directory(self) -> None:
        """Undo `_claim_directory`: drop the marker, and the directory if this pool made it."""
        marker = self._read_marker() or {}
        self._remove_partials()
        (self.path / MARKER).unlink(missing_ok=True)
        if marker.get("created_dir"):
            try:
                self.path.rmdir()
            except OSError as err:
                log.warning("pool %s: leaving %s in place: %s", self.name, self.path, err)

    def _refuse_if_not_empty(self) -> None:
        names = [v.name for v in self._volume_files()]
        if names:
            shown = ", ".join(repr(n) for n in names[:5]) + (" ..." if len(names) > 5 else "")
            raise Conflict(
                f"pool {self.name!r} still has {len(names)} volume(s) ({shown}); delete them first",
                code="pool_not_empty",
            )

    # -- volumes --------------------------------------------------------------------------------

    def _volume_files(self) -> list[VolumeFile]:
        found = []
        try:
            entries = sorted(self.path.iterdir())
        except FileNotFoundError:
            return []
        for entry in entries:
            stem, dot, fmt = entry.name.rpartition(".")
            if dot and fmt in FORMATS and name_problem(stem) is None and entry.is_file():
                found.append(VolumeFile(stem, entry, fmt))
        return found

    def _find(self, name: str) -> VolumeFile | None:
        for fmt in FORMATS:
            path = self.path / volume_file_name(name, fmt)
            if path.is_file():
                return VolumeFile(name, path, fmt)
        return None

    def _require(self, name: str, field: str = "name") -> VolumeFile:
        validate_name(name, field)
        found = self._find(name)
        if found is None:
            raise NotFound(
                f"volume {name!r} does not exist in pool {self.name!r}",
                code="unknown_volume",
                field=field,
            )
        return found

    def _facts_of(self, volume: VolumeFile) -> VolumeFacts:
        info = qemu_img.info(
            volume.path, volume.format, what=f"reading volume {volume.name!r} in {self.name!r}"
        )
        return VolumeFacts(
            pool=self.name,
            name=volume.name,
            path=str(volume.path),
            format=volume.format,
            virtual_size_bytes=info.virtual_size,
            allocated_bytes=info.actual_size,
            backing=info.backing,
        )

    def _dependents(self, volume: VolumeFile) -> list[str]:
        """Volumes in this pool whose backing file is `volume`."""
        dependents = []
        for other in self._volume_files():
            if other.format != "qcow2" or other.name == volume.name:
                continue
            backing = self._facts_of(other).backing
            if backing is None:
                continue
            with contextlib.suppress(OSError):
                if os.path.samefile(backing, volume.path):
                    dependents.append(other.name)
        return dependents

    def _overlay(self, source: VolumeFile, dest: Path, size: int, what: str) -> None:
        qemu_img.create(
            dest,
            "qcow2",
            size,
            what=what,
            backing=source.path.absolute(),
            backing_format=source.format,
        )

    def _source_of(self, req: VolumeRequest) -> tuple[VolumeFile, int] | None:
        """The request's source as a file, and its virtual size; None for a blank volume."""
        if req.source_volume is not None:
            source = self._require(req.source_volume, "spec.source.volume")
            # Without -U this fails while a running guest writes the source: a clone or copy
            # of a disk in use would catch it half-written. A snapshot of it never changes.
            info = qemu_img.info(
                source.path,
                source.format,
                what=f"reading source volume {source.name!r} in pool {self.name!r}",
                force_share=req.source_snapshot_tag is not None,
            )
            return source, info.virtual_size
        if req.source_path is not None:
            path = Path(req.source_path)
            if not path.is_file():
                raise NotFound(
                    f"source image {req.source_path} does not exist on this host; rebuild or "
                    "re-import the image",
                    code="unknown_image",
                    field="spec.source.image",
                )
            info = qemu_img.info(path, None, what=f"reading source image {path}")
            if info.format not in FORMATS:
                raise InvalidInput(
                    f"source image {path} is in {info.format!r} format; only "
                    f"{', '.join(FORMATS)} images can be volume sources",
                    code="not_a_disk_image",
                    field="spec.source.image",
                )
            return VolumeFile(path.stem, path, info.format), info.virtual_size
        return None

    # -- the StorageBackend API -----------------------------------------------------------------

    def facts(self) -> PoolFacts:
        """Capacity and use from statvfs; allocation and provisioned size from the volumes."""
        self._require_ready()
        volumes = self.list_volumes()
        space = space_facts(self.path)
        return PoolFacts(
            name=self.name,
            driver=self.driver,
            path=str(self.path),
            capacity_bytes=space.capacity,
            used_bytes=space.used,
            allocated_bytes=self._allocated_total(volumes),
            provisioned_bytes=sum(v.virtual_size_bytes for v in volumes),
            volumes=len(volumes),
        )

    def list_volumes(self) -> list[VolumeFacts]:
        """Every volume file in the pool directory."""
        self._require_ready()
        return [self._facts_of(volume) for volume in self._volume_files()]

    def create_volume(self, req: VolumeRequest) -> VolumeFacts:
        """Blank, thin clone or full copy, written under a temporary name and renamed."""
        check_volume_request(req)
        self._require_ready()
        existing = self._find(req.name)
        if existing is not None:
            if existing.format == req.format:
                return self._facts_of(existing)  # a retried request: it was done already
            raise Conflict(
                f"volume {req.name!r} already exists in pool {self.name!r} as {existing.format}",
                code="volume_exists",
            )
        final = self.path / volume_file_name(req.name, req.format)
        what = f"creating volume {req.name!r} in pool {self.name!r}"
        source = self._source_of(req)
        with staged_file(final, what) as tmp:
            if source is None:
                assert req.size_bytes is not None  # check_volume_request made sure
                qemu_img.create(tmp, req.format, req.size_bytes, what=what)
            else:
                source_file, source_size = source
                size = grown_size(req.size_bytes, source_size, f"source of {req.name!r}")
                if req.full_copy:
                    qemu_img.convert(
                        source_file.path,
                        source_file.format,
                        tmp,
                        req.format,
                        what=what,
                        snapshot_tag=req.source_snapshot_tag,
                    )
                    if req.source_snapshot_tag is not None:
                        # the disk may have grown since the snapshot: its own size counts
                        source_size = qemu_img.info(tmp, req.format, what=what).virtual_size
                        size = req.size_bytes or source_size
                    if size > source_size:
                        qemu_img.resize(tmp, req.format, size, what=what)
                else:
                    self._thin_clone(source_file, source_size, tmp, req.format, size, what)
        return self.volume_facts(req.name)

    def volume_facts(self, name: str) -> VolumeFacts:
        """qemu-img's view of one volume."""
        self._require_ready()
        return self._facts_of(self._require(name))

    def resize_volume(self, name: str, size_bytes: int) -> VolumeFacts:
        """Grow with qemu-img resize; a running guest's lock makes it Conflict `volume_attached`."""
        self._require_ready()
        volume = self._require(name)
        current = self._facts_of(volume)
        check_size(size_bytes)
        size = grown_size(size_bytes, current.virtual_size_bytes, f"volume {name!r}")
        if size == current.virtual_size_bytes:
            return current
        qemu_img.resize(
            volume.path, volume.format, size, what=f"resizing volume {name!r} in {self.name!r}"
        )
        return self._facts_of(volume)

    def delete_volume(self, name: str) -> None:
        """Unlink the file, unless a clone or a running guest still needs it."""
        validate_name(name, "name")
        self._require_ready()
        volume = self._find(name)
        if volume is None:
            return
        dependents = self._dependents(volume)
        if dependents:
            raise Conflict(
                f"volume {name!r} in pool {self.name!r} is the backing file of "
                f"{', '.join(repr(d) for d in dependents)}; delete those clones first, or "
                "replace them with full copies",
                code="volume_in_use",
            )
        # Without -U, qemu-img cannot open an image a running QEMU holds: a cheap lock probe.
        qemu_img.info(
            volume.path,
            volume.format,
            what=f"deleting volume {name!r} in pool {self.name!r}",
            force_share=False,
        )
        try:
            volume.path.unlink(missing_ok=True)
            fsync_path(self.path)
        except OSError as err:
            raise os_error(err, f"deleting volume {name!r} in pool {self.name!r}") from err

    def volume_path(self, name: str) -> Path:
        """The file QEMU opens for this volume."""
        return self._require(name).path
