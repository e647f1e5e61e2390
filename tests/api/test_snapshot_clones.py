"""Volumes and instances made from a snapshot, through HTTP (fake compute): a full copy of a
volume at a snapshot, full and linked instance clones, and the refusals with codes and fields."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx

from corral.store import snapshots as snapshot_store
from corral.store import volumes as volume_store
from tests.api.conftest import Api

MIB = 1024**2
SNAPS = "/v1/instances/vm/snapshots"


async def _ok(api: Api, answer: httpx.Response, kind: str) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    op = await api.wait_op(answer)
    assert (op["state"], op["kind"]) == ("succeeded", kind), op
    return op


def _problem(answer: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert (body["code"], body.get("field")) == (code, field), body


POOL = "default"


def _tag_files(api: Api, instance: str, snapshot: str) -> None:
    """Write the snapshot's tag into its disk files, as QEMU would (the fake compute backend
    only records it), so the `dir` pool can copy from it."""
    with api.context.controller.db.transaction() as session:
        record = snapshot_store.get_snapshot(session, instance, snapshot)
        paths = [
            volume_store.get_volume(session, v).volume.status.path for v in record.snapshot.volumes
        ]
    for path in paths:
        assert path is not None
        subprocess.run(["qemu-img", "snapshot", "-c", record.tag, path], check=True)


async def _vm_with_snapshot(api: Api) -> None:
    """Running instance `vm` with volumes `data` (boot) and `logs`, and ready snapshot `s1`."""
    for name in ("data", "logs"):
        spec = {"size_bytes": 64 * MIB, "pool": POOL}
        await _ok(api, await api.client.post("/v1/volumes", json={"name": name, "spec": spec}),
                  "volume-create")  # fmt: skip
    disks = [{"volume": "data", "boot": True}, {"volume": "logs"}]
    assert (await api.create("vm", disks=disks))["state"] == "succeeded"
    await _ok(api, await api.client.post(SNAPS, json={"name": "s1"}), "snapshot-create")
    _tag_files(api, "vm", "s1")


async def _volume(api: Api, name: str) -> dict[str, Any]:
    answer = await api.client.get(f"/v1/volumes/{name}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _clone_body(name: str, *, linked: bool, snapshot: str = "s1") -> dict[str, Any]:
    return {
        "name": name,
        "spec": {"image": "tiny"},
        "from_snapshot": {"instance": "vm", "snapshot": snapshot, "linked": linked},
    }


async def test_a_volume_from_a_snapshot_is_a_full_copy_of_an_attached_volume(
    ready_api: Api,
) -> None:
    api = ready_api
    await _vm_with_snapshot(api)
    source = {"kind": "snapshot", "volume": "data", "snapshot": "s1"}
    body = {"name": "copy", "spec": {"source": source, "pool": POOL}}
    await _ok(api, await api.client.post("/v1/volumes", json=body), "volume-create")

    copy = await _volume(api, "copy")
    assert copy["status"]["state"] == "ready" and copy["status"]["backing"] is None
    assert copy["status"]["virtual_size_bytes"] == 64 * MIB
    assert copy["spec"]["source"] == {**source, "image": None}
    await _ok(api, await api.client.delete("/v1/volumes/copy"), "volume-delete")


async def test_volume_from_snapshot_refusals(ready_api: Api) -> None:
    api = ready_api
    await _vm_with_snapshot(api)

    async def post(source: dict[str, Any]) -> httpx.Response:
        spec = {"source": source, "pool": POOL}
        return await api.client.post("/v1/volumes", json={"name": "c", "spec": spec})

    _problem(await post({"kind": "snapshot", "volume": "data", "snapshot": "nope"}),
             422, "unknown_snapshot", "spec.source.snapshot")  # fmt: skip
    await _ok(api, await api.client.post("/v1/volumes", json={"name": "other",
              "spec": {"size_bytes": 64 * MIB, "pool": POOL}}), "volume-create")  # fmt: skip
    _problem(await post({"kind": "snapshot", "volume": "other", "snapshot": "s1"}),
             422, "unknown_snapshot", "spec.source.snapshot")  # fmt: skip
    _problem(await post({"kind": "snapshot", "volume": "ghost", "snapshot": "s1"}),
             422, "unknown_volume", "spec.source.volume")  # fmt: skip
    answer = await post({"kind": "snapshot", "volume": "data", "snapshot": "a/b"})
    assert answer.status_code == 422 and answer.json()["code"] == "invalid_name", answer.text
    answer = await post({"kind": "snapshot", "volume": "data"})
    assert answer.status_code == 422, answer.text
    answer = await post({"kind": "copy", "volume": "data", "snapshot": "s1"})
    assert answer.status_code == 422, answer.text


async def test_full_clone_of_an_instance_owns_independent_copies(ready_api: Api) -> None:
    api = ready_api
    await _vm_with_snapshot(api)
    op = await api.wait_op(
        await api.client.post("/v1/instances", json=_clone_body("vm2", linked=False))
    )
    assert op["state"] == "succeeded", op

    clone = (await api.client.get("/v1/instances/vm2")).json()
    assert clone["spec"]["disks"] == [
        {"volume": "vm2-0", "boot": True, "read_only": False},
        {"volume": "vm2-1", "boot": False, "read_only": False},
    ]
    for n, origin in enumerate(("data", "logs")):
        volume = await _volume(api, f"vm2-{n}")
        assert volume["spec"]["source"] == {
            "kind": "snapshot", "volume": origin, "snapshot": "s1", "image": None
        }  # fmt: skip
        assert volume["status"]["owner"] == "vm2" and volume["status"]["state"] == "ready"
        assert volume["status"]["backing"] is None
    assert (await api.client.get("/v1/volumes/vm-s1-0-base")).status_code == 404

    await _ok(api, await api.client.delete("/v1/instances/vm2"), "delete")
    names = [v["name"] for v in (await api.client.get("/v1/volumes")).json()["items"]]
    assert sorted(names) == ["data", "logs"]


async def test_linked_clones_share_one_base_per_snapshot_disk(ready_api: Api) -> None:
    api = ready_api
    await _vm_with_snapshot(api)
    for name in ("vm2", "vm3"):
        answer = await api.client.post("/v1/instances", json=_clone_body(name, linked=True))
        assert (await api.wait_op(answer))["state"] == "succeeded"

    for n, origin in enumerate(("data", "logs")):
        base = await _volume(api, f"vm-s1-{n}-base")
        assert base["spec"]["source"]["kind"] == "snapshot"
        assert base["spec"]["source"]["volume"] == origin
        assert base["status"]["owner"] is None and base["status"]["state"] == "ready"
        for name in ("vm2", "vm3"):
            clone = await _volume(api, f"{name}-{n}")
            assert clone["spec"]["source"]["kind"] == "volume"
            assert clone["spec"]["source"]["volume"] == f"vm-s1-{n}-base"
            assert clone["status"]["owner"] == name
            assert clone["status"]["backing"] == base["status"]["path"]
    disks = (await api.client.get("/v1/instances/vm3")).json()["spec"]["disks"]
    assert [(d["volume"], d["boot"]) for d in disks] == [("vm3-0", True), ("vm3-1", False)]

    _problem(await api.client.delete("/v1/volumes/vm-s1-0-base"), 409, "volume_in_use")
    for name in ("vm2", "vm3"):
        await _ok(api, await api.client.delete(f"/v1/instances/{name}"), "delete")
    assert (await _volume(api, "vm-s1-0-base"))["status"]["state"] == "ready"  # it stays
    await _ok(api, await api.client.delete("/v1/volumes/vm-s1-0-base"), "volume-delete")


async def test_instance_from_snapshot_refusals(ready_api: Api) -> None:
    api = ready_api
    await _vm_with_snapshot(api)
    post = api.client.post
    _problem(await post("/v1/instances", json=_clone_body("vm2", linked=False, snapshot="nope")),
             422, "unknown_snapshot", "from_snapshot.snapshot")  # fmt: skip
    body = _clone_body("vm2", linked=True)
    body["from_snapshot"]["instance"] = "ghost"
    _problem(await post("/v1/instances", json=body), 422, "unknown_snapshot",
             "from_snapshot.snapshot")  # fmt: skip
    body = _clone_body("vm2", linked=True)
    body["from_snapshot"]["snapshot"] = "A/B"
    assert (await post("/v1/instances", json=body)).status_code == 422
    await _ok(api, await post("/v1/volumes", json={"name": "vm-s1-0-base",
              "spec": {"size_bytes": 64 * MIB, "pool": POOL}}), "volume-create")  # fmt: skip
    _problem(await post("/v1/instances", json=_clone_body("vm2", linked=True)),
             409, "already_exists", "from_snapshot")  # fmt: skip
    long_name = "v" * 62
    _problem(await post("/v1/instances", json=_clone_body(long_name, linked=False)),
             422, "invalid_name", "name")  # fmt: skip
    assert (await api.client.get("/v1/instances/vm2")).status_code == 404  # nothing was kept
