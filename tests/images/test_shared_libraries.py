"""ELF NEEDED parsing and the library closure copy exactly what the loader will open."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from corral.errors import ImageBuildError
from corral.images.elf import parse_elf, read_elf
from corral.images.sharedlibs import library_closure, walk_path
from tests.images.elf_factory import make_elf

HOST_BINARY = Path("/bin/ls")


def readelf_needed(path: Path) -> list[str]:
    out = subprocess.run(["readelf", "-dW", str(path)], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


@pytest.mark.parametrize("binary", ["/bin/ls", "/bin/sh", "/usr/bin/qemu-system-x86_64"])
def test_needed_matches_readelf_on_host_binaries(binary: str) -> None:
    path = Path(os.path.realpath(binary))
    assert list(read_elf(path).needed) == readelf_needed(path)


def test_host_binary_closure_holds_loader_and_libc_all_present() -> None:
    closure = library_closure(Path("/"), [str(HOST_BINARY)])
    info = read_elf(HOST_BINARY)
    assert info.interpreter is not None and closure[0] == info.interpreter
    assert any(p.endswith("/libc.so.6") for p in closure)
    assert all(Path(p).exists() for p in closure)
    # Every NEEDED of every object in the closure is itself in the closure.
    names = {Path(p).name for p in closure}
    for lib in closure:
        assert set(read_elf(Path(os.path.realpath(lib))).needed) <= names


def write(root: Path, path: str, data: bytes) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def link(root: Path, path: str, target: str) -> None:
    at = root / path.lstrip("/")
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(target)


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    """A Debian-shaped root: absolute loader link, versioned sonames, an $ORIGIN runpath."""
    write(tmp_path, "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", make_elf())
    link(tmp_path, "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    write(tmp_path, "/lib/x86_64-linux-gnu/libc.so.6", make_elf(needed=["ld-linux-x86-64.so.2"]))
    write(
        tmp_path,
        "/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0.7400.6",
        make_elf(needed=["libc.so.6"]),
    )
    link(tmp_path, "/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0", "libglib-2.0.so.0.7400.6")
    write(tmp_path, "/opt/app/lib/libprivate.so", make_elf(needed=["libglib-2.0.so.0"]))
    # A 32-bit library of the same name earlier in the search path must be skipped.
    write(tmp_path, "/opt/app/lib32/libc.so.6", make_elf(elf_class=32, machine=3))
    write(
        tmp_path,
        "/opt/app/bin/app",
        make_elf(
            interpreter="/lib64/ld-linux-x86-64.so.2",
            needed=["libprivate.so", "libc.so.6"],
            runpath=["$ORIGIN/../lib32", "$ORIGIN/../lib"],
        ),
    )
    return tmp_path


def test_closure_follows_runpath_symlinks_and_skips_other_classes(staging: Path) -> None:
    assert library_closure(staging, ["/opt/app/bin/app"]) == [
        "/lib64/ld-linux-x86-64.so.2",
        "/opt/app/lib/libprivate.so",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0",
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    ]


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        (
            "/lib64/ld-linux-x86-64.so.2",  # absolute link: re-rooted, never the host's file
            [
                ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
                ("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", None),
            ],
        ),
        (
            "/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0",  # relative link
            [
                ("/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0", "libglib-2.0.so.0.7400.6"),
                ("/usr/lib/x86_64-linux-gnu/libglib-2.0.so.0.7400.6", None),
            ],
        ),
        ("/opt/app/bin/app", [("/opt/app/bin/app", None)]),
    ],
)
def test_walk_path_records_each_symlink_hop(
    staging: Path, path: str, steps: list[tuple[str, str | None]]
) -> None:
    assert [(s.path, s.link_target) for s in walk_path(staging, path)] == steps


def test_symlinked_directory_is_walked_inside_the_root(staging: Path) -> None:
    link(staging, "/usr/lib64", "/lib64")
    steps = walk_path(staging, "/usr/lib64/ld-linux-x86-64.so.2")
    assert [s.path for s in steps] == [
        "/usr/lib64",
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    ]


def test_missing_library_names_the_soname(staging: Path) -> None:
    write(staging, "/bin/broken", make_elf(needed=["libnowhere.so.1"]))
    with pytest.raises(ImageBuildError, match=r"libnowhere\.so\.1"):
        library_closure(staging, ["/bin/broken"])


def test_symlink_loop_is_reported(tmp_path: Path) -> None:
    link(tmp_path, "/a", "/b")
    link(tmp_path, "/b", "/a")
    with pytest.raises(ImageBuildError, match="loop"):
        walk_path(tmp_path, "/a")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ((), (), (), None)),
        ({"needed": ["libc.so.6"]}, (("libc.so.6",), (), (), None)),
        (
            {"needed": ["a.so", "b.so"], "rpath": ["/x", "/y"]},
            (("a.so", "b.so"), ("/x", "/y"), (), None),
        ),
        ({"runpath": ["$ORIGIN"], "interpreter": "/ld.so"}, ((), (), ("$ORIGIN",), "/ld.so")),
    ],
)
def test_dynamic_section_is_parsed(kwargs: dict[str, object], expected: tuple[object, ...]) -> None:
    info = parse_elf(make_elf(**kwargs))  # type: ignore[arg-type]
    assert (info.needed, info.rpath, info.runpath, info.interpreter) == expected


def test_non_elf_input_is_refused() -> None:
    with pytest.raises(ImageBuildError, match="not an ELF"):
        parse_elf(b"#!/bin/sh\necho hi\n" * 10)
