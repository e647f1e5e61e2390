"""/v1/images, /v1/recipes, /v1/hosts and /v1/operations."""

from __future__ import annotations

import os

from tests.api.conftest import Api


async def test_an_image_build_is_an_operation_that_stores_the_image(api: Api) -> None:
    client = api.client
    assert (await client.get("/v1/recipes")).json() == {"items": ["tiny"]}
    answer = await client.post("/v1/images", json={"recipe": "tiny", "name": "small"})
    assert answer.status_code == 202
    assert answer.json()["kind"] == "image-build"
    assert answer.json()["target_kind"] == "image"
    op = await api.wait_op(answer)
    assert op["state"] == "succeeded" and op["progress"] == 1.0
    assert op["result"]["image"]["name"] == "small"
    image = (await client.get("/v1/images/small")).json()
    assert image["state"] == "ready"
    assert image["digest"].startswith("sha256:")
    assert image["kernel"] and os.path.exists(image["kernel"])
    assert [i["name"] for i in (await client.get("/v1/images")).json()["items"]] == ["small"]
    again = await client.post("/v1/images", json={"recipe": "tiny", "name": "small"})
    assert again.status_code == 409 and again.json()["code"] == "already_exists"


async def test_image_requests_are_validated(api: Api) -> None:
    client = api.client
    unknown = await client.post("/v1/images", json={"recipe": "nope"})
    assert unknown.status_code == 422
    assert (unknown.json()["code"], unknown.json()["field"]) == ("unknown_recipe", "recipe")
    bad = await client.post("/v1/images", json={"recipe": "tiny", "name": "Bad Name"})
    assert bad.status_code == 422
    assert (bad.json()["code"], bad.json()["field"]) == ("invalid_name", "name")
    assert (await client.get("/v1/images/ghost")).status_code == 404


async def test_an_image_in_use_cannot_be_deleted(ready_api: Api) -> None:
    client = ready_api.client
    await ready_api.create("user", power="stopped")
    refused = await client.delete("/v1/images/tiny")
    assert refused.status_code == 409
    assert refused.json()["code"] == "image_in_use"
    assert "user" in refused.json()["detail"]
    await ready_api.wait_op(await client.delete("/v1/instances/user"))
    deleted = await client.delete("/v1/images/tiny")
    assert deleted.status_code == 204
    assert (await client.get("/v1/images/tiny")).status_code == 404
    missing = await client.post("/v1/instances", json={"name": "x", "spec": {"image": "tiny"}})
    assert missing.json()["code"] == "unknown_image"


async def test_hosts_show_capacity_and_what_running_instances_take(ready_api: Api) -> None:
    client = ready_api.client
    await ready_api.create("a", cpus=2, memory_mib=512)
    await ready_api.create("b", memory_mib=128, power="stopped")
    hosts = (await client.get("/v1/hosts")).json()["items"]
    assert len(hosts) == 1
    host = hosts[0]
    assert host["name"] == "test-host"
    assert host["cpus"] >= 1 and host["memory_mib"] > 0
    assert (host["allocated_cpus"], host["allocated_memory_mib"]) == (2, 512)
    assert host["instances"] == 2
    assert host["accel"] == "tcg" and host["accel_reason"]
    assert (await client.get("/v1/hosts/test-host")).json() == host
    assert (await client.get("/v1/hosts/nope")).status_code == 404


async def test_operations_list_newest_first_and_long_poll(ready_api: Api) -> None:
    client = ready_api.client
    ready_api.fake.boot_delay_s = 0.3
    answer = await client.post("/v1/instances", json={"name": "vm1", "spec": {"image": "tiny"}})
    op_id = answer.json()["id"]
    newest = (await client.get("/v1/operations")).json()["items"]
    assert newest[0]["id"] == op_id and newest[-1]["kind"] == "image-build"
    quick = await client.get(f"/v1/operations/{op_id}", params={"wait": 0})
    assert quick.json()["state"] == "running"
    waited = await client.get(f"/v1/operations/{op_id}", params={"wait": 10})
    assert waited.json()["state"] == "succeeded"
    too_long = await client.get(f"/v1/operations/{op_id}", params={"wait": 100000})
    assert too_long.status_code == 422 and too_long.json()["field"] == "wait"
    assert (await client.get("/v1/operations/op-nope")).status_code == 404
