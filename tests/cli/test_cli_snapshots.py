"""`corral snapshot ...` and `corral backup ...` against canned answers: bodies, output, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from corral.cli.snapshots import default_snapshot_name
from corral.client.testing import (
    CannedAPI,
    json_response,
    problem,
    sample_backup,
    sample_snapshot,
)
from corral.model import Operation

MakeOp = Callable[..., Operation]
SNAPS = "/v1/instances/vm1/snapshots"
BACKUPS = "/v1/volumes/data/backups"


def body(api: CannedAPI, method: str, path: str, index: int = 0) -> Any:
    return json.loads(api.sent(method, path)[index].content)


def accept(api: CannedAPI, make_operation: MakeOp, method: str, path: str, **done: Any) -> None:
    """`method path` answers 202 with op-1, which is then polled as succeeded with `done`."""
    api.answer(method, path, json_response(make_operation(**done), 202))
    api.answer(
        "GET", "/v1/operations/op-1", json_response(make_operation(**done, state="succeeded"))
    )


def test_the_default_snapshot_name_is_a_valid_name_from_the_time() -> None:
    assert (
        default_snapshot_name(datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)) == "snap-20250304-050607"
    )


def test_snapshot_create_sends_the_options_and_says_what_was_taken(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    accept(api, make_operation, "POST", SNAPS, kind="snapshot-create", target="vm1",
           message="snapshot s1 of vm1 taken (disks and memory, 40 ms)")  # fmt: skip
    result = corral("snapshot", "create", "vm1", "s1", "--memory", "--description", "pre")
    assert result.exit_code == 0, result.output
    assert body(api, "POST", SNAPS) == {
        "name": "s1", "memory": True, "quiesce": True, "description": "pre",
    }  # fmt: skip
    assert result.stdout == (
        "Took snapshot s1 of vm1: snapshot s1 of vm1 taken (disks and memory, 40 ms).\n"
    )

    unnamed = corral("snapshot", "create", "vm1", "--no-quiesce")
    assert unnamed.exit_code == 0, unnamed.output
    sent = body(api, "POST", SNAPS, 1)
    assert re.fullmatch(r"snap-\d{8}-\d{6}", sent["name"]) and sent["quiesce"] is False


def test_snapshot_create_on_raw_disks_exits_1_with_the_code(corral: Any, api: CannedAPI) -> None:
    api.answer("POST", SNAPS, problem(422, "snapshot_needs_qcow2", "volume old is raw"))
    result = corral("snapshot", "create", "vm1", "s1")
    assert result.exit_code == 1
    assert "Error: volume old is raw (code: snapshot_needs_qcow2)" in result.stderr
    assert "Traceback" not in result.output


def test_snapshot_list_draws_the_tree_with_the_current_one_marked(
    corral: Any, api: CannedAPI
) -> None:
    snapshots = [
        sample_snapshot("base"),
        sample_snapshot("upgrade", parent="base", memory=True),
        sample_snapshot("fix", parent="base", current=True),
        sample_snapshot("later", parent="upgrade"),
    ]
    api.answer("GET", SNAPS, json_response(snapshots))
    tree = corral("snapshot", "list", "vm1")
    assert tree.exit_code == 0, tree.output
    lines = tree.stdout.splitlines()
    assert lines[0] == "vm1"
    names = [next(w for w in ("base", "upgrade", "later", "fix") if f" {w} " in f"{line} ")
             for line in lines[1:]]  # fmt: skip
    assert names == ["base", "upgrade", "later", "fix"]  # children under their parents
    indent = {
        name: len(line) - len(line.lstrip("│├└─ "))
        for name, line in zip(names, lines[1:], strict=True)
    }
    assert indent["base"] < indent["upgrade"] == indent["fix"] < indent["later"]
    assert "<- current" in lines[4] and "current" not in "".join(lines[1:4])
    assert "disks and memory" in lines[2] and "disks, quiesced" in lines[1]

    as_json = corral("snapshot", "list", "vm1", "-o", "json")
    assert [s["name"] for s in json.loads(as_json.stdout)] == ["base", "upgrade", "fix", "later"]


def test_snapshot_list_of_none_says_how_to_take_one(corral: Any, api: CannedAPI) -> None:
    api.answer("GET", SNAPS, json_response([]))
    result = corral("snapshot", "list", "vm1")
    assert result.exit_code == 0 and result.stdout == ""
    assert "corral snapshot create vm1" in result.stderr


def test_snapshot_show_revert_and_delete(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    api.answer("GET", f"{SNAPS}/s1", json_response(sample_snapshot("s1", current=True)))
    shown = corral("snapshot", "show", "vm1", "s1")
    assert shown.exit_code == 0 and "Current" in shown.stdout and "data" in shown.stdout

    accept(api, make_operation, "POST", f"{SNAPS}/s1/actions/revert", kind="snapshot-revert",
           message="instance vm1 is back at snapshot s1 (2.0 s); the guest runs again")  # fmt: skip
    reverted = corral("snapshot", "revert", "vm1", "s1")
    assert reverted.exit_code == 0, reverted.output
    assert "Reverted vm1 to snapshot s1: instance vm1 is back at snapshot s1" in reverted.stdout

    api.answer("DELETE", f"{SNAPS}/s1", json_response(make_operation(kind="snapshot-delete"), 202))
    deleted = corral("snapshot", "delete", "vm1", "s1")
    assert deleted.exit_code == 0 and deleted.stdout.startswith("Deleted snapshot s1 of vm1")


def test_backup_create_reports_the_point_it_wrote(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    point = sample_backup("b0002", parent="b0001", size_bytes=3 * 1024**2)
    accept(api, make_operation, "POST", BACKUPS, kind="backup", target_kind="volume",
           target="data", result={"backup": point.model_dump(mode="json")})  # fmt: skip
    result = corral("backup", "create", "data")
    assert result.exit_code == 0, result.output
    assert body(api, "POST", BACKUPS) == {"full": False}
    assert result.stdout == "Backed up volume data: b0002 (incremental on top of b0001, 3M).\n"

    corral("backup", "create", "data", "--full")
    assert body(api, "POST", BACKUPS, 1) == {"full": True}


def test_backup_list_shows_id_kind_parent_size_created_reason(corral: Any, api: CannedAPI) -> None:
    points = [
        sample_backup("b0001", reason="the first backup of the volume"),
        sample_backup("b0002", parent="b0001", size_bytes=1024**2),
    ]
    api.answer("GET", BACKUPS, json_response(points))
    table = corral("backup", "list", "data")
    assert table.exit_code == 0, table.output
    header, first, second = table.stdout.splitlines()
    for column in ("ID", "KIND", "PARENT", "SIZE", "CREATED", "REASON"):
        assert column in header
    assert first.split()[:4] == ["b0001", "full", "-", "64M"]
    assert "the first backup of the volume" in first
    assert second.split()[:4] == ["b0002", "incremental", "b0001", "1M"]
    as_json = corral("backup", "list", "data", "-o", "json")
    assert [p["id"] for p in json.loads(as_json.stdout)] == ["b0001", "b0002"]


def test_backup_restore_and_delete(corral: Any, api: CannedAPI, make_operation: MakeOp) -> None:
    accept(api, make_operation, "POST", f"{BACKUPS}/b0002/actions/restore",
           kind="backup-restore", target_kind="volume", target="copy")  # fmt: skip
    restored = corral("backup", "restore", "data", "b0002", "--to", "copy", "--pool", "fast")
    assert restored.exit_code == 0, restored.output
    assert body(api, "POST", f"{BACKUPS}/b0002/actions/restore") == {
        "volume": "copy", "pool": "fast",
    }  # fmt: skip
    assert restored.stdout.startswith("Restored data/b0002 to volume copy")
    missing = corral("backup", "restore", "data", "b0002")
    assert missing.exit_code == 2  # --to is required

    in_use = problem(409, "backup_in_use", "restore point 'b0001' is the base of b0002")
    deleting = json_response(make_operation(kind="backup-delete", message="deleted"), 202)
    api.answer("DELETE", f"{BACKUPS}/b0001", in_use, deleting)
    refused = corral("backup", "delete", "data", "b0001")
    assert refused.exit_code == 1 and "(code: backup_in_use)" in refused.stderr
    chained = corral("backup", "delete", "data", "b0001", "--chain", "--no-wait")
    assert chained.exit_code == 0, chained.output
    assert api.sent("DELETE", f"{BACKUPS}/b0001")[1].url.params["chain"] == "true"
    assert chained.stdout.startswith("Accepted: backup-delete")
