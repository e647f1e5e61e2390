"""Find every shared library a dynamic executable needs, inside an unpacked root.

The root is a staging tree of extracted .debs (or `/` in tests), so every lookup is done the
way the guest's loader will do it, but chroot-style: absolute symlinks (Debian's
/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...) point back into the root, never
into the host. Search order follows glibc: DT_RPATH (only without DT_RUNPATH), DT_RUNPATH,
then the multiarch system directories. There is no ld.so.cache in the guest, so the default
directories are the only fallback, just as they will be at run time.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from corral.errors import ImageBuildError
from corral.images.elf import ELFCLASS64, MULTIARCH_TRIPLETS, ElfInfo, read_elf

MAX_SYMLINK_HOPS = 40


@dataclass(frozen=True)
class PathStep:
    """One piece of a path as found in the root: a symlink (with its target) or the file."""

    path: str  # absolute, as seen inside the root
    link_target: str | None  # None for the final regular file


def default_library_dirs(info: ElfInfo) -> tuple[str, ...]:
    """The loader's built-in search path for this kind of ELF on Debian."""
    dirs: list[str] = []
    triplet = MULTIARCH_TRIPLETS.get(info.machine)
    if triplet:
        dirs += [f"/lib/{triplet}", f"/usr/lib/{triplet}"]
    if info.elf_class == ELFCLASS64:
        dirs += ["/lib64", "/usr/lib64"]
    dirs += ["/lib", "/usr/lib"]
    return tuple(dirs)


def walk_path(root: Path, path: str) -> list[PathStep]:
    """Resolve `path` inside `root` like a chroot would, recording each symlink hop.

    The last step is the real file. Raises ImageBuildError for a missing path or a loop.
    """
    steps: list[PathStep] = []
    pending = [p for p in path.split("/") if p]
    resolved = "/"
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = posixpath.dirname(resolved.rstrip("/")) or "/"
            continue
        candidate = posixpath.join(resolved, part)
        host = _host_path(root, candidate)
        if os.path.islink(host):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise ImageBuildError(f"symlink loop at {candidate} inside {root}")
            target = os.readlink(host)
            steps.append(PathStep(candidate, target))
            base = "/" if target.startswith("/") else resolved
            pending = [p for p in target.split("/") if p] + pending
            resolved = base
            continue
        if not os.path.lexists(host):
            raise ImageBuildError(f"{path} is missing inside {root} (no {candidate})")
        resolved = candidate
    if not os.path.isfile(_host_path(root, resolved)):
        raise ImageBuildError(f"{path} inside {root} is not a regular file")
    steps.append(PathStep(resolved, None))
    return steps


def real_path(root: Path, path: str) -> str:
    """The root-relative absolute path `path` finally points at."""
    return walk_path(root, path)[-1].path


def _host_path(root: Path, inside: str) -> str:
    return os.path.join(root, inside.lstrip("/"))


def find_library(
    root: Path, soname: str, requester: ElfInfo, requester_dir: str, extra_dirs: Iterable[str]
) -> str | None:
    """Find `soname` for an object in `requester_dir`; None when no compatible file exists.

    `extra_dirs` is the DT_RPATH inherited from the objects that loaded this one.
    """
    if "/" in soname:
        return soname if os.path.lexists(_host_path(root, soname)) else None
    search: list[str] = []
    if not requester.runpath:  # glibc ignores every DT_RPATH once the object has DT_RUNPATH
        search += [*requester.rpath, *extra_dirs]
    search += requester.runpath
    search += default_library_dirs(requester)
    for directory in search:
        # requester_dir is already resolved, so folding ".." lexically is exact here.
        directory = directory.replace("${ORIGIN}", requester_dir).replace("$ORIGIN", requester_dir)
        candidate = posixpath.normpath(posixpath.join(directory, soname))
        if not os.path.lexists(_host_path(root, candidate)):
            continue
        try:
            info = read_elf(Path(_host_path(root, real_path(root, candidate))))
        except ImageBuildError:
            continue  # a dangling link or a non-ELF file: the loader would skip it too
        if info.compatible_with(requester):
            return candidate
    return None


def library_closure(root: Path, executables: Iterable[str]) -> list[str]:
    """Every file the loader will open to start `executables`: interpreters and libraries.

    Paths are absolute inside `root`, as the loader looks them up (so a symlink such as
    /lib64/ld-linux-x86-64.so.2 is kept as the path; see walk_path for its target).
    Raises ImageBuildError naming the first library that cannot be found.
    """
    found: list[str] = []
    seen: set[str] = set()
    queue: list[tuple[str, tuple[str, ...]]] = [(exe, ()) for exe in executables]
    visited_objects: set[str] = set()
    while queue:
        obj, inherited_rpath = queue.pop(0)
        real = real_path(root, obj)
        if real in visited_objects:
            continue
        visited_objects.add(real)
        info = read_elf(Path(_host_path(root, real)))
        if info.interpreter and info.interpreter not in seen:
            if not os.path.lexists(_host_path(root, info.interpreter)):
                raise ImageBuildError(f"{obj} needs the loader {info.interpreter}, not in {root}")
            seen.add(info.interpreter)
            found.append(info.interpreter)
        # An executable's DT_RPATH also applies to the libraries it pulls in (not RUNPATH).
        rpath = inherited_rpath + (() if info.runpath else info.rpath)
        for soname in info.needed:
            lib = find_library(root, soname, info, posixpath.dirname(real), inherited_rpath)
            if lib is None:
                raise ImageBuildError(
                    f"{obj} needs {soname}, which no unpacked package provides; "
                    "add the package that ships it to the recipe"
                )
            if lib not in seen:
                seen.add(lib)
                found.append(lib)
            queue.append((lib, rpath))
    return found
