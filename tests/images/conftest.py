"""Fixtures for the image tests: the debian-12 image, built once per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.images import BuiltImage, build_image


@dataclass(frozen=True)
class DebianBuild:
    """The debian-12 image and the progress its build reported, in order."""

    image: BuiltImage
    progress: list[tuple[float, str]]


@pytest.fixture(scope="session")
def debian_image(
    tmp_path_factory: pytest.TempPathFactory, image_cache_dir: Path
) -> Iterator[DebianBuild]:
    """debian-12 (mmdebstrap, ~1 min from a warm cache, ~190 MB), deleted after the session.

    The first run on a machine downloads ~110 MB of packages into `image_cache_dir`.
    """
    events: list[tuple[float, str]] = []
    dest = tmp_path_factory.mktemp("debian-image") / "debian-12"
    image = build_image("debian-12", dest, image_cache_dir, lambda f, m: events.append((f, m)))
    yield DebianBuild(image=image, progress=events)
    shutil.rmtree(dest.parent, ignore_errors=True)
