"""Write an initramfs as a "newc" cpio archive, in memory order we control.

Why not the `cpio` command: it copies owners, times and inode numbers from the build
host, needs root to put /dev/console in the archive, and so gives a different digest per
build. Here every entry is owned by root, dated 0 and numbered in path order, so the same
inputs give the same bytes, and device nodes need no privilege.
"""

from __future__ import annotations

import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from corral.errors import ImageBuildError

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


class Writable(Protocol):
    """Anything with write(bytes): a file, a GzipFile, a pipe to zstd."""

    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. `source` (a host file) or `data` gives a regular file's bytes."""

    path: str  # inside the archive, no leading slash
    mode: int  # full st_mode: type bits and permissions
    data: bytes = b""
    source: Path | None = None
    rdev: tuple[int, int] = (0, 0)

    def content(self) -> bytes:
        """The member's bytes (read from `source` only now, to keep memory low)."""
        if self.source is not None:
            return self.source.read_bytes()
        return self.data


def _clean(path: str) -> str:
    cleaned = posixpath.normpath("/" + path).lstrip("/")
    if not cleaned or cleaned == ".":
        raise ImageBuildError(f"invalid archive path {path!r}")
    return cleaned


class CpioArchive:
    """An initramfs being assembled; later additions replace earlier ones at the same path."""

    def __init__(self) -> None:
        self._entries: dict[str, CpioEntry] = {}

    def __contains__(self, path: str) -> bool:
        return _clean(path) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, path: str) -> CpioEntry:
        """The entry at `path` (KeyError when absent)."""
        return self._entries[_clean(path)]

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        """Add a directory (and its parents)."""
        self._put(CpioEntry(_clean(path), stat.S_IFDIR | mode))

    def add_file(
        self, path: str, *, data: bytes | None = None, source: Path | None = None, mode: int = 0o644
    ) -> None:
        """Add a regular file from bytes or from a host file (read when the archive is written)."""
        if (data is None) == (source is None):
            raise ValueError("give exactly one of data or source")
        self._put(CpioEntry(_clean(path), stat.S_IFREG | mode, data=data or b"", source=source))

    def add_symlink(self, path: str, target: str) -> None:
        """Add a symbolic link pointing at `target` (kept verbatim)."""
        self._put(CpioEntry(_clean(path), stat.S_IFLNK | 0o777, data=target.encode()))

    def add_char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        """Add a character device node, e.g. /dev/console (5, 1), which the kernel opens first."""
        self._put(CpioEntry(_clean(path), stat.S_IFCHR | mode, rdev=(major, minor)))

    def _put(self, entry: CpioEntry) -> None:
        parent = posixpath.dirname(entry.path)
        if parent and not (parent in self._entries and stat.S_ISDIR(self._entries[parent].mode)):
            self.add_dir(parent)
        self._entries[entry.path] = entry

    def paths(self) -> list[str]:
        """Member paths in the order they will be written (parents before children)."""
        return sorted(self._entries, key=lambda p: p.split("/"))

    def write(self, out: Writable) -> int:
        """Write the archive with its trailer; return the number of bytes written."""
        written = 0
        for ino, path in enumerate(self.paths(), start=1):
            entry = self._entries[path]
            written += _write_member(out, ino, entry.path, entry.mode, entry.content(), entry.rdev)
        written += _write_member(out, 0, TRAILER, 0, b"", (0, 0), nlink=1)
        return written


def _write_member(
    out: Writable,
    ino: int,
    name: str,
    mode: int,
    data: bytes,
    rdev: tuple[int, int],
    nlink: int | None = None,
) -> int:
    encoded = name.encode() + b"\0"
    links = nlink if nlink is not None else (2 if stat.S_ISDIR(mode) else 1)
    fields = (ino, mode, 0, 0, links, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)
    head = header + encoded
    chunks = [head, _pad(len(head)), data, _pad(len(data))]
    for chunk in chunks:
        out.write(chunk)
    return sum(len(c) for c in chunks)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)
