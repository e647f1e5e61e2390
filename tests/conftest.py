"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
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
