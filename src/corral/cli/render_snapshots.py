"""How snapshots (a tree per instance) and restore points (a table per volume) look.

Pure formatting, like render.py: functions take models and return renderables or strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from corral.cli.render import age
from corral.model import format_size
from corral.model.snapshot import BackupPoint, Snapshot

_NONE = "-"
_STATE_STYLES = {"ready": "green", "failed": "red", "pending": "yellow", "deleting": "yellow"}


def _when(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def snapshot_kind(snapshot: Snapshot) -> str:
    """`disks and memory`, `disks, quiesced`, `disks`."""
    if snapshot.memory:
        return "disks and memory"
    return "disks, quiesced" if snapshot.quiesced else "disks"


def _label(snapshot: Snapshot) -> Text:
    label = Text(snapshot.name, style="bold")
    label.append(f"  {_when(snapshot.created_at)}  {snapshot_kind(snapshot)}", style="dim")
    if snapshot.state != "ready":
        label.append(f"  {snapshot.state}", style=_STATE_STYLES.get(snapshot.state, "yellow"))
        if snapshot.message:
            label.append(f": {snapshot.message}", style="dim")
    if snapshot.description:
        label.append(f"  {snapshot.description}")
    if snapshot.current:
        label.append("  <- current", style="bold green")
    return label


def snapshot_tree(instance: str, snapshots: Sequence[Snapshot]) -> Tree:
    """`corral snapshot list INSTANCE`: the snapshots under their parents, oldest first, the
    current one marked (the instance's present state descends from it)."""
    tree = Tree(Text(instance, style="bold cyan"))
    names = {s.name for s in snapshots}
    children: dict[str | None, list[Snapshot]] = {}
    for snapshot in snapshots:
        parent = snapshot.parent if snapshot.parent in names else None
        children.setdefault(parent, []).append(snapshot)

    def add(node: Tree, parent: str | None) -> None:
        for snapshot in children.get(parent, []):
            add(node.add(_label(snapshot)), snapshot.name)

    add(tree, None)
    return tree


def snapshot_details(snapshot: Snapshot) -> Table:
    """`corral snapshot show INSTANCE NAME`."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, RenderableType]] = [
        ("Name", snapshot.name),
        ("Instance", snapshot.instance),
        ("State", Text(snapshot.state, style=_STATE_STYLES.get(snapshot.state, "yellow"))),
        ("Current", "yes" if snapshot.current else "no"),
        ("Parent", snapshot.parent or _NONE),
        ("Holds", snapshot_kind(snapshot)),
        ("Volumes", ", ".join(snapshot.volumes) or _NONE),
        ("Taken", _when(snapshot.created_at)),
        ("Took", f"{snapshot.duration_ms:.0f} ms" if snapshot.duration_ms is not None else _NONE),
        ("Description", snapshot.description or _NONE),
        ("Message", snapshot.message or _NONE),
    ]
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def backups_table(points: Sequence[BackupPoint]) -> Table:
    """`corral backup list VOLUME`."""
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "KIND", "PARENT", "SIZE", "CREATED", "AGE"):
        table.add_column(column, no_wrap=True)
    table.add_column("REASON")
    for point in points:
        table.add_row(
            point.id,
            point.kind.value,
            point.parent or _NONE,
            format_size(point.size_bytes),
            _when(point.created_at),
            age(point.created_at),
            point.reason or _NONE,
        )
    return table


def backup_details(point: BackupPoint) -> Table:
    """`corral backup show VOLUME ID`."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    took = f"{point.duration_ms / 1000:.1f} s" if point.duration_ms is not None else _NONE
    for key, value in (
        ("ID", point.id),
        ("Volume", point.volume),
        ("Kind", point.kind.value),
        ("Parent", point.parent or _NONE),
        ("Size", f"{format_size(point.size_bytes)} ({point.size_bytes} bytes in its file)"),
        ("Volume size", format_size(point.virtual_size_bytes)),
        ("Created", _when(point.created_at)),
        ("Took", took),
        ("Path", point.path),
        ("Reason", point.reason or _NONE),
    ):
        grid.add_row(key, value)
    return grid


def backup_summary(point: BackupPoint) -> str:
    """`b0002 (incremental on top of b0001, 1.2M)`."""
    on = f" on top of {point.parent}" if point.parent else ""
    return f"{point.id} ({point.kind.value}{on}, {format_size(point.size_bytes)})"
