"""One QMP monitor connection per guest (qemu.qmp's QMPClient), and QMP events as AgentEvents.

qemu.qmp's errors stop here: everything that leaves this module is a CorralError with the
qemu.qmp cause kept (`raise HostError(...) from err`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError, QMPClient, QMPError, Runstate

from corral.agent.compute.qemu.cmdline import GUEST_AGENT_DEVICE_ID
from corral.errors import HostError
from corral.model.rpc import AgentEvent, AgentEventKind, GuestRunState

log = logging.getLogger(__name__)

# QEMU runstates (query-status "status") that mean "alive but not running guest code".
_SHUTDOWN_STATUSES = {"shutdown"}
# QMP SHUTDOWN "reason" -> exit_reason, when nobody here asked for the exit.
_EXIT_REASONS = {
    "guest-shutdown": "guest-poweroff",
    "guest-panic": "guest-panic",
    "guest-reset": "guest-reboot",
    "host-qmp-quit": "quit",
    "host-signal": "host-signal",
}


def run_state_from_qmp_status(status: str) -> GuestRunState:
    """QEMU's own runstate -> ours: running, shutdown, and every other state is PAUSED."""
    if status == "running":
        return GuestRunState.RUNNING
    if status in _SHUTDOWN_STATUSES:
        return GuestRunState.SHUTDOWN
    return GuestRunState.PAUSED


def exit_reason(intent: str | None, shutdown_reason: str | None) -> str:
    """Why a guest's QEMU exited, from what we asked (`intent`) and QMP SHUTDOWN's reason."""
    if intent == "shutdown" and shutdown_reason not in (None, "guest-shutdown"):
        return f"shutdown ({shutdown_reason})"
    if intent:
        return intent
    if shutdown_reason:
        return _EXIT_REASONS.get(shutdown_reason, shutdown_reason)
    return "unexpected-exit"


def _event_time(event: Mapping[str, object]) -> datetime:
    stamp = event.get("timestamp")
    if isinstance(stamp, Mapping):
        seconds, micros = stamp.get("seconds"), stamp.get("microseconds")
        if isinstance(seconds, int) and isinstance(micros, int) and seconds >= 0:
            return datetime.fromtimestamp(seconds + micros / 1e6, UTC)
    return datetime.now(UTC)


def qmp_error_class(err: BaseException) -> str | None:
    """QEMU's error class ("DeviceNotFound", "GenericError", ...) behind a HostError that
    GuestMonitor.execute raised for a command QEMU refused; None for any other error."""
    cause = err.__cause__
    return cause.error_class if isinstance(cause, ExecuteError) else None


def agent_event_from_qmp(name: str, event: Mapping[str, object]) -> AgentEvent | None:
    """Map one QMP event to the AgentEvent the controller cares about (None: not interesting).

    POWERDOWN (the host *asked* for an ACPI power-off) has no AgentEvent of its own: it is not
    a state change; the SHUTDOWN that follows when the guest complies is.
    """
    kind_name = str(event.get("event", ""))
    raw = event.get("data")
    data: dict[str, object] = dict(raw) if isinstance(raw, Mapping) else {}
    detail: dict[str, object] = {"qmp_event": kind_name, **data}
    kind: AgentEventKind | None = None
    if kind_name == "SHUTDOWN":
        kind = AgentEventKind.SHUTDOWN
    elif kind_name == "STOP":
        kind = AgentEventKind.STOPPED
    elif kind_name == "RESUME":
        kind = AgentEventKind.RESUMED
    elif kind_name == "RESET":
        kind = AgentEventKind.RESET
    elif kind_name == "GUEST_PANICKED":
        # The panic action decides what QEMU does next: pause (STOPPED) or power off (SHUTDOWN).
        action = data.get("action")
        kind = AgentEventKind.SHUTDOWN if action == "poweroff" else AgentEventKind.STOPPED
        detail["panicked"] = True
    elif (
        kind_name == "VSERPORT_CHANGE"
        and data.get("id") == GUEST_AGENT_DEVICE_ID
        and data.get("open") is True
    ):
        kind = AgentEventKind.GUEST_AGENT_UP
    if kind is None:
        return None
    return AgentEvent(name=name, kind=kind, detail=detail, time=_event_time(event))


class MonitorState(Enum):
    """Where a GuestMonitor is: never connected, connected, or closed for good."""

    IDLE = "idle"
    CONNECTED = "connected"
    CLOSED = "closed"


QmpEventHandler = Callable[[dict[str, Any]], None]


