"""Canned answers for tests of code that uses the client (the CLI, scripts, front ends).

`CannedAPI` is an httpx handler: give it answers per (method, path), hand `api.transport()` to a
client, then assert on `api.requests`. It has no server logic on purpose; tests say exactly what
the server answers, so a test shows the contract it relies on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel

from corral.model import Instance, InstanceSpec, InstanceStatus, Operation
from corral.model.snapshot import BackupKind, BackupPoint, Snapshot, SnapshotState
from corral.model.storage import (
    Pool,
    PoolSpec,
    PoolStatus,
    Volume,
    VolumeSpec,
    VolumeStatus,
)

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


def json_response(
    body: BaseModel | Sequence[BaseModel] | dict[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A JSON answer; a list of models becomes the API's `{"items": [...]}` envelope."""
    if isinstance(body, BaseModel):
        payload: Any = body.model_dump(mode="json")
    elif isinstance(body, dict):
        payload = body
    else:
        payload = {"items": [item.model_dump(mode="json") for item in body]}
    return httpx.Response(status, json=payload, headers=headers)


def problem(status: int, code: str, detail: str, field: str | None = None) -> httpx.Response:
    """An application/problem+json answer shaped as docs/api.md says."""
    body: dict[str, Any] = {
        "type": f"https://corral.dev/errors/{code}",
        "title": code.replace("_", " "),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if field is not None:
        body["field"] = field
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/problem+json"},
    )


class CannedAPI:
    """Answers requests from a table; answers for one route are used in order, the last repeats.

    Streaming answers (server-sent events) must be callables that build a fresh response.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Answer]] = {}
        self.requests: list[httpx.Request] = []

    def answer(self, method: str, path: str, *answers: Answer) -> None:
        """Serve `answers` for `method path` (path without the query string)."""
        self.routes[(method.upper(), path)] = list(answers)

    def transport(self) -> httpx.MockTransport:
        """The transport to give AsyncCorralClient/CorralClient."""
        return httpx.MockTransport(self)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        """The requests received for `method path`, oldest first."""
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if not answers:
            return problem(
                404, "not_found", f"no canned answer for {request.method} {request.url.path}"
            )
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, httpx.Response):
            # A fresh copy each time: a repeated answer must not share a consumed response.
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )
        return answer(request)


SAMPLE_TIME = datetime(2025, 1, 1, tzinfo=UTC)


def sample_instance(name: str = "vm1", memory_mib: int = 256, **status: Any) -> Instance:
    """An Instance as the server would send it, with `status` fields as given."""
    return Instance(
        name=name,
        uid=f"uid-{name}",
        created_at=SAMPLE_TIME,
        updated_at=SAMPLE_TIME,
        spec=InstanceSpec(image="tiny", memory_mib=memory_mib),
        status=InstanceStatus(**status),
    )


def sample_operation(op_id: str = "op-1", **fields: Any) -> Operation:
    """An Operation as the server would send it (a running create of vm1 unless told)."""
    values: dict[str, Any] = {
        "kind": "create",
        "target_kind": "instance",
        "target": "vm1",
        "created_at": SAMPLE_TIME,
        "updated_at": SAMPLE_TIME,
    }
    values.update(fields)
    return Operation(id=op_id, **values)


def sample_pool(name: str = "default", spec: PoolSpec | None = None, **status: Any) -> Pool:
    """A Pool as the server would send it (a `dir` pool unless told), `status` fields as given."""
    return Pool(
        name=name,
        uid=f"uid-{name}",
        created_at=SAMPLE_TIME,
        updated_at=SAMPLE_TIME,
        spec=spec or PoolSpec(),
        status=PoolStatus(**status),
    )


def sample_volume(
    name: str = "data",
    pool: str = "default",
    size_bytes: int = 1024**3,
    generation: int = 1,
    **status: Any,
) -> Volume:
    """A blank Volume as the server would send it, with `status` fields as given."""
    return Volume(
        name=name,
        uid=f"uid-{name}",
        generation=generation,
        created_at=SAMPLE_TIME,
        updated_at=SAMPLE_TIME,
        spec=VolumeSpec(pool=pool, size_bytes=size_bytes),
        status=VolumeStatus(**status),
    )


def sample_snapshot(
    name: str = "s1",
    instance: str = "vm1",
    parent: str | None = None,
    *,
    current: bool = False,
    memory: bool = False,
    state: SnapshotState = SnapshotState.READY,
) -> Snapshot:
    """A Snapshot as the server would send it (a ready disk-only snapshot unless told)."""
    return Snapshot(
        instance=instance,
        name=name,
        uid=f"uid-{name}",
        parent=parent,
        memory=memory,
        quiesced=not memory,
        volumes=["data"],
        state=state,
        current=current,
        created_at=SAMPLE_TIME,
        duration_ms=12.0,
    )


def sample_backup(
    point: str = "b0001",
    volume: str = "data",
    parent: str | None = None,
    size_bytes: int = 64 * 1024**2,
    reason: str = "",
) -> BackupPoint:
    """A BackupPoint as the server would send it (full unless it has a parent)."""
    return BackupPoint(
        volume=volume,
        id=point,
        kind=BackupKind.INCREMENTAL if parent else BackupKind.FULL,
        parent=parent,
        path=f"/var/lib/corral/backups/{volume}/{point}.qcow2",
        size_bytes=size_bytes,
        virtual_size_bytes=1024**3,
        created_at=SAMPLE_TIME,
        duration_ms=250.0,
        reason=reason,
    )
