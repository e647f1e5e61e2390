"""What QEMU says about block nodes (internal snapshots, dirty bitmaps) and about its jobs, and
waiting for a job to reach a state.

Jobs are started with `auto-dismiss: false` (snapshot-save/-load/-delete always are), so a job
that ended stays in query-jobs as "concluded" (with "error" when it failed) until dismissed: an
agent that restarts finds the outcome of what its predecessor started. Waiting polls query-jobs
(a few QMP round trips per second): it needs no event subscription that a reconnect could miss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from corral.agent.compute.qemu.qmp import GuestMonitor
from corral.errors import HostError

log = logging.getLogger(__name__)

POLL_FIRST_S = 0.02
POLL_MAX_S = 0.2
CONCLUDED = "concluded"


@dataclass(frozen=True)
class InternalSnapshot:
    """One internal snapshot of a qcow2 node."""

    name: str
    vmstate_bytes: int


@dataclass(frozen=True)
class DirtyBitmap:
    """One named dirty bitmap of a node."""

    name: str
    persistent: bool
    inconsistent: bool
    busy: bool  # in use by a job (a backup runs on it)
    dirty_bytes: int


@dataclass(frozen=True)
class NodeState:
    """A block node's internal snapshots and named dirty bitmaps."""

    name: str
    snapshots: list[InternalSnapshot] = field(default_factory=list)
    bitmaps: dict[str, DirtyBitmap] = field(default_factory=dict)

    def snapshot(self, tag: str) -> InternalSnapshot | None:
        """The first snapshot named `tag` (QEMU allows duplicates; Corral never makes them)."""
        return next((s for s in self.snapshots if s.name == tag), None)


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def parse_node_states(query_named_block_nodes: object) -> dict[str, NodeState]:
    """Node name -> NodeState, from the answer of query-named-block-nodes (flat). Bitmaps with
    no name (the ones a running backup job makes for itself) are left out."""
    states: dict[str, NodeState] = {}
    for entry in query_named_block_nodes if isinstance(query_named_block_nodes, list) else []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("node-name"), str):
            continue
        image = entry.get("image")
        raw_snapshots = image.get("snapshots") if isinstance(image, Mapping) else None
        snapshots = [
            InternalSnapshot(name=str(s["name"]), vmstate_bytes=_int(s.get("vm-state-size")))
            for s in (raw_snapshots if isinstance(raw_snapshots, list) else [])
            if isinstance(s, Mapping) and isinstance(s.get("name"), str)
        ]
        bitmaps: dict[str, DirtyBitmap] = {}
        raw_bitmaps = entry.get("dirty-bitmaps")
        for b in raw_bitmaps if isinstance(raw_bitmaps, list) else []:
            if isinstance(b, Mapping) and isinstance(b.get("name"), str):
                bitmaps[b["name"]] = DirtyBitmap(
                    name=b["name"],
                    persistent=bool(b.get("persistent")),
                    inconsistent=bool(b.get("inconsistent")),
                    busy=bool(b.get("busy")),
                    dirty_bytes=_int(b.get("count")),
                )
        states[entry["node-name"]] = NodeState(entry["node-name"], snapshots, bitmaps)
    return states


async def node_states(monitor: GuestMonitor) -> dict[str, NodeState]:
    """Every named node's snapshots and bitmaps now."""
    return parse_node_states(await monitor.execute("query-named-block-nodes", {"flat": True}))


@dataclass(frozen=True)
class JobInfo:
    """One entry of query-jobs."""

    id: str
    type: str
    status: str
    current: int
    total: int
    error: str | None

    @property
    def concluded(self) -> bool:
        """The job ended (successfully when `error` is None) and waits to be dismissed."""
        return self.status == CONCLUDED


def parse_jobs(query_jobs: object) -> dict[str, JobInfo]:
    """Job id -> JobInfo, from the answer of query-jobs."""
    jobs: dict[str, JobInfo] = {}
    for entry in query_jobs if isinstance(query_jobs, list) else []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            continue
        error = entry.get("error")
        jobs[entry["id"]] = JobInfo(
            id=entry["id"],
            type=str(entry.get("type", "")),
            status=str(entry.get("status", "")),
            current=_int(entry.get("current-progress")),
            total=_int(entry.get("total-progress")),
            error=str(error) if error is not None else None,
        )
    return jobs


async def query_jobs(monitor: GuestMonitor) -> dict[str, JobInfo]:
    """QEMU's jobs now, by id."""
    return parse_jobs(await monitor.execute("query-jobs"))


async def wait_for_job(
    monitor: GuestMonitor,
    job_id: str,
    until: Collection[str] = (CONCLUDED,),
    on_progress: Callable[[JobInfo], None] | None = None,
) -> JobInfo:
    """Poll until job `job_id` is in one of the `until` states (or concluded); HostError when
    the job vanishes (someone dismissed it, or QEMU is another process now)."""
    delay = POLL_FIRST_S
    while True:
        job = (await query_jobs(monitor)).get(job_id)
        if job is None:
            raise HostError(
                f"QEMU job {job_id!r} of guest {monitor.name!r} disappeared before it ended",
                code="job_lost",
            )
        if on_progress is not None:
            on_progress(job)
        if job.status in until or job.concluded:
            return job
        await asyncio.sleep(delay)
        delay = min(delay * 2, POLL_MAX_S)


async def dismiss_job(monitor: GuestMonitor, job_id: str) -> None:
    """Drop a concluded job from QEMU's list (a job already gone is fine)."""
    try:
        await monitor.execute("job-dismiss", {"id": job_id})
    except HostError as err:
        log.debug("guest %s: job-dismiss %s: %s", monitor.name, job_id, err.message)


async def cancel_job(monitor: GuestMonitor, job_id: str) -> JobInfo | None:
    """Cancel job `job_id` unless it has concluded, wait until it has, and return how it
    ended (None when there is no such job, or another task dismissed it meanwhile). The
    caller dismisses it."""
    job = (await query_jobs(monitor)).get(job_id)
    if job is None:
        return None
    if not job.concluded:
        try:
            await monitor.execute("job-cancel", {"id": job_id})
        except HostError as err:
            # It may have concluded between the query and the cancel: look again.
            log.debug("guest %s: job-cancel %s: %s", monitor.name, job_id, err.message)
        try:
            job = await wait_for_job(monitor, job_id)
        except HostError as err:
            if err.code != "job_lost":
                raise
            return None
    return job