class GuestMonitor:
    """The QMP monitor of one guest's QEMU: commands, and a pump that hands events on.

    The socket accepts one client at a time, so this is the only monitor of the guest. If the
    connection drops while QEMU lives, the next command reconnects.
    """

    def __init__(self, name: str, socket_path: Path, on_event: QmpEventHandler) -> None:
        self.name = name
        self.socket_path = socket_path
        self.on_event = on_event  # called on the event loop for every QMP event
        self._log = log.getChild(name)
        self._client = QMPClient(name)
        self._state = MonitorState.IDLE
        self._pump: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()
        self._waiters: list[tuple[str, dict[str, object], asyncio.Future[dict[str, Any]]]] = []

    def __repr__(self) -> str:
        return (
            f"GuestMonitor(name={self.name!r}, state={self._state.value}, "
            f"qmp={self._client.runstate.name})"
        )

    @property
    def connected(self) -> bool:
        """True while the QMP session is up."""
        return self._client.runstate == Runstate.RUNNING

    async def connect(self, timeout_s: float = 5.0) -> None:
        """Connect and negotiate (idempotent); start the event pump."""
        async with self._connect_lock:
            if self._state is MonitorState.CLOSED:
                raise HostError(f"monitor of guest {self.name!r} is closed")
            if self.connected:
                return
            await self._reset_client()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._client.connect(str(self.socket_path))
            except (QMPError, OSError, TimeoutError) as err:
                await self._reset_client()
                raise HostError(
                    f"cannot connect to the QMP monitor of guest {self.name!r} at "
                    f"{self.socket_path}: {err}; is its QEMU running?"
                ) from err
            self._state = MonitorState.CONNECTED
            if self._pump is None:
                self._pump = asyncio.get_running_loop().create_task(
                    self._pump_events(), name=f"qmp-events-{self.name}"
                )
            self._log.debug("QMP connected")

    async def execute(
        self, command: str, arguments: Mapping[str, object] | None = None, timeout_s: float = 10.0
    ) -> object:
        """Run one QMP command and return its "return" value."""
        if not self.connected:
            await self.connect()
        try:
            async with asyncio.timeout(timeout_s):
                return await self._client.execute(command, arguments)
        except ExecuteError as err:
            raise HostError(
                f"QMP {command} failed on guest {self.name!r}: {err.error_class}: {err}"
            ) from err
        except (QMPError, OSError, EOFError, TimeoutError) as err:
            raise HostError(
                f"QMP {command} on guest {self.name!r} got no answer: "
                f"{type(err).__name__} {err}; the QEMU process may have exited"
            ) from err

    @contextlib.contextmanager
    def expecting(self, event: str, **data: object) -> Iterator[asyncio.Future[dict[str, Any]]]:
        """A future for the next `event` whose data holds `data` (e.g. DEVICE_DELETED with
        device="disk1"). Enter before sending the command that causes it, so a quick event is
        not missed; leaving the block forgets the expectation."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiter = (event, dict(data), future)
        self._waiters.append(waiter)
        try:
            yield future
        finally:
            self._waiters.remove(waiter)
            future.cancel()

    def _resolve_waiters(self, event: Mapping[str, Any]) -> None:
        raw = event.get("data")
        data: Mapping[str, object] = raw if isinstance(raw, Mapping) else {}
        for name, wanted, future in self._waiters:
            if future.done() or event.get("event") != name:
                continue
            if all(data.get(key) == value for key, value in wanted.items()):
                future.set_result(dict(event))

    async def quit_quietly(self) -> None:
        """Ask QEMU to quit; the connection may drop before the answer, which is fine (the
        caller checks the process and escalates to SIGKILL)."""
        try:
            await self.execute("quit", timeout_s=5.0)
        except HostError as err:
            self._log.debug("quit: %s", err)

    async def query_status(self) -> str:
        """QEMU's runstate ("running", "paused", "shutdown", ...)."""
        reply = await self.execute("query-status")
        if not isinstance(reply, Mapping) or not isinstance(reply.get("status"), str):
            raise HostError(f"QMP query-status on guest {self.name!r} answered {reply!r}")
        return str(reply["status"])

    async def drain(self, timeout_s: float) -> None:
        """After QEMU exited: wait (bounded) until its last events have been read and handed on."""
        if self._pump is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                while self._client.runstate == Runstate.RUNNING:
                    await self._client.runstate_changed()
                # An event leaves the queue only when the pump takes it and handles it at once.
                while not self._client.events.empty():
                    await asyncio.sleep(0)
        except TimeoutError:
            self._log.debug("QMP connection still open %.1f s after QEMU exited", timeout_s)

    async def close(self) -> None:
        """Disconnect for good (QEMU keeps running)."""
        self._state = MonitorState.CLOSED
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        await self._reset_client()

    async def _reset_client(self) -> None:
        # After QEMU hangs up, qemu.qmp sits in DISCONNECTING until disconnect() is called, and
        # disconnect() re-raises the hang-up (EOFError): expected here, so not an error.
        if self._client.runstate != Runstate.IDLE:
            try:
                await self._client.disconnect()
            except (QMPError, OSError, EOFError) as err:
                self._log.debug("QMP disconnect: %s", err)

    async def _pump_events(self) -> None:
        listener = self._client.events
        while True:
            event = await listener.get()
            # The default listener also keeps every event in a history list forever; a guest
            # that lives for months must not grow it without bound.
            listener._history.clear()
            self._log.debug("QMP event %s", event.get("event"))
            self._resolve_waiters(event)
            try:
                self.on_event(dict(event))
            except Exception:
                self._log.exception("QMP event handler failed on %s", event.get("event"))
