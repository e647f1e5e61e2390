"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def image_cache_dir() -> Path:
    """Where downloaded Debian packages are cached across test runs (warm image builds)."""
    path = Path(os.environ.get("CORRAL_TEST_CACHE", "/var/cache/corral-test"))
    path.mkdir(parents=True, exist_ok=True)
    return path
