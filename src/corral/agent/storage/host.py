"""The storage drivers' edge to the host: commands, syscalls, mounts and loop devices.

Foreign errors become Corral errors here, once: a full filesystem (ENOSPC, EDQUOT, or a tool
saying so) is HostError `pool_full`; an image locked by a running QEMU is Conflict
`volume_attached`; anything else is HostError with the tool's last words.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.errors import Conflict, CorralError, HostError

log = logging.getLogger(__name__)

FICLONE = 0x40049409  # _IOW(0x94, 9, int): share all extents of one file with another
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_MARKERS = ("No space left on device", "Disk quota exceeded")
_LOCK_MARKERS = ('Failed to get "write" lock', 'Failed to get shared "write" lock')
NO_SPACE_ADVICE = "free space in the pool (delete volumes) or use a bigger pool"


def classify_failure(stderr: str) -> str | None:
    """The Corral error code a tool's complaint stands for, or None for an ordinary failure."""
    if any(marker in stderr for marker in _NO_SPACE_MARKERS):
        return "pool_full"
    if any(marker in stderr for marker in _LOCK_MARKERS):
        return "volume_attached"
    return None


def _last_words(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(kept[-lines:])


def run_command(
    argv: Sequence[str], *, what: str, advice: str, timeout_s: float | None = None
) -> str:
    """Run a host tool and return its stdout; raise a classified CorralError when it fails.

    `what` names the action and object ("copying volume 'a' in pool 'p'"); `advice` says what
    the user can do about an ordinary failure.
    """
    try:
        result = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError as err:
        raise HostError(
            f"{what} failed: {argv[0]} is not installed; run `make apt` (Debian: qemu-utils, "
            "btrfs-progs, util-linux)",
            code="tool_missing",
        ) from err
    except subprocess.TimeoutExpired as err:
        raise HostError(
            f"{what} failed: {argv[0]} did not finish within {timeout_s:.0f} s; {advice}",
            code="host_timeout",
        ) from err
    except OSError as err:
        raise HostError(f"{what} failed: cannot run {argv[0]}: {err}; {advice}") from err
    if result.returncode == 0:
        return result.stdout
    detail = _last_words(result.stderr or result.stdout) or f"exit status {result.returncode}"
    code = classify_failure(result.stderr)
    if code == "pool_full":
        first = next(line for line in result.stderr.splitlines() if classify_failure(line))
        raise HostError(
            f"{what} failed: no space left ({first.strip()}); {NO_SPACE_ADVICE}", code=code
        )
    if code == "volume_attached":
        raise Conflict(
            f"{what} failed: a running guest has the disk open ({detail}); detach it first, "
            "or change it through the instance while it runs",
            code=code,
        )
    raise HostError(f"{what} failed: {detail}; {advice}", code="command_failed")


def os_error(err: OSError, what: str) -> CorralError:
    """A CorralError for a failed syscall (the caller raises it `from err`)."""
    if err.errno in _NO_SPACE_ERRNOS:
        return HostError(f"{what} failed: no space left; {NO_SPACE_ADVICE}", code="pool_full")
    return HostError(f"{what} failed: {err.strerror or err} ({err.filename or ''})")


# -- files ---------------------------------------------------------------------------------------


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's) data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def reflink(source: Path, dest: Path) -> None:
    """Make `dest` share all of `source`'s extents (FICLONE); OSError as the kernel said it
    (EXDEV across filesystems, EOPNOTSUPP where the filesystem cannot)."""
    with open(source, "rb") as src, open(dest, "wb") as dst:
        fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        os.fsync(dst.fileno())


@dataclass(frozen=True)
class SpaceFacts:
    """Size and use of a filesystem, from statvfs. `used` counts space reserved by the
    filesystem too, so `capacity - used` is what new volumes can still take."""

    capacity: int
    used: int


def space_facts(path: Path) -> SpaceFacts:
    """statvfs of the filesystem holding `path`."""
    st = os.statvfs(path)
    capacity = st.f_blocks * st.f_frsize
    return SpaceFacts(capacity=capacity, used=capacity - st.f_bavail * st.f_frsize)


# -- mounts and loop devices ---------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo, the parts we need."""

    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040, \011, \012, \134
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse /proc/self/mountinfo (see proc(5)); malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        try:
            dash = fields.index("-")
            mounts.append(
                Mount(
                    mount_point=_unescape(fields[4]),
                    fstype=fields[dash + 1],
                    source=_unescape(fields[dash + 2]),
                )
            )
        except (ValueError, IndexError):
            continue
    return mounts


def mount_containing(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount `path` lives on: the last-mounted one with the longest matching prefix."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        inside = path == point or path.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def current_mounts() -> list[Mount]:
    """This process's mounts now."""
    with open("/proc/self/mountinfo") as handle:
        return parse_mountinfo(handle.read())


def mount_at(point: Path) -> Mount | None:
    """What is mounted exactly at `point` (the topmost mount), if anything."""
    wanted = str(point.resolve())  # mountinfo shows resolved paths
    found = [m for m in current_mounts() if m.mount_point == wanted]
    return found[-1] if found else None


def fstype_of(path: Path) -> str | None:
    """Filesystem type of the nearest existing ancestor of `path` (itself included)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    mount = mount_containing(str(probe.resolve()), current_mounts())
    return mount.fstype if mount else None


def loop_devices_for(backing_file: Path, sys_block: Path = Path("/sys/block")) -> list[str]:
    """Loop devices (/dev/loopN) whose backing file is `backing_file`, from sysfs."""
    wanted = str(backing_file.resolve())
    devices = []
    for entry in sorted(sys_block.glob("loop*")):
        try:
            backing = (entry / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue  # not attached
        if backing.removesuffix(" (deleted)") == wanted:
            devices.append(f"/dev/{entry.name}")
    return devices


def loop_backing_file(device: str, sys_block: Path = Path("/sys/block")) -> str | None:
    """The backing file of a loop device, or None when it is not an attached loop device."""
    name = Path(device).name
    try:
        return (sys_block / name / "loop" / "backing_file").read_text().strip()
    except OSError:
        return None
