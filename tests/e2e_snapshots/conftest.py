"""One real Corral server (QEMU compute) for the snapshot and backup e2e tests, `tiny` built.

The server harness is tests/e2e/server.py; this folder makes its own session server so it can
run alone (`pytest tests/e2e_snapshots`) or next to the other e2e folders.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import CorralServer


@pytest.fixture(scope="session")
def snapshot_server(
    tmp_path_factory: pytest.TempPathFactory, image_cache_dir: Path
) -> Iterator[CorralServer]:
    """A running `corral serve` with the `tiny` image built."""
    root = tmp_path_factory.mktemp("corral-e2e-snapshots")
    srv = CorralServer(data_dir=root / "data", cache_dir=image_cache_dir)
    srv.start()
    try:
        srv.cli("image", "build", "tiny", timeout=600)
        yield srv
    finally:
        with contextlib.suppress(Exception):
            _remove_everything(srv)
        srv.stop()
        srv.kill_guests()
        shutil.rmtree(srv.runtime_dir, ignore_errors=True)


def _wait(api: httpx.Client, answer: httpx.Response) -> None:
    if answer.status_code == 202:
        api.get(answer.headers["location"], params={"wait": 60})


def _remove_everything(srv: CorralServer) -> None:
    """Delete what the tests left (instances take their snapshots with them)."""
    if srv.process is None:
        srv.start()
    with srv.api() as api:
        for instance in api.get("/v1/instances").json()["items"]:
            _wait(api, api.delete(f"/v1/instances/{instance['name']}"))
        for volume in api.get("/v1/volumes").json()["items"]:
            _wait(api, api.delete(f"/v1/volumes/{volume['name']}"))
