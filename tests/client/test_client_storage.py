"""Pools, volumes and instance disks: the client sends what docs/api.md (Storage) says."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from corral.client import AsyncCorralClient, CorralClient, volume_etag
from corral.client.testing import CannedAPI, json_response, problem, sample_pool, sample_volume
from corral.errors import Conflict, CorralError, InvalidInput
from corral.model import Operation
from corral.model.instance import RootDisk
from corral.model.storage import (
    InstanceDisk,
    PoolDriver,
    VolumeFormat,
    VolumeSource,
    VolumeSourceKind,
)

MakeOp = Callable[..., Operation]
GIB = 1024**3


def sent_json(request: httpx.Request) -> Any:
    return json.loads(request.content)


async def test_pools_list_get_create_delete(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    pool = sample_pool("default", state="ready", capacity_bytes=10 * GIB, volumes=2)
    api.answer("GET", "/v1/pools", json_response([pool]))
    api.answer("GET", "/v1/pools/default", json_response(pool))
    api.answer("POST", "/v1/pools", json_response(make_operation(kind="pool-create"), 202))
    api.answer("DELETE", "/v1/pools/fast", json_response(make_operation(kind="pool-delete"), 202))

    assert await client.list_pools() == [pool]
    assert await client.get_pool("default") == pool
    op = await client.create_pool("fast", driver=PoolDriver.BTRFS, size_bytes=2 * GIB)
    assert op.kind == "pool-create"
    assert sent_json(api.sent("POST", "/v1/pools")[0]) == {
        "name": "fast",
        "spec": {"driver": "btrfs", "size_bytes": 2 * GIB},
    }
    assert (await client.delete_pool("fast")).kind == "pool-delete"


async def test_create_pool_without_options_lets_the_server_choose(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    api.answer("POST", "/v1/pools", json_response(make_operation(kind="pool-create"), 202))
    await client.create_pool("p1")
    assert sent_json(api.requests[0]) == {"name": "p1", "spec": {}}


async def test_list_volumes_filters_by_pool_only_when_asked(
    api: CannedAPI, client: AsyncCorralClient
) -> None:
    volume = sample_volume("data", pool="fast")
    api.answer("GET", "/v1/volumes", json_response([volume]))

    assert await client.list_volumes(pool="fast") == [volume]
    assert await client.list_volumes() == [volume]

    first, second = api.requests
    assert first.url.params["pool"] == "fast"
    assert "pool" not in second.url.params


@pytest.mark.parametrize(
    ("kwargs", "spec"),
    [
        ({"size_bytes": GIB}, {"size_bytes": GIB}),
        (
            {
                "size_bytes": 4 * GIB,
                "source": VolumeSource(kind=VolumeSourceKind.IMAGE, image="debian-12"),
            },
            {"size_bytes": 4 * GIB, "source": {"kind": "image", "image": "debian-12"}},
        ),
        (
            {
                "pool": "fast",
                "format": VolumeFormat.RAW,
                "source": VolumeSource(kind=VolumeSourceKind.COPY, volume="data"),
            },
            {"pool": "fast", "format": "raw", "source": {"kind": "copy", "volume": "data"}},
        ),
    ],
)
async def test_create_volume_sends_only_given_fields(
    api: CannedAPI,
    client: AsyncCorralClient,
    make_operation: MakeOp,
    kwargs: dict[str, Any],
    spec: dict[str, Any],
) -> None:
    api.answer("POST", "/v1/volumes", json_response(make_operation(kind="volume-create"), 202))
    op = await client.create_volume("vol1", **kwargs)
    assert op.kind == "volume-create"
    assert sent_json(api.requests[0]) == {"name": "vol1", "spec": spec}


async def test_get_volume_and_resize_with_if_match(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    volume = sample_volume("data", generation=3, virtual_size_bytes=GIB)
    api.answer("GET", "/v1/volumes/data", json_response(volume, headers={"ETag": '"3"'}))
    api.answer("PATCH", "/v1/volumes/data", json_response(make_operation(kind="volume-resize")))

    got = await client.get_volume("data")
    await client.resize_volume("data", 2 * GIB, if_match=volume_etag(got))

    patch = api.sent("PATCH", "/v1/volumes/data")[0]
    assert volume_etag(got) == '"3"'  # what the server's ETag header says for generation 3
    assert patch.headers["If-Match"] == '"3"'
    assert sent_json(patch) == {"spec": {"size_bytes": 2 * GIB}}


async def test_resize_without_if_match_sends_no_precondition(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    api.answer("PATCH", "/v1/volumes/data", json_response(make_operation(kind="volume-resize")))
    await client.resize_volume("data", 2 * GIB)
    assert "If-Match" not in api.requests[0].headers


async def test_attach_detach_and_delete_volume(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    for path in ("/v1/volumes/data/actions/attach", "/v1/volumes/data/actions/detach"):
        api.answer("POST", path, json_response(make_operation(kind="update"), 202))
    api.answer(
        "DELETE", "/v1/volumes/data", json_response(make_operation(kind="volume-delete"), 202)
    )

    await client.attach_volume("data", "vm1")
    await client.detach_volume("data")
    assert (await client.delete_volume("data")).kind == "volume-delete"

    attach, detach, _ = api.requests
    assert sent_json(attach) == {"instance": "vm1"}
    assert sent_json(detach) == {}


async def test_volume_names_are_quoted_into_one_path_segment(
    api: CannedAPI, client: AsyncCorralClient
) -> None:
    with pytest.raises(CorralError):
        await client.get_volume("../pools/default")
    assert api.requests[0].url.raw_path == b"/v1/volumes/..%2Fpools%2Fdefault"


async def test_create_instance_with_disks_root_disk_and_cloud_init(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    api.answer("POST", "/v1/instances", json_response(make_operation(), 202))

    await client.create_instance(
        "vm1",
        image="debian-12",
        disks=["data", InstanceDisk(volume="logs", read_only=True)],
        root_disk=RootDisk(size_bytes=8 * GIB),
        ssh_keys=["ssh-ed25519 AAAAC3Nza me@host"],
        user_data="#cloud-config\n",
    )

    assert sent_json(api.requests[0]) == {
        "name": "vm1",
        "spec": {
            "image": "debian-12",
            "disks": [{"volume": "data"}, {"volume": "logs", "read_only": True}],
            "ssh_keys": ["ssh-ed25519 AAAAC3Nza me@host"],
            "user_data": "#cloud-config\n",
        },
        "root_disk": {"size_bytes": 8 * GIB},
    }


async def test_update_instance_disks_replaces_the_list(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    api.answer("PATCH", "/v1/instances/vm1", json_response(make_operation(kind="update"), 202))
    await client.update_instance("vm1", disks=[], if_match='"2"')
    assert sent_json(api.requests[0]) == {"spec": {"disks": []}}
    assert api.requests[0].headers["If-Match"] == '"2"'


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (409, "volume_attached", Conflict),
        (409, "pool_not_empty", Conflict),
        (422, "shrink_refused", InvalidInput),
        (422, "unknown_pool", InvalidInput),
    ],
)
async def test_storage_problems_keep_their_code(
    api: CannedAPI,
    client: AsyncCorralClient,
    status: int,
    code: str,
    expected: type[CorralError],
) -> None:
    api.answer("DELETE", "/v1/volumes/data", problem(status, code, "what failed; what to do"))
    with pytest.raises(expected) as caught:
        await client.delete_volume("data")
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("pool_full", CorralError),
        ("unknown_volume", InvalidInput),
        ("volume_attached", Conflict),
        ("not_a_disk_image", InvalidInput),
    ],
)
async def test_failed_storage_operations_raise_by_code(
    api: CannedAPI,
    client: AsyncCorralClient,
    make_operation: MakeOp,
    code: str,
    expected: type[CorralError],
) -> None:
    failed = make_operation(
        kind="volume-create",
        target_kind="volume",
        target="big",
        state="failed",
        error={"code": code, "message": "pool default is full"},
    )
    api.answer("GET", "/v1/operations/op-1", json_response(failed))
    with pytest.raises(expected) as caught:
        await client.wait_operation("op-1")
    assert type(caught.value) is expected and caught.value.code == code
    assert caught.value.message == "volume-create of volume big failed: pool default is full"


def test_sync_facade_has_the_storage_calls(make_operation: MakeOp) -> None:
    api = CannedAPI()
    api.answer("GET", "/v1/volumes", json_response([sample_volume()]))
    api.answer("GET", "/v1/pools", json_response([sample_pool()]))
    api.answer("POST", "/v1/volumes/data/actions/attach", json_response(make_operation(), 202))
    with CorralClient("http://corral.test", "t", transport=api.transport()) as client:
        assert [v.name for v in client.list_volumes(pool="default")] == ["data"]
        assert [p.name for p in client.list_pools()] == ["default"]
        assert client.attach_volume("data", "vm1").id == "op-1"
