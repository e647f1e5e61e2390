"""Image fixtures. Other test folders reuse the tiny guest by copying `tiny_image`.

The build goes into this session's temp dir; the .deb cache is the session-shared one
(`image_cache_dir`: $CORRAL_TEST_CACHE or /var/cache/corral-test), so only the first
run on a machine downloads anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.images import BuiltImage, build_image


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory, image_cache_dir: Path) -> BuiltImage:
    """The `tiny` image (vmlinux + initrd), built once per test session."""
    return build_image("tiny", tmp_path_factory.mktemp("images") / "tiny", image_cache_dir)
