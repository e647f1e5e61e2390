"""`corral pool ...` and `corral volume ...` against canned answers: bodies, output, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from corral.client.testing import CannedAPI, json_response, problem, sample_pool, sample_volume
from corral.model import Operation
from corral.model.storage import Pool, PoolSpec, Volume, VolumeSource, VolumeSpec

MakeOp = Callable[..., Operation]
GIB = 1024**3


def answer_operation(api: CannedAPI, make_operation: MakeOp, **fields: Any) -> None:
    """The operation a write answers with, then the same one succeeded when polled."""
    api.answer(
        "GET", "/v1/operations/op-1", json_response(make_operation(**fields, state="succeeded"))
    )


def body(api: CannedAPI, method: str, path: str) -> Any:
    return json.loads(api.sent(method, path)[0].content)


def plain(output: str) -> str:
    """Typer's usage-error box, unwrapped: words in one line, without the box borders."""
    return " ".join(output.replace("│", " ").split())


# -- pools ------------------------------------------------------------------------------------


def test_pool_create_btrfs_loop_sends_driver_and_size_and_reports_the_pool(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    op = make_operation(kind="pool-create", target_kind="pool", target="fast")
    api.answer("POST", "/v1/pools", json_response(op, 202))
    answer_operation(api, make_operation, kind="pool-create", target_kind="pool", target="fast")
    created = sample_pool(
        "fast",
        spec=PoolSpec(driver="btrfs", size_bytes=2 * GIB),
        state="ready",
        path="/var/lib/corral/pools/fast",
        capacity_bytes=2 * GIB,
    )
    api.answer("GET", "/v1/pools/fast", json_response(created))

    result = corral("pool", "create", "fast", "--driver", "btrfs", "--size", "2G")

    assert result.exit_code == 0, result.output
    assert body(api, "POST", "/v1/pools") == {
        "name": "fast",
        "spec": {"driver": "btrfs", "size_bytes": 2 * GIB},
    }
    assert result.stdout == (
        "Created pool fast (btrfs at /var/lib/corral/pools/fast, 2G capacity).\n"
    )


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--path", "pools/p1"], "absolute path"),
        (["--driver", "btrfs"], "needs --path"),
        (["--size", "2G"], "only a btrfs pool has a size"),
        (["--driver", "btrfs", "--size", "lots"], "not a size"),
    ],
)
def test_pool_create_usage_errors_exit_2_before_any_request(
    corral: Any, api: CannedAPI, args: list[str], why: str
) -> None:
    result = corral("pool", "create", "p1", *args)
    assert result.exit_code == 2
    assert why in plain(result.output)
    assert api.requests == []


def test_pool_list_table_and_json(corral: Any, api: CannedAPI) -> None:
    pool = sample_pool(
        "default",
        state="ready",
        path="/srv/corral/pools/default",
        capacity_bytes=100 * GIB,
        used_bytes=40 * GIB,
        allocated_bytes=3 * GIB,
        provisioned_bytes=24 * GIB,
        volumes=5,
    )
    api.answer("GET", "/v1/pools", json_response([pool]))

    table = corral("pool", "list")
    assert table.exit_code == 0, table.output
    header, row = table.stdout.splitlines()[:2]
    for column in ("NAME", "DRIVER", "STATE", "PATH", "CAPACITY", "USED", "ALLOCATED"):
        assert column in header
    assert "PROVISIONED" in header and "VOLUMES" in header
    expected = "default dir ready /srv/corral/pools/default 100G 40G 3G 24G 5"
    assert row.split() == expected.split()

    as_json = corral("pool", "list", "-o", "json")
    assert [Pool.model_validate(p) for p in json.loads(as_json.stdout)] == [pool]


def test_pool_show_json_and_table(corral: Any, api: CannedAPI) -> None:
    pool = sample_pool("default", state="ready", capacity_bytes=10 * GIB, used_bytes=4 * GIB)
    api.answer("GET", "/v1/pools/default", json_response(pool))
    assert Pool.model_validate_json(corral("-o", "json", "pool", "show", "default").stdout) == pool
    table = corral("pool", "show", "default")
    assert table.exit_code == 0, table.output
    assert "6G free" in table.stdout


def test_pool_delete_not_empty_prints_the_server_message_and_code(
    corral: Any, api: CannedAPI
) -> None:
    api.answer(
        "DELETE",
        "/v1/pools/fast",
        problem(409, "pool_not_empty", "pool fast holds 2 volumes; delete them first"),
    )
    result = corral("pool", "delete", "fast")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: pool fast holds 2 volumes; delete them first (code: pool_not_empty)"
    )
    assert "Traceback" not in result.output


