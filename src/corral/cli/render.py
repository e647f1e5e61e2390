"""How objects look on a terminal (rich tables) and to scripts (JSON on stdout).

Pure formatting: functions take models and return renderables or strings; commands print them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from corral.model import Event, Host, Image, Instance, Operation, format_size
from corral.model.storage import Pool, Volume

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


T = TypeVar("T", bound=BaseModel)


def emit(
    as_json: bool,
    value: T | Sequence[T],
    view: Callable[[Any], RenderableType],
    empty: str = "",
) -> None:
    """What every read command prints: JSON with -o json; else `view(value)`, or `empty` on
    stderr (a hint what to do) when a list came back empty."""
    if as_json:
        print_json(value)
    elif isinstance(value, Sequence) and not value and empty:
        print(empty, file=sys.stderr)
    else:
        show(view(value))


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


def instance_details(inst: Instance, volumes: Mapping[str, Volume] | None = None) -> RenderableType:
    """`corral show NAME`: spec, status, then its disks and the conditions."""
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
    parts: list[RenderableType] = [grid]
    if spec.disks:
        parts += [Text(""), instance_disks(inst, volumes or {})]
    if status.conditions:
        conditions = Table(title="Conditions", title_justify="left", box=None, pad_edge=False)
        for column in ("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"):
            conditions.add_column(column)
        for cond in status.conditions:
            conditions.add_row(
                cond.type, str(cond.status).lower(), cond.reason, age(cond.since), cond.message
            )
        parts += [Text(""), conditions]
    return grid if len(parts) == 1 else Group(*parts)


def device_name(index: int) -> str:
    """The guest's name for the disk at `index` of `spec.disks`: vda, vdb, ... vdz, vdaa."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return f"vd{letters}"


def instance_disks(inst: Instance, volumes: Mapping[str, Volume]) -> Table:
    """The Disks section of `corral show NAME`; sizes and pools from `volumes` when known."""
    table = Table(title="Disks", title_justify="left", box=None, pad_edge=False)
    for column in ("DEVICE", "VOLUME", "SIZE", "POOL", "BOOT", "MODE", "STATE"):
        table.add_column(column, no_wrap=True)
    for index, disk in enumerate(inst.spec.disks):
        volume = volumes.get(disk.volume)
        table.add_row(
            device_name(index),
            disk.volume,
            _size(volume_size(volume)) if volume else _NONE,
            volume.spec.pool if volume else _NONE,
            "yes" if disk.boot else "no",
            "ro" if disk.read_only else "rw",
            _state_text(volume.status.state) if volume else Text("missing", style="red"),
        )
    return table


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


def _size(n_bytes: int | None) -> str:
    return _NONE if n_bytes is None else format_size(n_bytes)


def volume_size(volume: Volume) -> int | None:
    """What the guest sees: the observed virtual size, else the size asked for."""
    return volume.status.virtual_size_bytes or volume.spec.size_bytes


def _backing(volume: Volume) -> str:
    """What a volume is thinly cloned from, by name (a full copy has no backing)."""
    source = volume.spec.source
    if source.kind == "image":
        return f"image/{source.image}"
    if source.kind == "volume":
        return f"volume/{source.volume}"
    return _opt(volume.status.backing)


def volume_source_text(volume: Volume) -> str:
    """Where a volume's bytes came from, in words: `thin clone of image debian-12`."""
    source = volume.spec.source
    if source.kind == "image":
        return f"thin clone of image {source.image}"
    if source.kind == "volume":
        return f"thin clone of volume {source.volume}"
    if source.kind == "copy":
        return f"full copy of volume {source.volume}"
    if source.kind == "snapshot":
        return f"full copy of volume {source.volume} at snapshot {source.snapshot}"
    return "blank"


def pools_table(pools: Sequence[Pool]) -> Table:
    """`corral pool list`."""
    table = Table(box=None, pad_edge=False)
    columns = ("NAME", "DRIVER", "STATE", "PATH", "CAPACITY", "USED", "ALLOCATED", "PROVISIONED")
    for column in (*columns, "VOLUMES"):
        table.add_column(column, no_wrap=True)
    for pool in pools:
        status = pool.status
        table.add_row(
            pool.name,
            str(pool.spec.driver),
            _state_text(status.state),
            _opt(status.path or pool.spec.path),
            _size(status.capacity_bytes),
            _size(status.used_bytes),
            _size(status.allocated_bytes),
            _size(status.provisioned_bytes),
            str(status.volumes),
        )
    return table


def pool_details(pool: Pool) -> Table:
    """`corral pool show NAME`."""
    status = pool.status
    free = max(status.capacity_bytes - status.used_bytes, 0)
    return _details(
        [
            ("Name", pool.name),
            ("UID", pool.uid),
            ("Driver", str(pool.spec.driver)),
            ("State", _state_text(status.state)),
            ("Path", _opt(status.path or pool.spec.path)),
            ("Loop size", _size(pool.spec.size_bytes)),
            ("Capacity", _size(status.capacity_bytes)),
            ("Used", f"{_size(status.used_bytes)} ({_size(free)} free)"),
            ("Allocated", f"{_size(status.allocated_bytes)} (by this pool's volumes)"),
            ("Provisioned", f"{_size(status.provisioned_bytes)} (sum of volume sizes)"),
            ("Volumes", str(status.volumes)),
            ("Generation", f"{pool.generation} (observed {status.observed_generation})"),
            ("Created", _when(pool.created_at)),
            ("Message", _opt(status.message)),
        ]
    )


def volumes_table(volumes: Sequence[Volume]) -> Table:
    """`corral volume list`."""
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "POOL", "SIZE", "ALLOCATED", "FORMAT", "STATE", "ATTACHED TO"):
        table.add_column(column, no_wrap=True)
    table.add_column("BACKING")
    for volume in volumes:
        status = volume.status
        table.add_row(
            volume.name,
            volume.spec.pool,
            _size(volume_size(volume)),
            _size(status.allocated_bytes),
            str(status.format or volume.spec.format),
            _state_text(status.state),
            _opt(status.attached_to),
            _backing(volume),
        )
    return table


def volume_details(volume: Volume) -> Table:
    """`corral volume show NAME`."""
    status, spec = volume.status, volume.spec
    asked = _size(spec.size_bytes) if spec.size_bytes is not None else "the source's"
    return _details(
        [
            ("Name", volume.name),
            ("UID", volume.uid),
            ("Pool", spec.pool),
            ("State", _state_text(status.state)),
            ("Size", f"{_size(volume_size(volume))} (asked: {asked})"),
            ("Allocated", _size(status.allocated_bytes)),
            ("Format", str(status.format or spec.format)),
            ("Source", volume_source_text(volume)),
            ("Backing file", _opt(status.backing)),
            ("Attached to", _opt(status.attached_to)),
            ("Owner", _opt(status.owner)),
            ("Path", _opt(status.path)),
            ("Generation", f"{volume.generation} (observed {status.observed_generation})"),
            ("Created", _when(volume.created_at)),
            ("Message", _opt(status.message)),
        ]
    )


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
