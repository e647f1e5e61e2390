"""Undo lists for multi-step host changes: each step registers its undo; a failure runs them
in reverse, a success forgets them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


class Reverter:
    """Collects undo steps; on an exception inside `with` runs them newest first.

    An undo that fails is logged and the others still run: the original error is what the caller
    must see, not the cleanup's.
    """

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def __repr__(self) -> str:
        return f"Reverter(pending={[what for what, _ in self._undo]})"

    def add(self, what: str, undo: Callable[[], None]) -> None:
        """Register `undo` (described by `what`) for the step just done."""
        self._undo.append((what, undo))

    def revert(self) -> None:
        """Run every registered undo, newest first, and forget them."""
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception:  # the first failure is the one to report; keep undoing
                log.exception("could not undo %s", what)

    def __enter__(self) -> Reverter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.revert()
        self._undo.clear()
