"""A guest's runtime files under `<runtime_dir>/<name>/`, and the saved launch that outlives us.

The saved runtime (runtime.json) is what lets a restarted agent find its guests again: the pid,
the pid's start time (so a recycled pid is never mistaken for our QEMU), the argv and the accel.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from corral.errors import HostError, InvalidInput

log = logging.getLogger(__name__)

# sun_path is 108 bytes including the terminating NUL.
SUN_PATH_MAX = 107
RUNTIME_FILE = "runtime.json"


@dataclass(frozen=True)
class RuntimePaths:
    """Where one guest's sockets, logs and saved runtime live."""

    dir: Path

    @classmethod
    def for_guest(cls, runtime_dir: Path, name: str) -> RuntimePaths:
        """Paths for guest `name`; the runtime dir is made absolute (QEMU -daemonize does cd /)."""
        return cls(runtime_dir.absolute() / name)

    @property
    def qmp_socket(self) -> Path:
        """QEMU's monitor (QMP) socket; one client at a time: this backend."""
        return self.dir / "qmp.sock"

    @property
    def qga_socket(self) -> Path:
        """The guest agent's virtio-serial port, as a unix socket (one client at a time)."""
        return self.dir / "qga.sock"

    @property
    def console_socket(self) -> Path:
        """The serial console (ttyS0), as a unix socket (one client at a time)."""
        return self.dir / "console.sock"

    @property
    def console_log(self) -> Path:
        """Everything the guest printed on its console, kept with nobody attached."""
        return self.dir / "console.log"

    @property
    def pidfile(self) -> Path:
        """QEMU's pid file (written by QEMU itself)."""
        return self.dir / "qemu.pid"

    @property
    def stderr_log(self) -> Path:
        """QEMU's stderr until it daemonizes (the launch errors)."""
        return self.dir / "stderr.log"

    @property
    def seed_image(self) -> Path:
        """The cloud-init NoCloud seed disk (label `cidata`), written at launch when asked for."""
        return self.dir / "seed.img"

    @property
    def runtime_file(self) -> Path:
        """The saved runtime, see SavedRuntime."""
        return self.dir / RUNTIME_FILE

    def sockets(self) -> list[Path]:
        """All unix sockets of the guest."""
        return [self.qmp_socket, self.qga_socket, self.console_socket]

    def check_socket_lengths(self) -> None:
        """Refuse paths that do not fit a unix socket address (sun_path, 107 bytes)."""
        for sock in self.sockets():
            length = len(os.fsencode(sock))
            if length > SUN_PATH_MAX:
                raise InvalidInput(
                    f"socket path {sock} is {length} bytes, more than the {SUN_PATH_MAX} a unix "
                    "socket allows: use a shorter guest name or a shorter runtime dir",
                    code="path_too_long",
                    field="name",
                )


class SavedRuntime(BaseModel):
    """What a running guest's agent must remember across its own restart."""

    name: str
    uid: str
    pid: int
    pid_start_ticks: int  # /proc/PID/stat field 22: guards against a recycled pid
    argv: list[str]
    accel: str
    machine: str
    started_at: datetime
    exit_reason: str | None = None  # set once the process is known to have gone


def save_runtime(paths: RuntimePaths, runtime: SavedRuntime) -> None:
    """Write runtime.json atomically (tmp file + fsync + rename)."""
    data = runtime.model_dump_json(indent=1).encode()
    fd, tmp = tempfile.mkstemp(prefix=".runtime-", dir=paths.dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, paths.runtime_file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_runtime(paths: RuntimePaths) -> SavedRuntime | None:
    """The saved runtime of a guest, or None when there is none (or it is unreadable)."""
    try:
        raw = paths.runtime_file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise HostError(f"cannot read {paths.runtime_file}: {err}") from err
    try:
        return SavedRuntime.model_validate_json(raw)
    except (ValidationError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable %s: %s", paths.runtime_file, err)
        return None


def load_all_runtimes(runtime_dir: Path) -> list[tuple[RuntimePaths, SavedRuntime]]:
    """Every guest under `runtime_dir` with a readable runtime.json, sorted by name."""
    try:
        entries = sorted(runtime_dir.iterdir())
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        if not entry.is_dir():
            continue
        paths = RuntimePaths.for_guest(runtime_dir, entry.name)
        runtime = load_runtime(paths)
        if runtime is not None:
            found.append((paths, runtime))
    return found


def tail_lines(path: Path, lines: int) -> str:
    """The last `lines` lines of a text file ("" when it does not exist)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 16384))
            data = handle.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])
