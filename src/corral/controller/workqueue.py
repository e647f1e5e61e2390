"""A per-object work queue: sequential per key, parallel across keys, deduplicated, with backoff.

As in client-go and kopf: a key waits in the queue at most once however often it is added; a
key added while it is being handled is handled once more afterwards (never twice at once); a
handler that raises TemporaryError (or anything unexpected) is retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from corral.errors import TemporaryError

log = logging.getLogger(__name__)

Handler = Callable[[str], Awaitable[None]]


class WorkQueue:
    """Keys in, one handler call per key at a time, `workers` keys at once."""

    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "work",
        workers: int = 32,
        base_delay_s: float = 0.25,
        max_delay_s: float = 30.0,
    ) -> None:
        self.name = name
        self._handler = handler
        self._workers_wanted = workers
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._dirty: set[str] = set()  # added and not yet picked up
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"WorkQueue({self.name!r}, queued={self._queue.qsize()}, "
            f"processing={len(self._processing)})"
        )

    # -- adding ------------------------------------------------------------------------------
    def add(self, key: str) -> None:
        """Handle `key` soon (once, however often it is added before a worker takes it)."""
        if self._closed or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay_s: float) -> None:
        """Handle `key` after `delay_s` (an earlier pending timer for it wins)."""
        if self._closed:
            return
        if delay_s <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        if existing is not None:
            if existing.when() <= loop.time() + delay_s:
                return
            existing.cancel()
        self._timers[key] = loop.call_later(delay_s, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def backoff_s(self, key: str) -> float:
        """The delay the next retry of `key` would get."""
        failures = self._failures.get(key, 0)
        if failures == 0:
            return 0.0
        return float(min(self._max_delay_s, self._base_delay_s * 2 ** (failures - 1)))

    def is_busy(self, key: str) -> bool:
        """True while `key` is queued, being handled, or waiting for a retry."""
        return key in self._dirty or key in self._processing or key in self._timers

    @property
    def idle(self) -> bool:
        """True when nothing is queued, handled, or waiting for a retry."""
        return not (self._dirty or self._processing or self._timers)

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker tasks on the running loop."""
        for index in range(self._workers_wanted):
            task = asyncio.get_running_loop().create_task(
                self._work(), name=f"{self.name}-worker-{index}"
            )
            self._workers.append(task)

    async def stop(self) -> None:
        """Cancel the workers and pending retries; keys still queued are dropped."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._dirty.discard(key)
            self._processing.add(key)
            try:
                await self._handle(key)
            finally:
                self._processing.discard(key)
                if key in self._dirty and not self._closed:
                    self._queue.put_nowait(key)

    async def _handle(self, key: str) -> None:
        try:
            await self._handler(key)
        except asyncio.CancelledError:
            raise
        except TemporaryError as err:
            self._failures[key] = self._failures.get(key, 0) + 1
            delay = max(err.delay, self.backoff_s(key))
            log.info("%s %r: %s; retrying in %.1fs", self.name, key, err.message, delay)
            self.add_after(key, delay)
        except Exception:
            self._failures[key] = self._failures.get(key, 0) + 1
            delay = self.backoff_s(key)
            log.exception("%s %r failed unexpectedly; retrying in %.1fs", self.name, key, delay)
            self.add_after(key, delay)
        else:
            self._failures.pop(key, None)
