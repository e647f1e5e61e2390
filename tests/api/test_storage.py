"""/v1/pools and /v1/volumes through HTTP: the storage contract of docs/api.md."""

from __future__ import annotations

import subprocess
from typing import Any

import httpx
import pytest

from corral.model.rpc import ImageArtifact
from corral.store import images as image_store
from tests.api.conftest import Api

MIB = 1024**2


async def _ok(api: Api, answer: httpx.Response) -> dict[str, Any]:
    op = await api.wait_op(answer)
    assert op["state"] == "succeeded", op
    return op


def _problem(answer: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == code, body
    assert body.get("field") == field, body


async def _volume(api: Api, name: str, **spec: Any) -> dict[str, Any]:
    body = {"name": name, "spec": {"size_bytes": 64 * MIB} | spec}
    return await _ok(api, await api.client.post("/v1/volumes", json=body))


def _add_disk_image(api: Api, name: str, virtual_bytes: int) -> None:
    data_dir = api.config.data_dir
    disk = data_dir / "images" / name / "disk.qcow2"
    disk.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), str(virtual_bytes)], check=True
    )
    with api.context.controller.db.transaction() as session:
        tiny = image_store.get_image(session, "tiny")
        image_store.start_image_build(session, name, name)
        image_store.mark_image_ready(
            session,
            ImageArtifact(
                name=name,
                kind="disk",
                kernel=tiny.kernel or "",
                initrd=tiny.initrd,
                cmdline="root=/dev/vda1",
                size_bytes=1,
                digest="sha256:test",
                recipe={"name": name},
                build_seconds=0.0,
                disk=str(disk),
                disk_virtual_size_bytes=virtual_bytes,
            ),
        )


async def test_pools_create_list_show_delete(ready_api: Api, tmp_path: Any) -> None:
    api = ready_api.client
    listed = (await api.get("/v1/pools")).json()["items"]
    assert [p["name"] for p in listed] == ["default"]
    answer = await api.post(
        "/v1/pools", json={"name": "extra", "spec": {"driver": "dir", "path": str(tmp_path)}}
    )
    assert answer.status_code == 202
    op = await _ok(ready_api, answer)
    assert (op["kind"], op["target_kind"], op["target"]) == ("pool-create", "pool", "extra")
    pool = (await api.get("/v1/pools/extra")).json()
    assert pool["spec"] == {"driver": "dir", "path": str(tmp_path), "size_bytes": None}
    status = pool["status"]
    assert status["state"] == "ready" and status["path"] == str(tmp_path)
    assert status["capacity_bytes"] > 0 and status["volumes"] == 0
    for key in ("used_bytes", "allocated_bytes", "provisioned_bytes"):
        assert key in status

    again = await api.post("/v1/pools", json={"name": "extra", "spec": {}})
    _problem(again, 409, "already_exists", "name")
    _problem(await api.delete("/v1/pools/default"), 409, "invalid_state")
    await _volume(ready_api, "in-extra", pool="extra")
    _problem(await api.delete("/v1/pools/extra"), 409, "pool_not_empty")
    await _ok(ready_api, await api.delete("/v1/volumes/in-extra"))
    deleted = await api.delete("/v1/pools/extra")
    assert deleted.json()["kind"] == "pool-delete"
    await _ok(ready_api, deleted)
    _problem(await api.get("/v1/pools/extra"), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"name": "Bad/Name", "spec": {}}, "invalid_name", "name"),
        ({"name": "..", "spec": {}}, "invalid_name", "name"),
        ({"name": "p1", "spec": {"path": "relative/dir"}}, "invalid_input", "spec.path"),
        ({"name": "p1", "spec": {"path": "/srv/../etc"}}, "invalid_input", "spec.path"),
        ({"name": "p1", "spec": {"path": "/srv/a\nb"}}, "invalid_input", "spec.path"),
        ({"name": "p1", "spec": {"driver": "zfs"}}, "invalid_input", "spec.driver"),
        ({"name": "p1", "spec": {"driver": "btrfs"}}, "invalid_input", "spec"),
        ({"name": "p1", "spec": {"driver": "btrfs", "size_bytes": 1}}, "invalid_input",
         "spec.size_bytes"),
    ],
)  # fmt: skip
async def test_bad_pools_are_422_with_the_field(
    ready_api: Api, body: dict[str, Any], code: str, field: str
) -> None:
    _problem(await ready_api.client.post("/v1/pools", json=body), 422, code, field)
    assert [p["name"] for p in (await ready_api.client.get("/v1/pools")).json()["items"]] == [
        "default"
    ]


