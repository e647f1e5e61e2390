"""The storage CLI against a real server (no guest boots): what a user types, what they get."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.server import CorralServer

pytestmark = pytest.mark.slow

MIB = 1024**2


def test_pools_and_volumes_through_the_cli(storage_server: CorralServer, tmp_path: Path) -> None:
    cli = storage_server.cli
    place = tmp_path / "cli-pool"
    cli("pool", "create", "cli-pool", "--driver", "dir", "--path", str(place))
    pools = {p["name"]: p for p in cli("pool", "list", "-o", "json").json()}
    assert pools["cli-pool"]["status"]["state"] == "ready"
    assert pools["default"]["status"]["state"] == "ready"

    cli("volume", "create", "cli-vol", "--pool", "cli-pool", "--size", "32M")
    cli("volume", "create", "cli-copy", "--pool", "cli-pool", "--copy-of", "cli-vol")
    listed = cli("volume", "list", "--pool", "cli-pool", "-o", "json").json()
    assert sorted(v["name"] for v in listed) == ["cli-copy", "cli-vol"]
    cli("volume", "resize", "cli-vol", "+16M")
    shown = cli("volume", "show", "cli-vol", "-o", "json").json()
    assert shown["status"]["virtual_size_bytes"] == 48 * MIB
    assert Path(shown["status"]["path"]).parent == place

    shrink = cli("volume", "resize", "cli-vol", "16M", check=False)
    assert shrink.code != 0 and "shrink_refused" in shrink.stderr
    busy = cli("pool", "delete", "cli-pool", check=False)
    assert busy.code != 0 and "pool_not_empty" in busy.stderr

    cli("volume", "delete", "cli-vol")
    cli("volume", "delete", "cli-copy")
    cli("pool", "delete", "cli-pool")
    assert "cli-pool" not in {p["name"] for p in cli("pool", "list", "-o", "json").json()}
