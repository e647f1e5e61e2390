"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.images import BuiltImage, build_image


@pytest.fixture(scope="session")
def image_cache_dir() -> Path:
    """Where downloaded Debian packages are cached across test runs (warm image builds)."""
    path = Path(os.environ.get("CORRAL_TEST_CACHE", "/var/cache/corral-test"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory, image_cache_dir: Path) -> BuiltImage:
    """The `tiny` guest (vmlinux + initrd with busybox and qemu-ga), built once per session.

    Only the first run on a machine downloads packages; later ones build from the cache.
    """
    return build_image("tiny", tmp_path_factory.mktemp("images") / "tiny", image_cache_dir)


@pytest.fixture(scope="session", autouse=True)
def no_runtime_dirs_left_behind() -> Iterator[None]:
    """Remove the runtime dirs that this session's throwaway data dirs made under /run/corral.

    Data dirs under pytest's long tmp paths get their sockets in /run/corral/<hash> (unix
    socket paths are short); many tests build servers or agents there and not every one of
    them tears its runtime dir down. Guests are all gone by now (each test kills its own).
    """
    base = Path("/run/corral")
    before = set(base.iterdir()) if base.is_dir() else set()
    yield
    if base.is_dir():
        for path in set(base.iterdir()) - before:
            shutil.rmtree(path, ignore_errors=True)