async def test_volumes_create_show_grow_delete(ready_api: Api) -> None:
    api = ready_api.client
    answer = await api.post("/v1/volumes", json={"name": "data", "spec": {"size_bytes": 64 * MIB}})
    assert answer.status_code == 202
    assert answer.json()["kind"] == "volume-create"
    await _ok(ready_api, answer)
    shown = await api.get("/v1/volumes/data")
    assert shown.headers["etag"] == '"1"'
    volume = shown.json()
    assert volume["spec"] == {
        "pool": "default",
        "size_bytes": 64 * MIB,
        "format": "qcow2",
        "source": {"kind": "blank", "image": None, "volume": None, "snapshot": None},
    }
    assert volume["status"]["state"] == "ready"
    assert volume["status"]["virtual_size_bytes"] == 64 * MIB
    assert volume["status"]["attached_to"] is None and volume["status"]["owner"] is None
    assert [v["name"] for v in (await api.get("/v1/volumes?pool=default")).json()["items"]] == [
        "data"
    ]
    assert (await api.get("/v1/volumes?pool=other")).json()["items"] == []

    stale = await api.patch(
        "/v1/volumes/data", json={"spec": {"size_bytes": 96 * MIB}}, headers={"If-Match": '"9"'}
    )
    _problem(stale, 412, "etag_mismatch")
    grown = await api.patch(
        "/v1/volumes/data", json={"spec": {"size_bytes": 96 * MIB}}, headers={"If-Match": '"1"'}
    )
    assert grown.headers["etag"] == '"2"'
    assert grown.json()["kind"] == "volume-resize"
    await _ok(ready_api, grown)
    assert (await api.get("/v1/volumes/data")).json()["status"]["virtual_size_bytes"] == 96 * MIB
    shrink = await api.patch("/v1/volumes/data", json={"spec": {"size_bytes": 64 * MIB}})
    _problem(shrink, 422, "shrink_refused", "spec.size_bytes")

    await _volume(ready_api, "clone", size_bytes=None, source={"kind": "volume", "volume": "data"})
    _problem(await api.delete("/v1/volumes/data"), 409, "volume_in_use")
    await _ok(ready_api, await api.delete("/v1/volumes/clone"))
    await _ok(ready_api, await api.delete("/v1/volumes/data"))
    _problem(await api.get("/v1/volumes/data"), 404, "not_found")


@pytest.mark.parametrize(
    ("spec", "status", "code", "field"),
    [
        ({"size_bytes": 64 * MIB, "pool": "nowhere"}, 422, "unknown_pool", "spec.pool"),
        ({"size_bytes": 64 * MIB, "pool": "Bad/Pool"}, 422, "invalid_name", "spec.pool"),
        ({"size_bytes": 1}, 422, "invalid_input", "spec.size_bytes"),
        ({}, 422, "invalid_input", "spec"),  # a blank volume needs a size
        ({"size_bytes": 64 * MIB, "format": "vmdk"}, 422, "invalid_input", "spec.format"),
        ({"source": {"kind": "image", "image": "ghost"}}, 422, "unknown_image",
         "spec.source.image"),
        ({"source": {"kind": "image", "image": "tiny"}}, 422, "not_a_disk_image",
         "spec.source.image"),
        ({"source": {"kind": "volume", "volume": "ghost"}}, 422, "unknown_volume",
         "spec.source.volume"),
        ({"source": {"kind": "copy", "volume": "../etc"}}, 422, "invalid_name",
         "spec.source.volume"),
    ],
)  # fmt: skip
async def test_bad_volumes_are_refused_with_the_field(
    ready_api: Api, spec: dict[str, Any], status: int, code: str, field: str
) -> None:
    answer = await ready_api.client.post("/v1/volumes", json={"name": "bad", "spec": spec})
    _problem(answer, status, code, field)
    assert (await ready_api.client.get("/v1/volumes/bad")).status_code == 404


@pytest.mark.parametrize("name", ["", "a/b", "..", "ctl\x01x", "UPPER", "x" * 64])
async def test_bad_volume_names_are_422_invalid_name(ready_api: Api, name: str) -> None:
    answer = await ready_api.client.post(
        "/v1/volumes", json={"name": name, "spec": {"size_bytes": 64 * MIB}}
    )
    _problem(answer, 422, "invalid_name", "name")


