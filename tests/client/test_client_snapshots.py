"""Snapshots and backups: the client sends what docs/api.md (Snapshots and backups) says and
turns the answers (and problems) into models and errors."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from corral.client import AsyncCorralClient, CorralClient
from corral.client.testing import (
    CannedAPI,
    json_response,
    problem,
    sample_backup,
    sample_snapshot,
)
from corral.errors import Conflict, InvalidInput
from corral.model import Operation

MakeOp = Callable[..., Operation]
SNAPS = "/v1/instances/vm1/snapshots"
BACKUPS = "/v1/volumes/data/backups"


def sent_json(request: httpx.Request) -> Any:
    return json.loads(request.content)


async def test_snapshot_calls_use_the_instance_sub_resource(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    tree = [sample_snapshot("s1"), sample_snapshot("s2", parent="s1", current=True)]
    api.answer("GET", SNAPS, json_response(tree))
    api.answer("GET", f"{SNAPS}/s2", json_response(tree[1]))
    api.answer("POST", SNAPS, json_response(make_operation(kind="snapshot-create"), 202))
    revert = make_operation(kind="snapshot-revert")
    api.answer("POST", f"{SNAPS}/s1/actions/revert", json_response(revert, 202))
    api.answer("DELETE", f"{SNAPS}/s1", json_response(make_operation(kind="snapshot-delete"), 202))

    assert await client.list_snapshots("vm1") == tree
    assert (await client.get_snapshot("vm1", "s2")).current
    op = await client.create_snapshot("vm1", "s3", memory=True, description="before upgrade")
    assert op.kind == "snapshot-create"
    assert sent_json(api.sent("POST", SNAPS)[0]) == {
        "name": "s3",
        "memory": True,
        "quiesce": True,
        "description": "before upgrade",
    }
    assert (await client.revert_snapshot("vm1", "s1")).kind == "snapshot-revert"
    assert (await client.delete_snapshot("vm1", "s1")).kind == "snapshot-delete"


async def test_backup_calls_use_the_volume_sub_resource(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    points = [sample_backup("b0001"), sample_backup("b0002", parent="b0001")]
    api.answer("GET", BACKUPS, json_response(points))
    api.answer("GET", f"{BACKUPS}/b0002", json_response(points[1]))
    api.answer("POST", BACKUPS, json_response(make_operation(kind="backup"), 202))
    api.answer(
        "DELETE", f"{BACKUPS}/b0001", json_response(make_operation(kind="backup-delete"), 202)
    )
    restore = make_operation(kind="backup-restore", target_kind="volume", target="copy")
    api.answer("POST", f"{BACKUPS}/b0002/actions/restore", json_response(restore, 202))

    assert await client.list_backups("data") == points
    assert (await client.get_backup("data", "b0002")).parent == "b0001"
    assert (await client.create_backup("data", full=True)).kind == "backup"
    assert sent_json(api.sent("POST", BACKUPS)[0]) == {"full": True}
    await client.delete_backup("data", "b0001")
    await client.delete_backup("data", "b0001", chain=True)
    plain, chained = api.sent("DELETE", f"{BACKUPS}/b0001")
    assert "chain" not in plain.url.params and chained.url.params["chain"] == "true"
    op = await client.restore_backup("data", "b0002", to="copy", pool="fast")
    assert op.target == "copy"
    assert sent_json(api.sent("POST", f"{BACKUPS}/b0002/actions/restore")[0]) == {
        "volume": "copy",
        "pool": "fast",
    }
    await client.restore_backup("data", "b0002", to="copy2")
    assert sent_json(api.sent("POST", f"{BACKUPS}/b0002/actions/restore")[1]) == {"volume": "copy2"}


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        (problem(422, "snapshot_needs_qcow2", "volume raw1 is raw"), InvalidInput,
         "snapshot_needs_qcow2"),
        (problem(409, "backup_in_use", "b0001 is the base of b0002"), Conflict, "backup_in_use"),
    ],
)  # fmt: skip
async def test_snapshot_and_backup_problems_keep_their_codes(
    api: CannedAPI,
    client: AsyncCorralClient,
    answer: httpx.Response,
    error: type[Exception],
    code: str,
) -> None:
    api.answer("POST", SNAPS, answer)
    with pytest.raises(error) as raised:
        await client.create_snapshot("vm1", "s1")
    assert getattr(raised.value, "code", None) == code


async def test_an_interrupted_operation_raises_with_its_code(
    api: CannedAPI, client: AsyncCorralClient, make_operation: MakeOp
) -> None:
    failed = make_operation(
        kind="backup",
        target_kind="volume",
        target="data",
        state="failed",
        error={"code": "interrupted", "message": "the server stopped; back up again"},
    )
    api.answer("GET", "/v1/operations/op-1", json_response(failed))
    with pytest.raises(Exception) as raised:
        await client.wait_operation("op-1")
    assert getattr(raised.value, "code", None) == "interrupted"
    assert "back up again" in str(raised.value)


def test_the_blocking_client_has_the_same_calls(api: CannedAPI, make_operation: MakeOp) -> None:
    api.answer("GET", SNAPS, json_response([sample_snapshot("s1")]))
    api.answer("POST", SNAPS, json_response(make_operation(kind="snapshot-create"), 202))
    api.answer("GET", BACKUPS, json_response([sample_backup()]))
    api.answer("POST", BACKUPS, json_response(make_operation(kind="backup"), 202))
    with CorralClient("http://corral.test", "t", transport=api.transport()) as client:
        assert [s.name for s in client.list_snapshots("vm1")] == ["s1"]
        assert client.create_snapshot("vm1", "s2", quiesce=False).kind == "snapshot-create"
        assert sent_json(api.sent("POST", SNAPS)[0])["quiesce"] is False
        assert [p.id for p in client.list_backups("data")] == ["b0001"]
        assert client.create_backup("data").kind == "backup"


def test_every_call_of_the_async_client_has_a_blocking_twin() -> None:
    calls = {
        name
        for name, member in inspect.getmembers(AsyncCorralClient)
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    }
    assert calls - {"aclose"} <= set(dir(CorralClient))
    assert {"create_snapshot", "restore_backup", "delete_backup"} <= calls