def test_pool_delete_waits_for_the_operation(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    op = make_operation(kind="pool-delete", target_kind="pool", target="fast")
    api.answer("DELETE", "/v1/pools/fast", json_response(op, 202))
    answer_operation(api, make_operation, kind="pool-delete", target_kind="pool", target="fast")
    result = corral("pool", "delete", "fast")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Deleted pool fast (")


# -- volumes ----------------------------------------------------------------------------------


def answer_volume_create(api: CannedAPI, make_operation: MakeOp, volume: Volume) -> None:
    fields = {"kind": "volume-create", "target_kind": "volume", "target": volume.name}
    api.answer("POST", "/v1/volumes", json_response(make_operation(**fields), 202))
    answer_operation(api, make_operation, **fields)
    api.answer("GET", f"/v1/volumes/{volume.name}", json_response(volume))


def test_volume_create_from_image_sends_source_and_size(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    clone = Volume.model_validate(
        sample_volume("root1", virtual_size_bytes=4 * GIB, state="ready").model_dump()
        | {
            "spec": VolumeSpec(
                size_bytes=4 * GIB, source=VolumeSource(kind="image", image="debian-12")
            )
        }
    )
    answer_volume_create(api, make_operation, clone)

    result = corral("volume", "create", "root1", "--from-image", "debian-12", "--size", "4G")

    assert result.exit_code == 0, result.output
    assert body(api, "POST", "/v1/volumes") == {
        "name": "root1",
        "spec": {"size_bytes": 4 * GIB, "source": {"kind": "image", "image": "debian-12"}},
    }
    assert result.stdout == (
        "Created volume root1: 4G, qcow2, in pool default, thin clone of image debian-12.\n"
    )


@pytest.mark.parametrize(
    ("args", "spec"),
    [
        (["--size", "1G"], {"size_bytes": GIB}),
        (
            ["--pool", "fast", "--format", "raw", "--size", "512M"],
            {"pool": "fast", "format": "raw", "size_bytes": 512 * 1024**2},
        ),
        (["--from-volume", "gold"], {"source": {"kind": "volume", "volume": "gold"}}),
        (["--copy-of", "gold"], {"source": {"kind": "copy", "volume": "gold"}}),
    ],
)
def test_volume_create_bodies(
    corral: Any, api: CannedAPI, make_operation: MakeOp, args: list[str], spec: dict[str, Any]
) -> None:
    answer_volume_create(api, make_operation, sample_volume("vol1", state="ready"))
    result = corral("volume", "create", "vol1", *args)
    assert result.exit_code == 0, result.output
    assert body(api, "POST", "/v1/volumes") == {"name": "vol1", "spec": spec}


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ([], "a blank volume needs a size"),
        (["--from-image", "debian-12", "--copy-of", "gold"], "at most one of"),
        (["--size", "big"], "not a size"),
        (["--size", "1G", "--format", "vmdk"], "vmdk"),
    ],
)
def test_volume_create_usage_errors_exit_2_before_any_request(
    corral: Any, api: CannedAPI, args: list[str], why: str
) -> None:
    result = corral("volume", "create", "vol1", *args)
    assert result.exit_code == 2
    assert why in plain(result.output)
    assert api.requests == []


def test_volume_create_in_json_prints_the_finished_operation(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    answer_volume_create(api, make_operation, sample_volume("vol1"))
    result = corral("-o", "json", "volume", "create", "vol1", "--size", "1G")
    assert result.exit_code == 0, result.output
    assert Operation.model_validate_json(result.stdout).state == "succeeded"


def test_volume_create_on_a_full_pool_prints_the_operation_error(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    fields = {"kind": "volume-create", "target_kind": "volume", "target": "big"}
    api.answer("POST", "/v1/volumes", json_response(make_operation(**fields), 202))
    failed = make_operation(
        **fields, state="failed", error={"code": "pool_full", "message": "pool default is full"}
    )
    api.answer("GET", "/v1/operations/op-1", json_response(failed))
    result = corral("volume", "create", "big", "--size", "1T")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: volume-create of volume big failed: pool default is full (code: pool_full)"
    )


def test_volume_list_filters_by_pool_and_shows_the_columns(corral: Any, api: CannedAPI) -> None:
    clone = Volume.model_validate(
        sample_volume(
            "vm1-root",
            pool="fast",
            state="ready",
            virtual_size_bytes=8 * GIB,
            allocated_bytes=300 * 1024**2,
            format="qcow2",
            attached_to="vm1",
        ).model_dump()
        | {"spec": VolumeSpec(pool="fast", source=VolumeSource(kind="image", image="debian-12"))}
    )
    api.answer("GET", "/v1/volumes", json_response([clone]))

    result = corral("volume", "list", "--pool", "fast")

    assert result.exit_code == 0, result.output
    assert api.requests[0].url.params["pool"] == "fast"
    header, row = result.stdout.splitlines()[:2]
    for column in ("NAME", "POOL", "SIZE", "ALLOCATED", "FORMAT", "STATE", "ATTACHED TO"):
        assert column in header
    assert "BACKING" in header
    expected = ["vm1-root", "fast", "8G", "300M", "qcow2", "ready", "vm1", "image/debian-12"]
    assert row.split() == expected


def test_volume_list_and_show_json_parse(corral: Any, api: CannedAPI) -> None:
    volume = sample_volume("data", state="ready", virtual_size_bytes=GIB)
    api.answer("GET", "/v1/volumes", json_response([volume]))
    api.answer("GET", "/v1/volumes/data", json_response(volume))

    listed = corral("volume", "list", "-o", "json")
    assert [Volume.model_validate(v) for v in json.loads(listed.stdout)] == [volume]
    assert "pool" not in api.requests[0].url.params
    shown = corral("-o", "json", "volume", "show", "data")
    assert Volume.model_validate_json(shown.stdout) == volume
    table = corral("volume", "show", "data")
    assert table.exit_code == 0 and "Attached to" in table.stdout


def test_volume_resize_relative_reads_then_patches_with_if_match(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    volume = sample_volume("data", generation=3, state="ready", virtual_size_bytes=GIB)
    api.answer("GET", "/v1/volumes/data", json_response(volume, headers={"ETag": '"3"'}))
    fields = {"kind": "volume-resize", "target_kind": "volume", "target": "data"}
    api.answer("PATCH", "/v1/volumes/data", json_response(make_operation(**fields), 202))
    answer_operation(api, make_operation, **fields)

    result = corral("volume", "resize", "data", "+1G")

    assert result.exit_code == 0, result.output
    assert [(r.method, r.url.path) for r in api.requests] == [
        ("GET", "/v1/volumes/data"),
        ("PATCH", "/v1/volumes/data"),
        ("GET", "/v1/operations/op-1"),
    ]
    patch = api.sent("PATCH", "/v1/volumes/data")[0]
    assert patch.headers["If-Match"] == '"3"'
    assert json.loads(patch.content) == {"spec": {"size_bytes": 2 * GIB}}
    assert result.stdout.startswith("Resized volume data from 1G to 2G (")


def test_volume_resize_absolute_patches_at_once(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    api.answer("PATCH", "/v1/volumes/data", json_response(make_operation(kind="volume-resize")))
    result = corral("volume", "resize", "data", "20G", "--no-wait")
    assert result.exit_code == 0, result.output
    assert [r.method for r in api.requests] == ["PATCH"]
    assert "If-Match" not in api.requests[0].headers
    assert body(api, "PATCH", "/v1/volumes/data") == {"spec": {"size_bytes": 20 * GIB}}


def test_volume_resize_raced_by_another_change_says_so(corral: Any, api: CannedAPI) -> None:
    api.answer("GET", "/v1/volumes/data", json_response(sample_volume(virtual_size_bytes=GIB)))
    api.answer(
        "PATCH",
        "/v1/volumes/data",
        problem(412, "etag_mismatch", "volume data changed since you read it; read it again"),
    )
    result = corral("volume", "resize", "data", "+1G")
    assert result.exit_code == 1
    assert "changed since you read it" in result.stderr and "etag_mismatch" in result.stderr


def test_volume_shrink_refused_by_the_server_prints_its_message(
    corral: Any, api: CannedAPI
) -> None:
    api.answer(
        "PATCH",
        "/v1/volumes/data",
        problem(422, "shrink_refused", "data is 4G; volumes only grow", "spec.size_bytes"),
    )
    result = corral("volume", "resize", "data", "1G")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: data is 4G; volumes only grow (code: shrink_refused, field: spec.size_bytes)"
    )


@pytest.mark.parametrize(("size", "why"), [("-1G", "only grow"), ("+0", "changes nothing")])
def test_volume_resize_usage_errors(corral: Any, api: CannedAPI, size: str, why: str) -> None:
    result = corral("volume", "resize", "data", "--", size)
    assert result.exit_code == 2
    assert why in plain(result.output)
    assert api.requests == []


def test_volume_attach_and_detach(corral: Any, api: CannedAPI, make_operation: MakeOp) -> None:
    for action in ("attach", "detach"):
        api.answer(
            "POST",
            f"/v1/volumes/data/actions/{action}",
            json_response(make_operation(kind="update"), 202),
        )
    answer_operation(api, make_operation, kind="update")

    attached = corral("volume", "attach", "data", "vm1")
    detached = corral("volume", "detach", "data")

    assert attached.exit_code == 0, attached.output
    assert body(api, "POST", "/v1/volumes/data/actions/attach") == {"instance": "vm1"}
    assert attached.stdout.startswith("Attached volume data to vm1 (")
    assert detached.exit_code == 0, detached.output
    assert detached.stdout.startswith("Detached volume data (")


def test_volume_delete_while_attached_is_a_clean_error(corral: Any, api: CannedAPI) -> None:
    api.answer(
        "DELETE",
        "/v1/volumes/data",
        problem(409, "volume_attached", "data is attached to vm1; detach it first"),
    )
    result = corral("volume", "delete", "data")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: data is attached to vm1; detach it first (code: volume_attached)"
    )
    assert "Traceback" not in result.output
