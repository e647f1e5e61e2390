"""The initramfs writer makes a valid newc archive, byte-identical for identical input."""

from __future__ import annotations

import io
import stat
import subprocess
from pathlib import Path

from corral.images.cpio import CpioArchive


def read_newc(blob: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """Parse a newc archive: (name, mode, data, rdev) per member, trailer excluded."""
    members: list[tuple[str, int, bytes, tuple[int, int]]] = []
    at = 0
    while True:
        header = blob[at : at + 110]
        assert header[:6] == b"070701", f"bad magic at {at}"
        fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        mode, size, rdev, namesize = fields[1], fields[6], (fields[9], fields[10]), fields[11]
        name_end = at + 110 + namesize
        name = blob[at + 110 : name_end - 1].decode()
        data_at = name_end + (-name_end % 4)
        data = blob[data_at : data_at + size]
        at = data_at + size + (-(data_at + size) % 4)
        if name == "TRAILER!!!":
            assert at == len(blob)
            return members
        members.append((name, mode, data, rdev))


def sample_archive(tmp_path: Path) -> CpioArchive:
    host_file = tmp_path / "qemu-ga"
    host_file.write_bytes(b"\x7fELF fake agent")
    archive = CpioArchive()
    archive.add_file("init", data=b"#!/bin/sh\n", mode=0o755)
    archive.add_file("/usr/sbin/qemu-ga", source=host_file, mode=0o755)
    archive.add_symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    archive.add_char_device("dev/console", 5, 1)
    archive.add_dir("tmp", 0o1777)
    return archive


def test_members_round_trip_with_parents_first(tmp_path: Path) -> None:
    out = io.BytesIO()
    sample_archive(tmp_path).write(out)
    members = {name: (mode, data, rdev) for name, mode, data, rdev in read_newc(out.getvalue())}
    names = list(members)
    for name in names:  # every parent directory precedes its children
        parent = name.rpartition("/")[0]
        assert not parent or names.index(parent) < names.index(name)
    assert members["init"][:2] == (stat.S_IFREG | 0o755, b"#!/bin/sh\n")
    assert members["usr/sbin/qemu-ga"][1] == b"\x7fELF fake agent"
    assert stat.S_ISDIR(members["usr/sbin"][0]) and stat.S_ISDIR(members["lib64"][0])
    assert members["lib64/ld-linux-x86-64.so.2"][:2] == (
        stat.S_IFLNK | 0o777,
        b"/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    )
    assert stat.S_ISCHR(members["dev/console"][0]) and members["dev/console"][2] == (5, 1)
    assert members["tmp"][0] == stat.S_IFDIR | 0o1777


def test_same_input_gives_same_bytes(tmp_path: Path) -> None:
    first, second = io.BytesIO(), io.BytesIO()
    sample_archive(tmp_path).write(first)
    sample_archive(tmp_path).write(second)
    assert first.getvalue() == second.getvalue()


def test_later_entry_replaces_earlier_at_same_path() -> None:
    archive = CpioArchive()
    archive.add_symlink("sbin/init", "/bin/busybox")
    archive.add_file("sbin/init", data=b"ours")
    assert archive.entry("/sbin/init").data == b"ours"
    assert archive.paths() == ["sbin", "sbin/init"]


def test_gnu_cpio_lists_the_archive(tmp_path: Path) -> None:
    out = io.BytesIO()
    sample_archive(tmp_path).write(out)
    listing = subprocess.run(
        ["cpio", "-it", "--quiet"], input=out.getvalue(), capture_output=True, check=True
    ).stdout.decode()
    assert listing.split() == sample_archive(tmp_path).paths()
