"""An agent with one call held at a gate, to stop the controller in the middle of that call:
what a kill -9 of the server does to work in flight, without killing the test process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from corral.bus.local import HostAgent


class GatedAgent:
    """Delegates everything to `inner`; `method` first does the real call (when `call_through`)
    and `side_effect(*args)`, then waits at the gate until released or cancelled."""

    def __init__(
        self,
        inner: HostAgent,
        method: str,
        *,
        call_through: bool,
        side_effect: Callable[..., None] | None = None,
    ) -> None:
        self.inner = inner
        self.method = method
        self.call_through = call_through
        self.side_effect = side_effect
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def __repr__(self) -> str:
        return f"GatedAgent({self.method!r}, entered={self.entered.is_set()})"

    def __getattr__(self, name: str) -> Any:
        if name == self.method:
            return self._gated
        return getattr(self.inner, name)

    async def _gated(self, *args: Any, **kwargs: Any) -> Any:
        result = None
        if self.call_through:
            result = await getattr(self.inner, self.method)(*args, **kwargs)
        if self.side_effect is not None:
            self.side_effect(*args)
        self.entered.set()
        await self.release.wait()
        return result


def gate(method: str, *, call_through: bool, side_effect: Callable[..., None] | None = None) -> Any:
    """A `wrap` for start_harness that holds `method` at a gate (the GatedAgent is the agent)."""

    def wrap(agent: HostAgent) -> Any:
        return GatedAgent(agent, method, call_through=call_through, side_effect=side_effect)

    return wrap
