"""kill -9 of the server in the middle of a memory snapshot and of a volume copy (real QEMU).

After a restart each operation is either finished or rolled back: a snapshot record is ready
exactly when its tag is on the disk, a copied volume exists exactly when its record is ready,
no partial file is left in the pool, and the guest never stopped running.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server import CorralServer, pid_alive

pytestmark = pytest.mark.slow

VM = "crashvm"


@pytest.fixture(scope="module")
def server(snapshot_server: CorralServer) -> Iterator[CorralServer]:
    """The session server with `crashvm` running, a qcow2 volume `crashdata` attached."""
    srv = snapshot_server
    srv.cli("volume", "create", "crashdata", "--size", "64M")
    srv.cli("create", VM, "--image", "tiny", "--attach", "crashdata")
    yield srv
    if srv.process is None:
        srv.start()
    srv.cli("delete", VM, "--force", check=False)
    srv.cli("volume", "delete", "crashdata", check=False)


def _tags(path: str) -> list[str]:
    listing = subprocess.run(
        ["qemu-img", "snapshot", "-U", "-l", path], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[1] for line in listing.splitlines()[2:] if line.split()]


def _op_after_restart(server: CorralServer, op_id: str) -> dict[str, object]:
    with server.api() as api:
        done: dict[str, object] = api.get(f"/v1/operations/{op_id}", params={"wait": 60}).json()
    return done


def test_kill_9_during_a_memory_snapshot_keeps_tags_and_records_in_step(
    server: CorralServer,
) -> None:
    pid = server.cli("show", VM, "-o", "json").json()["status"]["pid"]
    op = server.cli("-o", "json", "snapshot", "create", VM, "c1", "--memory", "--no-wait").json()
    server.kill9()
    time.sleep(0.5)
    server.start()

    done = _op_after_restart(server, op["id"])
    assert done["state"] in {"succeeded", "failed"}, done
    snaps = {s["name"]: s for s in server.cli("snapshot", "list", VM, "-o", "json").json()}
    path = server.cli("volume", "show", "crashdata", "-o", "json").json()["status"]["path"]
    tagged = any(tag.startswith("c1") for tag in _tags(path))
    ready = "c1" in snaps and snaps["c1"]["state"] == "ready"
    assert tagged == ready, (snaps, _tags(path))
    if done["state"] == "failed":
        assert done["error"]["code"] == "interrupted"  # type: ignore[index]

    assert pid_alive(pid)
    assert server.cli("show", VM, "-o", "json").json()["status"]["pid"] == pid
    assert server.cli("exec", VM, "--", "true").code == 0
    server.cli("snapshot", "create", VM, "c2")  # and snapshots go on working
    assert any(tag.startswith("c2") for tag in _tags(path))


def test_kill_9_during_a_volume_copy_finishes_or_leaves_nothing(server: CorralServer) -> None:
    server.cli("volume", "create", "bigsrc", "--size", "1G")
    src = server.cli("volume", "show", "bigsrc", "-o", "json").json()["status"]["path"]
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 600M", src],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    op = server.cli("-o", "json", "volume", "create", "bigcopy", "--copy-of", "bigsrc", "--no-wait")
    op_id = json.loads(op.stdout)["id"]
    server.kill9()
    time.sleep(0.5)
    server.start()

    done = _op_after_restart(server, op_id)
    pool_dir = Path(src).parent
    volumes = {v["name"]: v for v in server.cli("volume", "list", "-o", "json").json()}
    copy = volumes.get("bigcopy")
    if copy is not None and copy["status"]["state"] == "ready":
        assert (pool_dir / Path(copy["status"]["path"]).name).exists()
        read = subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 0 600M", copy["status"]["path"]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert read.returncode == 0 and "Pattern verification failed" not in read.stdout
    else:
        assert done["state"] == "failed" or copy is None, (done, copy)
    assert not [p.name for p in pool_dir.iterdir() if "partial" in p.name]
    for name in ("bigcopy", "bigsrc"):
        if name in volumes or name == "bigsrc":
            server.cli("volume", "delete", name, check=False)