async def test_attach_and_detach_actions_hot_plug_a_running_guest(ready_api: Api) -> None:
    api = ready_api.client
    await _volume(ready_api, "data")
    await ready_api.create("vm1")
    await ready_api.create("vm2")
    attach = await api.post("/v1/volumes/data/actions/attach", json={"instance": "vm1"})
    op = await _ok(ready_api, attach)
    assert (op["kind"], op["target_kind"], op["target"]) == ("update", "instance", "vm1")
    assert (await api.get("/v1/instances/vm1")).json()["spec"]["disks"] == [
        {"volume": "data", "boot": False, "read_only": False}
    ]
    assert (await api.get("/v1/volumes/data")).json()["status"]["attached_to"] == "vm1"
    ran = await api.post(
        "/v1/instances/vm1/actions/exec", json={"command": ["cat", "/sys/block/vda/serial"]}
    )
    assert ran.json()["stdout"] == "data"

    elsewhere = await api.post("/v1/volumes/data/actions/attach", json={"instance": "vm2"})
    _problem(elsewhere, 409, "volume_attached", "spec.disks")
    patch = await api.patch("/v1/instances/vm2", json={"spec": {"disks": [{"volume": "data"}]}})
    _problem(patch, 409, "volume_attached", "spec.disks")
    _problem(await api.delete("/v1/volumes/data"), 409, "volume_attached")
    unknown = await api.patch("/v1/instances/vm2", json={"spec": {"disks": [{"volume": "ghost"}]}})
    _problem(unknown, 422, "unknown_volume", "spec.disks")
    bad = await api.patch("/v1/instances/vm2", json={"spec": {"disks": [{"volume": "A/B"}]}})
    _problem(bad, 422, "invalid_name", "spec.disks.0.volume")
    twice = await api.patch(
        "/v1/instances/vm2", json={"spec": {"disks": [{"volume": "x"}, {"volume": "x"}]}}
    )
    _problem(twice, 422, "invalid_input", "spec.disks")
    no_vm = await api.post("/v1/volumes/data/actions/attach", json={"instance": "ghost"})
    _problem(no_vm, 404, "not_found")

    # the client sends an empty JSON object; no body at all works too
    await _ok(ready_api, await api.post("/v1/volumes/data/actions/detach", json={}))
    assert (await api.get("/v1/volumes/data")).json()["status"]["attached_to"] is None
    again = await api.post("/v1/volumes/data/actions/detach")
    assert (await _ok(ready_api, again))["message"] == "volume data is not attached"
    await _ok(
        ready_api, await api.post("/v1/volumes/data/actions/attach", json={"instance": "vm2"})
    )
    ran = await api.post(
        "/v1/instances/vm2/actions/exec", json={"command": ["cat", "/sys/block/vda/size"]}
    )
    assert int(ran.json()["stdout"]) == 64 * MIB // 512


async def test_a_disk_image_instance_gets_a_root_volume(ready_api: Api) -> None:
    api = ready_api.client
    _add_disk_image(ready_api, "deb", 128 * MIB)
    small = await api.post(
        "/v1/instances",
        json={"name": "vm1", "spec": {"image": "deb"}, "root_disk": {"size_bytes": 64 * MIB}},
    )
    _problem(small, 422, "shrink_refused", "root_disk.size_bytes")
    answer = await api.post(
        "/v1/instances",
        json={"name": "vm1", "spec": {"image": "deb"}, "root_disk": {"size_bytes": 256 * MIB}},
    )
    await _ok(ready_api, answer)
    vm = (await api.get("/v1/instances/vm1")).json()
    assert vm["spec"]["disks"] == [{"volume": "vm1-root", "boot": True, "read_only": False}]
    root = (await api.get("/v1/volumes/vm1-root")).json()
    assert root["status"]["owner"] == "vm1" and root["status"]["attached_to"] == "vm1"
    assert root["status"]["virtual_size_bytes"] == 256 * MIB
    source = {"kind": "image", "image": "deb", "volume": None, "snapshot": None}
    assert root["spec"]["source"] == source
    _problem(await api.delete("/v1/images/deb"), 409, "image_in_use")
    await _ok(ready_api, await api.delete("/v1/instances/vm1"))
    _problem(await api.get("/v1/volumes/vm1-root"), 404, "not_found")
    await _ok(ready_api, await api.post("/v1/volumes", json={
        "name": "from-image", "spec": {"source": {"kind": "image", "image": "deb"}}}))  # fmt: skip
    assert (await api.get("/v1/volumes/from-image")).json()["status"]["virtual_size_bytes"] == (
        128 * MIB
    )


async def test_storage_events_are_published(ready_api: Api) -> None:
    await _volume(ready_api, "data")
    await _ok(ready_api, await ready_api.client.delete("/v1/volumes/data"))
    types = [e.type for e in ready_api.context.events.after(0) if e.name == "data"]
    assert types[0] == "volume.created"
    assert "volume.state" in types
    assert types[-1] == "volume.deleted"
