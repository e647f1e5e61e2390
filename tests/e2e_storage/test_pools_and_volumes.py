"""Pools, volumes and hot-plugged disks through the API, against real QEMU guests (TCG here).

Two tiny guests boot (plus one reboot of the first): a volume written in one guest is read,
byte for byte, in the other after a detach and an attach; it grows while attached and the
guest sees the new size.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import CorralServer, wait_for

pytestmark = pytest.mark.slow

MIB = 1024**2
WRITE_MIB = 4


def _done(api: httpx.Client, answer: httpx.Response, timeout_s: float = 180) -> dict[str, Any]:
    """Follow a 202's operation to its end; fail unless it succeeded."""
    assert answer.status_code == 202, answer.text
    location = answer.headers["location"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        op: dict[str, Any] = api.get(location, params={"wait": 10}).json()
        if op["state"] != "running":
            assert op["state"] == "succeeded", op
            return op
    raise AssertionError(f"operation {location} still running after {timeout_s}s")


def _problem(answer: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert (body["code"], body.get("field")) == (code, field), body


def _mounts_under(path: Path) -> list[str]:
    text = Path("/proc/self/mounts").read_text()
    return [line for line in text.splitlines() if str(path) in line]


def _loops_backed_by(path: Path) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        if str(path) in backing.read_text():
            found.append(backing.parent.parent.name)
    return found


def _exec(server: CorralServer, instance: str, script: str) -> str:
    """Run a shell script in the guest (busybox) through `corral exec`; its stdout."""
    result = server.cli("exec", instance, "--", "sh", "-c", script, timeout=120)
    return result.stdout


def _device_of(server: CorralServer, instance: str, serial: str) -> str | None:
    """The guest's block device (vda, ...) whose serial is `serial`, if it has one."""
    listing = _exec(
        server,
        instance,
        "for d in /sys/block/vd*; do [ -e $d/serial ] && echo ${d##*/} $(cat $d/serial); done;"
        " true",
    )
    for line in listing.splitlines():
        dev, _, seen = line.partition(" ")
        if seen.strip() == serial:
            return dev
    return None


def _sectors(server: CorralServer, instance: str, dev: str) -> int:
    return int(_exec(server, instance, f"cat /sys/block/{dev}/size").strip())


def test_btrfs_and_dir_pools_are_made_listed_and_removed_without_a_trace(
    storage_server: CorralServer, tmp_path: Path
) -> None:
    pools_dir = storage_server.data_dir / "pools"
    place = tmp_path / "dir-pool"
    with storage_server.api() as api:
        _done(api, api.post("/v1/pools", json={
            "name": "fast", "spec": {"driver": "btrfs", "size_bytes": 512 * MIB}}))  # fmt: skip
        _done(api, api.post("/v1/pools", json={
            "name": "plain", "spec": {"driver": "dir", "path": str(place)}}))  # fmt: skip
        _done(api, api.post("/v1/volumes", json={
            "name": "on-btrfs", "spec": {"pool": "fast", "size_bytes": 64 * MIB}}))  # fmt: skip
        clone = {"pool": "fast", "source": {"kind": "volume", "volume": "on-btrfs"}}
        _done(api, api.post("/v1/volumes", json={"name": "btrfs-clone", "spec": clone}))

        pools = {p["name"]: p for p in api.get("/v1/pools").json()["items"]}
        assert set(pools) == {"default", "fast", "plain"}
        fast = pools["fast"]["status"]
        assert fast["state"] == "ready" and fast["path"] == str(pools_dir / "fast")
        assert 400 * MIB < fast["capacity_bytes"] <= 512 * MIB
        wait_for(lambda: api.get("/v1/pools/fast").json()["status"]["volumes"] == 2, 15)
        fast = api.get("/v1/pools/fast").json()["status"]
        assert fast["provisioned_bytes"] == 128 * MIB
        assert 0 < fast["allocated_bytes"] < fast["provisioned_bytes"]  # thin
        assert pools["plain"]["status"]["path"] == str(place)
        assert pools["plain"]["status"]["capacity_bytes"] > 0
        assert _mounts_under(pools_dir / "fast")
        assert _loops_backed_by(pools_dir / "fast.btrfs")

        _problem(api.delete("/v1/pools/fast"), 409, "pool_not_empty")
        _problem(api.delete("/v1/pools/default"), 409, "invalid_state")
        _done(api, api.delete("/v1/volumes/btrfs-clone"))
        _done(api, api.delete("/v1/volumes/on-btrfs"))
        _done(api, api.delete("/v1/pools/fast"))
        _done(api, api.delete("/v1/pools/plain"))
        assert {p["name"] for p in api.get("/v1/pools").json()["items"]} == {"default"}
    assert _mounts_under(pools_dir / "fast") == []
    assert _loops_backed_by(pools_dir / "fast.btrfs") == []
    assert not (pools_dir / "fast.btrfs").exists()
    assert not (pools_dir / "fast").exists()
    assert not place.exists() or list(place.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "body", "code", "field"),
    [
        ("/v1/pools", {"name": "a/b", "spec": {}}, "invalid_name", "name"),
        ("/v1/pools", {"name": "p", "spec": {"path": "rel/dir"}}, "invalid_input", "spec.path"),
        ("/v1/pools", {"name": "p", "spec": {"path": "/srv/../etc"}}, "invalid_input",
         "spec.path"),
        ("/v1/volumes", {"name": "..", "spec": {"size_bytes": MIB}}, "invalid_name", "name"),
        ("/v1/volumes", {"name": "v\x07", "spec": {"size_bytes": MIB}}, "invalid_name", "name"),
        ("/v1/volumes", {"name": "v", "spec": {"pool": "../x", "size_bytes": MIB}},
         "invalid_name", "spec.pool"),
        ("/v1/volumes", {"name": "v", "spec": {"pool": "ghost", "size_bytes": MIB}},
         "unknown_pool", "spec.pool"),
        ("/v1/volumes", {"name": "v", "spec": {"source": {"kind": "image", "image": "tiny"}}},
         "not_a_disk_image", "spec.source.image"),
    ],
)  # fmt: skip
def test_bad_names_and_paths_are_refused_with_the_field(
    storage_server: CorralServer, path: str, body: dict[str, Any], code: str, field: str
) -> None:
    with storage_server.api() as api:
        _problem(api.post(path, json=body), 422, code, field)
        assert {p["name"] for p in api.get("/v1/pools").json()["items"]} >= {"default"}
        assert api.get("/v1/volumes/v").status_code == 404


def test_a_volume_moves_between_running_guests_with_its_data_and_grows_online(
    storage_server: CorralServer,
) -> None:
    server = storage_server
    with server.api() as api:
        _done(api, api.post("/v1/volumes", json={"name": "e2e-data",
                                                   "spec": {"size_bytes": 64 * MIB}}))  # fmt: skip
        server.cli("create", "st-a", "--image", "tiny")
        server.cli("create", "st-b", "--image", "tiny")
        assert _device_of(server, "st-a", "e2e-data") is None

        # attach by PATCH of spec.disks: hot-plugged, and the guest sees a 64 MiB disk
        _done(api, api.patch("/v1/instances/st-a", json={"spec": {"disks": [
            {"volume": "e2e-data"}]}}))  # fmt: skip
        dev = wait_for(lambda: _device_of(server, "st-a", "e2e-data"), 30)
        assert _sectors(server, "st-a", dev) == 64 * MIB // 512
        assert api.get("/v1/volumes/e2e-data").json()["status"]["attached_to"] == "st-a"

        written = _exec(
            server,
            "st-a",
            f"dd if=/dev/urandom of=/dev/{dev} bs=1M count={WRITE_MIB} 2>/dev/null && sync && "
            f"dd if=/dev/{dev} bs=1M count={WRITE_MIB} 2>/dev/null | md5sum",
        ).split()[0]
        assert re.fullmatch(r"[0-9a-f]{32}", written)

        _problem(api.delete("/v1/volumes/e2e-data"), 409, "volume_attached")
        taken = api.post("/v1/volumes/e2e-data/actions/attach", json={"instance": "st-b"})
        _problem(taken, 409, "volume_attached", "spec.disks")

        # detach (action), attach to the other guest (action): the same bytes are there
        _done(api, api.post("/v1/volumes/e2e-data/actions/detach"))
        wait_for(lambda: _device_of(server, "st-a", "e2e-data") is None, 30)
        assert api.get("/v1/volumes/e2e-data").json()["status"]["attached_to"] is None
        _done(api, api.post("/v1/volumes/e2e-data/actions/attach", json={"instance": "st-b"}))
        dev_b = wait_for(lambda: _device_of(server, "st-b", "e2e-data"), 30)
        read = _exec(
            server, "st-b", f"dd if=/dev/{dev_b} bs=1M count={WRITE_MIB} 2>/dev/null | md5sum"
        ).split()[0]
        assert read == written

        # grow it while st-b runs: the guest sees the new size; shrinking is refused
        etag = api.get("/v1/volumes/e2e-data").headers["etag"]
        _done(api, api.patch("/v1/volumes/e2e-data", json={"spec": {"size_bytes": 96 * MIB}},
                             headers={"If-Match": etag}))  # fmt: skip
        wait_for(lambda: _sectors(server, "st-b", dev_b) == 96 * MIB // 512, 30)
        volume = api.get("/v1/volumes/e2e-data").json()
        assert volume["status"]["virtual_size_bytes"] == 96 * MIB
        shrink = api.patch("/v1/volumes/e2e-data", json={"spec": {"size_bytes": 64 * MIB}})
        _problem(shrink, 422, "shrink_refused", "spec.size_bytes")
        again = _exec(
            server, "st-b", f"dd if=/dev/{dev_b} bs=1M count={WRITE_MIB} 2>/dev/null | md5sum"
        ).split()[0]
        assert again == written  # growing kept the data

        # a stopped guest gets the disk recorded, and boots with it
        server.cli("stop", "st-a")
        _done(api, api.post("/v1/volumes", json={"name": "e2e-boot",
                                                   "spec": {"size_bytes": 32 * MIB}}))  # fmt: skip
        _done(api, api.post("/v1/volumes/e2e-boot/actions/attach", json={"instance": "st-a"}))
        assert api.get("/v1/volumes/e2e-boot").json()["status"]["attached_to"] == "st-a"
        server.cli("start", "st-a")
        dev_boot = wait_for(lambda: _device_of(server, "st-a", "e2e-boot"), 30)
        assert _sectors(server, "st-a", dev_boot) == 32 * MIB // 512

        # deleting the guests detaches the volumes (they are not theirs) and keeps them
        server.cli("delete", "st-a")
        server.cli("delete", "st-b")
        for name in ("e2e-data", "e2e-boot"):
            status = api.get(f"/v1/volumes/{name}").json()["status"]
            assert status["state"] == "ready" and status["attached_to"] is None
            _done(api, api.delete(f"/v1/volumes/{name}"))
        assert api.get("/v1/volumes").json()["items"] == []
    assert server.guest_pids() == []
    assert list((server.data_dir / "pools" / "default").glob("*.qcow2")) == []
