"""A storage pool that keeps its volumes as records, not files: for fast tests of everything above
the driver. Same contract as `dir` (thin clones are "overlays" that pin their source), state in
one JSON file in the pool directory so a new backend object (an agent restart) sees it.

Sizes are modelled: a qcow2 volume starts with a small metadata allocation, a full copy takes
what its source takes, and a pool of `size_bytes` (default 100 GiB) refuses with `pool_full`
what would not fit. A source image is read only for its size (qcow2 header or file size).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from corral.agent.storage.base import (
    StorageCapabilities,
    check_size,
    check_volume_request,
    choose_clone_method,
    grown_size,
    volume_file_name,
)
from corral.agent.storage.files import MARKER, PARTIAL_SUFFIX, check_pool_path
from corral.agent.storage.host import NO_SPACE_ADVICE
from corral.errors import Conflict, HostError, NotFound
from corral.model.names import validate_name
from corral.model.rpc import PoolConfig, PoolFacts, VolumeFacts, VolumeRequest

FAKE_CAPACITY_BYTES = 100 * 1024**3
QCOW2_METADATA_BYTES = 196_608  # what qemu-img create allocates for a small qcow2
_QCOW2_MAGIC = b"QFI\xfb"


def source_image_size(path: Path) -> tuple[str, int, int]:
    """Format, virtual size and allocated bytes of an image file, without qemu-img."""
    st = path.stat()
    with open(path, "rb") as handle:
        header = handle.read(32)
    if len(header) == 32 and header[:4] == _QCOW2_MAGIC:
        (virtual,) = struct.unpack(">Q", header[24:32])
        return "qcow2", int(virtual), st.st_blocks * 512
    return "raw", -(-st.st_size // 512) * 512, st.st_blocks * 512


class FakePool:
    """Volumes as records in `<pool dir>/.corral-pool.json`; no image files at all."""

    driver: str = "fake"
    capabilities: StorageCapabilities = StorageCapabilities(thin_clone=True)

    def __init__(self, config: PoolConfig, pools_dir: Path) -> None:
        validate_name(config.name, "name")
        self.name = config.name
        self.path = check_pool_path(config.path) if config.path else pools_dir / config.name
        self.capacity = config.size_bytes or FAKE_CAPACITY_BYTES

    def __repr__(self) -> str:
        return f"FakePool(name={self.name!r}, path={str(self.path)!r})"

    # -- state ----------------------------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.path / MARKER

    def _load(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return None
        return data

    def _state(self) -> dict[str, Any]:
        state = self._load()
        if state is None:
            raise HostError(
                f"pool {self.name!r} is not ready at {self.path}; ensure the pool first",
                code="pool_not_ready",
            )
        return state

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.path / f"{MARKER}{PARTIAL_SUFFIX}"
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        os.rename(tmp, self._state_file)

    def _facts(self, name: str, record: dict[str, Any]) -> VolumeFacts:
        return VolumeFacts(
            pool=self.name,
            name=name,
            path=str(self.path / volume_file_name(name, record["format"])),
            format=record["format"],
            virtual_size_bytes=record["virtual_size"],
            allocated_bytes=record["allocated"],
            backing=record["backing"],
        )

    def _record(self, state: dict[str, Any], name: str, field: str = "name") -> dict[str, Any]:
        validate_name(name, field)
        record: dict[str, Any] | None = state["volumes"].get(name)
        if record is None:
            raise NotFound(
                f"volume {name!r} does not exist in pool {self.name!r}",
                code="unknown_volume",
                field=field,
            )
        return record

    def _fake_source(
        self, state: dict[str, Any], req: VolumeRequest
    ) -> tuple[str, str, int, int] | None:
        """Path, format, virtual size and data bytes of the request's source, if any."""
        if req.source_volume is not None:
            record = self._record(state, req.source_volume, "spec.source.volume")
            path = str(self.path / volume_file_name(req.source_volume, record["format"]))
            return path, record["format"], record["virtual_size"], record["data"]
        if req.source_path is not None:
            if not Path(req.source_path).is_file():
                raise NotFound(
                    f"source image {req.source_path} does not exist on this host",
                    code="unknown_image",
                    field="spec.source.image",
                )
            fmt, size, allocated = source_image_size(Path(req.source_path))
            return req.source_path, fmt, size, allocated
        return None

    # -- the StorageBackend API -----------------------------------------------------------------

    def ensure(self) -> None:
        """Make the directory and the state file (idempotent)."""
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        state = self._load()
        if state is not None and state.get("pool") != self.name:
            raise Conflict(
                f"directory {self.path} belongs to pool {state.get('pool')!r}; give this pool "
                "another path",
                code="pool_path_in_use",
            )
        if state is None:
            self._save({"pool": self.name, "driver": "fake", "created_dir": created, "volumes": {}})
        for leftover in self.path.glob(f".*{PARTIAL_SUFFIX}"):  # as a crashed write leaves them
            leftover.unlink(missing_ok=True)

    def facts(self) -> PoolFacts:
        """Modelled capacity; used = allocated."""
        volumes = self.list_volumes()
        allocated = sum(v.allocated_bytes for v in volumes)
        return PoolFacts(
            name=self.name,
            driver=self.driver,
            path=str(self.path),
            capacity_bytes=self.capacity,
            used_bytes=allocated,
            allocated_bytes=allocated,
            provisioned_bytes=sum(v.virtual_size_bytes for v in volumes),
            volumes=len(volumes),
        )

    def destroy(self) -> None:
        """Refuse while volumes remain; drop the state and the directory it made."""
        state = self._load()
        if state is None:
            return
        if state["volumes"]:
            names = ", ".join(repr(n) for n in sorted(state["volumes"])[:5])
            raise Conflict(
                f"pool {self.name!r} still has {len(state['volumes'])} volume(s) ({names}); "
                "delete them first",
                code="pool_not_empty",
            )
        self._state_file.unlink()
        if state.get("created_dir"):
            self.path.rmdir()

    def list_volumes(self) -> list[VolumeFacts]:
        """Every recorded volume, by name."""
        state = self._state()
        return [self._facts(name, state["volumes"][name]) for name in sorted(state["volumes"])]

    def create_volume(self, req: VolumeRequest) -> VolumeFacts:
        """Record a blank volume, a clone (pinning its source) or a copy, if it fits."""
        check_volume_request(req)
        state = self._state()
        existing = state["volumes"].get(req.name)
        if existing is not None:
            if existing["format"] == req.format:
                return self._facts(req.name, existing)
            raise Conflict(
                f"volume {req.name!r} already exists in pool {self.name!r} as {existing['format']}",
                code="volume_exists",
            )
        backing: str | None = None
        source = self._fake_source(state, req)
        if source is None:
            assert req.size_bytes is not None  # check_volume_request made sure
            size, data = req.size_bytes, 0
            needed = QCOW2_METADATA_BYTES if req.format == "qcow2" else 0
        else:
            source_path, source_format, source_size, data = source
            size = grown_size(req.size_bytes, source_size, f"source of {req.name!r}")
            if req.full_copy:  # also from a snapshot tag: the data it held (not modelled apart)
                needed = data + (QCOW2_METADATA_BYTES if req.format == "qcow2" else 0)
            else:
                choose_clone_method(req.format, source_format, can_reflink=False)
                needed, backing = QCOW2_METADATA_BYTES, source_path
        allocated = sum(v["allocated"] for v in state["volumes"].values())
        if allocated + needed > self.capacity:
            raise HostError(
                f"creating volume {req.name!r} in pool {self.name!r} failed: no space left "
                f"(needs {needed} bytes, {self.capacity - allocated} free); {NO_SPACE_ADVICE}",
                code="pool_full",
            )
        record = {
            "format": req.format,
            "virtual_size": size,
            "allocated": needed,
            "data": data,  # bytes the guest would read as written, through the chain
            "backing": backing,
        }
        state["volumes"][req.name] = record
        self._save(state)
        return self._facts(req.name, record)

    def volume_facts(self, name: str) -> VolumeFacts:
        """The recorded volume."""
        return self._facts(name, self._record(self._state(), name))

    def resize_volume(self, name: str, size_bytes: int) -> VolumeFacts:
        """Grow the recorded size; shrinking is refused like everywhere."""
        state = self._state()
        record = self._record(state, name)
        check_size(size_bytes)
        record["virtual_size"] = grown_size(size_bytes, record["virtual_size"], f"volume {name!r}")
        self._save(state)
        return self._facts(name, record)

    def delete_volume(self, name: str) -> None:
        """Forget the volume unless a clone pins it; no-op if absent."""
        validate_name(name, "name")
        state = self._state()
        record = state["volumes"].get(name)
        if record is None:
            return
        path = str(self.path / volume_file_name(name, record["format"]))
        dependents = sorted(n for n, r in state["volumes"].items() if r["backing"] == path)
        if dependents:
            raise Conflict(
                f"volume {name!r} in pool {self.name!r} is the backing file of "
                f"{', '.join(repr(d) for d in dependents)}; delete those clones first, or "
                "replace them with full copies",
                code="volume_in_use",
            )
        del state["volumes"][name]
        self._save(state)

    def volume_path(self, name: str) -> Path:
        """Where the file would be (it is never written)."""
        record = self._record(self._state(), name)
        return self.path / volume_file_name(name, record["format"])
