"""`corral create --from-snapshot` and `corral volume create --from-snapshot` against canned
answers: the request bodies, the source's spec filled in, and usage errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from corral.client.testing import CannedAPI, json_response, sample_instance, sample_volume
from corral.model import Instance, Operation

MakeOp = Callable[..., Operation]
MakeInst = Callable[..., Instance]


def _answer_create(api: CannedAPI, make_operation: MakeOp, make_instance: MakeInst) -> None:
    api.answer("POST", "/v1/instances", json_response(make_operation(), 202))
    api.answer("GET", "/v1/operations/op-1", json_response(make_operation(state="succeeded")))
    api.answer("GET", "/v1/instances/vm1", json_response(make_instance(state="running")))
    web = sample_instance("web", memory_mib=768)
    web.spec.cpus = 2
    api.answer("GET", "/v1/instances/web", json_response(web))


@pytest.mark.parametrize("linked", [False, True])
def test_create_from_snapshot_copies_the_source_spec_and_sends_from_snapshot(
    corral: Any, api: CannedAPI, make_operation: MakeOp, make_instance: MakeInst, linked: bool
) -> None:
    _answer_create(api, make_operation, make_instance)
    args = ["--linked"] if linked else []
    result = corral("create", "vm1", "--from-snapshot", "web/s1", "--cpus", "4", *args)
    assert result.exit_code == 0, result.output
    body = json.loads(api.sent("POST", "/v1/instances")[0].content)
    assert body == {
        "name": "vm1",
        "spec": {"image": "tiny", "cpus": 4, "memory_mib": 768, "machine": "pc"},
        "from_snapshot": {"instance": "web", "snapshot": "s1", "linked": linked},
    }


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--from-snapshot", "web"], "INSTANCE/SNAPSHOT"),
        (["--from-snapshot", "web/"], "INSTANCE/SNAPSHOT"),
        (["--image", "tiny", "--linked"], "--from-snapshot"),
        ([], "--image"),
    ],
)
def test_bad_from_snapshot_usage_sends_nothing(
    corral: Any, api: CannedAPI, args: list[str], why: str
) -> None:
    result = corral("create", "vm1", *args)
    assert result.exit_code == 2, result.output
    assert why in result.output
    assert api.requests == []


def test_volume_create_from_snapshot_sends_a_snapshot_source(
    corral: Any, api: CannedAPI, make_operation: MakeOp
) -> None:
    op = make_operation(kind="volume-create", target_kind="volume", target="copy")
    api.answer("POST", "/v1/volumes", json_response(op, 202))
    api.answer("GET", "/v1/operations/op-1",
               json_response(make_operation(kind="volume-create", state="succeeded")))  # fmt: skip
    api.answer("GET", "/v1/volumes/copy", json_response(sample_volume("copy", state="ready")))

    result = corral("volume", "create", "copy", "--from-snapshot", "data@s1")

    assert result.exit_code == 0, result.output
    body = json.loads(api.sent("POST", "/v1/volumes")[0].content)
    assert body == {
        "name": "copy",
        "spec": {"source": {"kind": "snapshot", "volume": "data", "snapshot": "s1"}},
    }


@pytest.mark.parametrize("value", ["data", "data@", "@s1"])
def test_volume_from_snapshot_needs_volume_at_snapshot(
    corral: Any, api: CannedAPI, value: str
) -> None:
    result = corral("volume", "create", "copy", "--from-snapshot", value)
    assert result.exit_code == 2 and "VOLUME@SNAPSHOT" in result.output
    assert api.requests == []
