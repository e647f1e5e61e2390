"""A pure decoder for server-sent events (text/event-stream), fed one line at a time.

Kept free of I/O so the framing rules (multi-line data, comments, `retry:`, the optional space
after the colon) are tested as a table, and the reconnecting reader stays small.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: `data` joins the event's data lines with newlines."""

    data: str
    event: str = "message"
    id: str | None = None


@dataclass
class SSEDecoder:
    """Accumulates fields until a blank line dispatches an event (the WHATWG rules, minus BOM)."""

    last_event_id: str | None = None
    retry_ms: int | None = None
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _saw_field: bool = False

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line (without its line ending); return an event when the line completes one."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: servers send these as keep-alives
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._saw_field = True
        elif name == "event":
            self._event = value
            self._saw_field = True
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
            self._saw_field = True
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event, saw = self._data, self._event, self._saw_field
        self._data, self._event, self._saw_field = [], "", False
        if not saw or not data:
            return None  # the spec drops events without data
        return ServerSentEvent(
            data="\n".join(data), event=event or "message", id=self.last_event_id
        )
