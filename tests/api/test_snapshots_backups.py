"""/v1/instances/{name}/snapshots and /v1/volumes/{name}/backups through HTTP (fake compute):
202 operations of the documented kinds, problem+json with stable codes and fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import Api

MIB = 1024**2
SNAPS = "/v1/instances/vm/snapshots"
BACKUPS = "/v1/volumes/data/backups"


async def _ok(api: Api, answer: httpx.Response, kind: str) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/v1/operations/{answer.json()['id']}"
    op = await api.wait_op(answer)
    assert (op["state"], op["kind"]) == ("succeeded", kind), op
    return op


def _problem(answer: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert (body["code"], body.get("field")) == (code, field), body


async def _vm_with(api: Api, *volumes: tuple[str, str]) -> None:
    """Instance `vm` running with the given (name, format) volumes attached."""
    for name, fmt in volumes:
        spec = {"size_bytes": 64 * MIB, "format": fmt}
        answer = await api.client.post("/v1/volumes", json={"name": name, "spec": spec})
        await _ok(api, answer, "volume-create")
    disks = [{"volume": name} for name, _ in volumes]
    assert (await api.create("vm", disks=disks))["state"] == "succeeded"


async def test_snapshot_lifecycle_over_http(ready_api: Api) -> None:
    api = ready_api
    await _vm_with(api, ("data", "qcow2"))
    await _ok(api, await api.client.post(SNAPS, json={"name": "s1"}), "snapshot-create")
    await _ok(api, await api.client.post(SNAPS, json={"name": "s2", "memory": True}),
              "snapshot-create")  # fmt: skip
    listed = (await api.client.get(SNAPS)).json()["items"]
    assert [(s["name"], s["parent"], s["current"]) for s in listed] == [
        ("s1", None, False),
        ("s2", "s1", True),
    ]
    one = (await api.client.get(f"{SNAPS}/s2")).json()
    assert one["memory"] is True and one["state"] == "ready" and one["volumes"] == ["data"]

    op = await _ok(api, await api.client.post(f"{SNAPS}/s1/actions/revert"), "snapshot-revert")
    assert op["target_kind"] == "instance" and op["target"] == "vm"
    assert (await api.client.get(f"{SNAPS}/s1")).json()["current"] is True
    await _ok(api, await api.client.delete(f"{SNAPS}/s1"), "snapshot-delete")
    assert (await api.client.get(f"{SNAPS}/s2")).json()["parent"] is None
    _problem(await api.client.get(f"{SNAPS}/s1"), 404, "not_found")


async def test_snapshot_requests_are_refused_with_codes_and_fields(ready_api: Api) -> None:
    api = ready_api
    await _vm_with(api, ("data", "qcow2"), ("old", "raw"))
    answer = await api.client.post(SNAPS, json={"name": "s1"})
    _problem(answer, 422, "snapshot_needs_qcow2")
    assert "old" in answer.json()["detail"]
    _problem(await api.client.post(SNAPS, json={"name": "a/b"}), 422, "invalid_name", "name")
    _problem(await api.client.post(SNAPS, json={"name": "S1"}), 422, "invalid_name", "name")
    _problem(await api.client.post(SNAPS, json={"nam": "s1"}), 422, "invalid_input", "name")
    _problem(await api.client.post("/v1/instances/ghost/snapshots", json={"name": "s1"}),
             404, "not_found")  # fmt: skip
    _problem(await api.client.get("/v1/instances/ghost/snapshots"), 404, "not_found")
    _problem(await api.client.post(f"{SNAPS}/nope/actions/revert"), 404, "not_found")
    _problem(await api.client.delete(f"{SNAPS}/nope"), 404, "not_found")


async def test_duplicate_names_and_memory_of_a_stopped_guest_are_conflicts(
    ready_api: Api,
) -> None:
    api = ready_api
    await _vm_with(api, ("data", "qcow2"))
    await _ok(api, await api.client.post(SNAPS, json={"name": "s1"}), "snapshot-create")
    _problem(await api.client.post(SNAPS, json={"name": "s1"}), 409, "already_exists", "name")
    await api.wait_op(await api.client.post("/v1/instances/vm/actions/stop", json={"force": True}))
    _problem(await api.client.post(SNAPS, json={"name": "m", "memory": True}),
             409, "invalid_state", "memory")  # fmt: skip


async def test_backup_lifecycle_over_http(ready_api: Api) -> None:
    api = ready_api
    await _vm_with(api, ("data", "qcow2"))
    first = await _ok(api, await api.client.post(BACKUPS), "backup")  # no body: defaults
    assert first["result"]["backup"]["kind"] == "full" and first["progress"] == 1.0
    await _ok(api, await api.client.post(BACKUPS, json={"full": False}), "backup")
    points = (await api.client.get(BACKUPS)).json()["items"]
    assert [(p["id"], p["kind"], p["parent"]) for p in points] == [
        ("b0001", "full", None),
        ("b0002", "incremental", "b0001"),
    ]
    assert Path(points[1]["path"]) == api.config.data_dir / "backups" / "data" / "b0002.qcow2"
    assert (await api.client.get(f"{BACKUPS}/b0002")).json()["parent"] == "b0001"

    _problem(await api.client.delete(f"{BACKUPS}/b0001"), 409, "backup_in_use")
    body = {"volume": "copy", "pool": "default"}
    restored = await _ok(
        api, await api.client.post(f"{BACKUPS}/b0002/actions/restore", json=body), "backup-restore"
    )
    assert (restored["target_kind"], restored["target"]) == ("volume", "copy")
    assert (await api.client.get("/v1/volumes/copy")).json()["status"]["state"] == "ready"
    await _ok(api, await api.client.delete(f"{BACKUPS}/b0001", params={"chain": "true"}),
              "backup-delete")  # fmt: skip
    assert (await api.client.get(BACKUPS)).json()["items"] == []


async def test_backup_requests_are_refused_with_codes_and_fields(ready_api: Api) -> None:
    api = ready_api
    await _vm_with(api, ("data", "qcow2"))
    _problem(await api.client.post("/v1/volumes/ghost/backups"), 404, "not_found")
    _problem(await api.client.get("/v1/volumes/ghost/backups"), 404, "not_found")
    _problem(await api.client.get(f"{BACKUPS}/b0001"), 404, "not_found")
    _problem(await api.client.post(BACKUPS, json={"fll": True}), 422, "invalid_input", "fll")
    await _ok(api, await api.client.post(BACKUPS), "backup")
    restore = f"{BACKUPS}/b0001/actions/restore"
    _problem(await api.client.post(restore, json={"volume": "../x"}), 422, "invalid_name",
             "volume")  # fmt: skip
    _problem(await api.client.post(restore, json={"volume": "x", "pool": "ghost"}), 422,
             "unknown_pool", "pool")  # fmt: skip
    _problem(await api.client.post(restore, json={"volume": "data"}), 409, "already_exists",
             "volume")  # fmt: skip
