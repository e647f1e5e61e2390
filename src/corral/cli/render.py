"""How objects look on a terminal (rich tables) and to scripts (JSON on stdout).

Pure formatting: functions take models and return renderables or strings; commands print them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from corral.model import Event, Host, Image, Instance, Operation, format_size

_MIB = 1024 * 1024
_NONE = "-"


# Piped output is for grep and awk: wide enough that ids and names are never cut short.
_PIPE_WIDTH = 250


def stdout_console() -> Console:
    """A console on the current stdout (made per call, so test runners' captures work)."""
    width = None if sys.stdout.isatty() else _PIPE_WIDTH
    return Console(file=sys.stdout, soft_wrap=False, width=width)


def print_json(data: BaseModel | Sequence[BaseModel] | Sequence[str]) -> None:
    """A model as a JSON object, a list as a JSON array: nothing else on stdout."""
    payload: Any
    if isinstance(data, BaseModel):
        payload = data.model_dump(mode="json")
    else:
        payload = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def show(renderable: RenderableType) -> None:
    """Print a table or text to stdout; piped, without the padding at line ends."""
    console = stdout_console()
    if sys.stdout.isatty():
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def age(when: datetime | None, now: datetime | None = None) -> str:
    """Compact age: 42s, 5m, 3h, 2d."""
    if when is None:
        return _NONE
    now = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def memory(mib: int) -> str:
    """MiB as a human size (256M, 1.5G)."""
    return format_size(mib * _MIB)


def _opt(value: object) -> str:
    return _NONE if value is None or value == "" else str(value)


def _when(value: datetime | None) -> str:
    return _NONE if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _state_text(state: str) -> Text:
    colours = {"running": "green", "succeeded": "green", "ready": "green", "failed": "red"}
    return Text(state, style=colours.get(state, "yellow"))


def _details(rows: Sequence[tuple[str, RenderableType | str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def instances_table(instances: Sequence[Instance]) -> Table:
    """`corral list`."""
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "STATE", "READY", "CPUS", "MEMORY", "IMAGE", "PID", "HOST", "AGE"):
        table.add_column(column, no_wrap=True)
    for inst in instances:
        table.add_row(
            inst.name,
            _state_text(inst.status.state),
            "yes" if inst.status.ready else "no",
            str(inst.spec.cpus),
            memory(inst.spec.memory_mib),
            inst.spec.image,
            _opt(inst.status.pid),
            _opt(inst.status.host),
            age(inst.created_at),
        )
    return table


def instance_details(inst: Instance) -> RenderableType:
    """`corral show NAME`: spec, status, then the conditions."""
    status, spec = inst.status, inst.spec
    ready_in = (
        f"{status.create_to_ready_ms / 1000:.2f} s" if status.create_to_ready_ms is not None else ""
    )
    state = Text.assemble(_state_text(status.state), " (ready)" if status.ready else "")
    if inst.deleting:
        state.append(" (deleting)", style="red")
    grid = _details(
        [
            ("Name", inst.name),
            ("UID", inst.uid),
            ("State", state),
            ("Desired power", str(spec.power)),
            ("Image", spec.image),
            ("CPUs", str(spec.cpus)),
            ("Memory", memory(spec.memory_mib)),
            ("Machine", str(spec.machine)),
            ("On crash", str(spec.on_crash)),
            ("Host", _opt(status.host)),
            ("PID", _opt(status.pid)),
            ("Accel", _opt(status.accel)),
            ("Generation", f"{inst.generation} (observed {status.observed_generation})"),
            ("Created", _when(inst.created_at)),
            ("Started", _when(status.started_at)),
            ("Ready", _when(status.ready_at)),
            ("Create to ready", _opt(ready_in)),
        ]
    )
    if not status.conditions:
        return grid
    conditions = Table(title="Conditions", title_justify="left", box=None, pad_edge=False)
    for column in ("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"):
        conditions.add_column(column)
    for cond in status.conditions:
        conditions.add_row(
            cond.type, str(cond.status).lower(), cond.reason, age(cond.since), cond.message
        )
    return Group(grid, Text(""), conditions)


def images_table(images: Sequence[Image]) -> Table:
    """`corral image list`."""
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "STATE", "KIND", "SIZE", "BUILT IN", "DIGEST", "AGE"):
        table.add_column(column, no_wrap=True)
    for image in images:
        table.add_row(
            image.name,
            _state_text(image.state),
            image.kind,
            format_size(image.size_bytes) if image.size_bytes else _NONE,
            f"{image.build_seconds:.1f} s" if image.build_seconds is not None else _NONE,
            image.digest.removeprefix("sha256:")[:12] or _NONE,
            age(image.created_at),
        )
    return table


def image_details(image: Image) -> Table:
    """`corral image show NAME`."""
    return _details(
        [
            ("Name", image.name),
            ("State", _state_text(image.state)),
            ("Kind", image.kind),
            ("Size", format_size(image.size_bytes)),
            ("Digest", _opt(image.digest)),
            ("Recipe", json.dumps(image.recipe) if image.recipe else _NONE),
            ("Kernel", _opt(image.kernel)),
            ("Initrd", _opt(image.initrd)),
            ("Cmdline", _opt(image.cmdline)),
            ("Built in", f"{image.build_seconds:.1f} s" if image.build_seconds else _NONE),
            ("Created", _when(image.created_at)),
            ("Message", _opt(image.message)),
        ]
    )


def hosts_table(hosts: Sequence[Host]) -> Table:
    """`corral hosts`: capacity, allocation, and why the host accelerates the way it does."""
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "STATE", "CPUS", "MEMORY", "INSTANCES", "ACCEL", "QEMU"):
        table.add_column(column, no_wrap=True)
    table.add_column("ACCEL REASON")
    for host in hosts:
        table.add_row(
            host.name,
            _state_text(host.state),
            f"{host.allocated_cpus}/{host.cpus}",
            f"{memory(host.allocated_memory_mib)}/{memory(host.memory_mib)}",
            str(host.instances),
            host.accel,
            _opt(host.qemu_version),
            host.accel_reason,
        )
    return table


def operations_table(operations: Sequence[Operation]) -> Table:
    """`corral operations`."""
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "KIND", "TARGET", "STATE", "PROGRESS", "AGE"):
        table.add_column(column, no_wrap=True)
    table.add_column("MESSAGE")
    for op in operations:
        table.add_row(
            op.id,
            op.kind,
            f"{op.target_kind}/{op.target}",
            _state_text(op.state),
            f"{op.progress:.0%}",
            age(op.created_at),
            op.error.message if op.error else op.message,
        )
    return table


def operation_details(op: Operation) -> Table:
    """`corral operations ID`."""
    rows: list[tuple[str, RenderableType | str]] = [
        ("ID", op.id),
        ("Kind", op.kind),
        ("Target", f"{op.target_kind}/{op.target}"),
        ("State", _state_text(op.state)),
        ("Progress", f"{op.progress:.0%}"),
        ("Message", _opt(op.message)),
        ("Created", _when(op.created_at)),
        ("Updated", _when(op.updated_at)),
    ]
    if op.error:
        rows.append(("Error", Text(f"{op.error.message} (code: {op.error.code})", style="red")))
    if op.result:
        rows.append(("Result", json.dumps(op.result)))
    return _details(rows)


def event_line(event: Event) -> str:
    """One line per event for `corral events`: time, id, type, object, then the data."""
    data = " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in event.data.items()
    )
    when = event.time.astimezone().strftime("%H:%M:%S")
    return f"{when} #{event.id} {event.type} {event.kind}/{event.name} {data}".rstrip()
