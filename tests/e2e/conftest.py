"""One real Corral server for the e2e session: the image is built once, through the CLI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import CorralServer


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, image_cache_dir: Path
) -> Iterator[CorralServer]:
    """A running `corral serve` with the `tiny` image built."""
    root = tmp_path_factory.mktemp("corral-e2e")
    srv = CorralServer(data_dir=root / "data", cache_dir=image_cache_dir)
    srv.start()
    try:
        srv.cli("image", "build", "tiny", timeout=600)
        yield srv
    finally:
        srv.stop()
        srv.kill_guests()
        shutil.rmtree(srv.runtime_dir, ignore_errors=True)
