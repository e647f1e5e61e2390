"""The work queue: one pass per key at a time, keys in parallel, duplicates folded, backoff."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

from corral.controller.workqueue import WorkQueue
from corral.errors import TemporaryError
from tests.controller.conftest import wait_until


async def test_a_key_is_never_handled_twice_at_once_but_keys_run_in_parallel() -> None:
    active: Counter[str] = Counter()
    peak_per_key: Counter[str] = Counter()
    peak_total = 0
    calls: Counter[str] = Counter()

    async def handle(key: str) -> None:
        nonlocal peak_total
        calls[key] += 1
        active[key] += 1
        peak_per_key[key] = max(peak_per_key[key], active[key])
        peak_total = max(peak_total, sum(active.values()))
        await asyncio.sleep(0.05)
        active[key] -= 1

    queue = WorkQueue(handle, workers=4)
    queue.start()
    try:
        for _ in range(5):
            for key in ("a", "b", "c"):
                queue.add(key)
        await asyncio.sleep(0.01)
        queue.add("a")  # while "a" runs: handled once more afterwards
        await wait_until(lambda: queue.idle, 2, "idle")
    finally:
        await queue.stop()
    assert max(peak_per_key.values()) == 1
    assert peak_total == 3
    assert calls == {"a": 2, "b": 1, "c": 1}


async def test_temporary_errors_are_retried_with_backoff() -> None:
    attempts: list[float] = []

    async def handle(key: str) -> None:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise TemporaryError("not yet", delay=0.0)

    queue = WorkQueue(handle, workers=1, base_delay_s=0.05)
    queue.start()
    try:
        queue.add("k")
        await wait_until(lambda: len(attempts) >= 3 and queue.idle, 3, "three attempts")
    finally:
        await queue.stop()
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09  # 0.05, then 0.1
    assert queue.backoff_s("k") == 0.0  # success resets it


async def test_an_unexpected_error_does_not_kill_the_worker() -> None:
    handled: list[str] = []

    async def handle(key: str) -> None:
        handled.append(key)
        if key == "bad" and handled.count("bad") == 1:
            raise RuntimeError("boom")

    queue = WorkQueue(handle, workers=1, base_delay_s=0.01)
    queue.start()
    try:
        queue.add("bad")
        queue.add("good")
        await wait_until(lambda: handled.count("bad") == 2 and "good" in handled, 2, "retry")
    finally:
        await queue.stop()
