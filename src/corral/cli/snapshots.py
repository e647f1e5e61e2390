"""`corral snapshot ...`: snapshots of an instance: create, list (a tree), show, revert, delete."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from corral.cli import render, render_snapshots
from corral.cli.progress import finish_operation
from corral.cli.state import (
    NoWait,
    OutputFormat,
    OutputOption,
    Timeout,
    open_client,
    output_format,
)
from corral.model.snapshot import Snapshot

snapshot_app = typer.Typer(
    help="Snapshots of an instance's disks (and memory): a tree you can go back to.",
    no_args_is_help=True,
)


def default_snapshot_name(now: datetime | None = None) -> str:
    """`snap-20250101-120000` (UTC): a valid name that sorts by time."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("snap-%Y%m%d-%H%M%S")


@snapshot_app.command()
def create(
    ctx: typer.Context,
    instance: Annotated[str, typer.Argument(help="Instance name.")],
    name: Annotated[
        str | None,
        typer.Argument(help="Snapshot name (default: snap-<UTC date>-<time>).", show_default=False),
    ] = None,
    memory: Annotated[
        bool,
        typer.Option(
            "--memory", help="Also save the guest's memory: revert resumes the running guest."
        ),
    ] = False,
    no_quiesce: Annotated[
        bool,
        typer.Option(
            "--no-quiesce",
            help="Do not freeze the guest's filesystems through its guest agent first.",
        ),
    ] = False,
    description: Annotated[
        str | None, typer.Option("--description", help="A note kept with the snapshot.")
    ] = None,
    no_wait: NoWait = False,
    timeout: Timeout = 600.0,
) -> None:
    """Take a snapshot of an instance (disk-only unless --memory)."""
    name = name or default_snapshot_name()
    with open_client(ctx) as client:
        op = client.create_snapshot(
            instance, name, memory=memory, quiesce=not no_quiesce, description=description
        )
        final = finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done="")
    if no_wait or output_format(ctx, None) is OutputFormat.JSON:
        return
    typer.echo(f"Took snapshot {name} of {instance}: {final.message or 'done'}.")


@snapshot_app.command("list")
def list_snapshots(
    ctx: typer.Context,
    instance: Annotated[str, typer.Argument(help="Instance name.")],
    output: OutputOption = None,
) -> None:
    """Show an instance's snapshots as a tree (the current one marked); -o json: a list."""
    with open_client(ctx) as client:
        snapshots = client.list_snapshots(instance)
    if output_format(ctx, output) is OutputFormat.JSON:
        render.print_json(snapshots)
    elif not snapshots:
        typer.echo(
            f"No snapshots of {instance}. Take one with `corral snapshot create {instance}`.",
            err=True,
        )
    else:
        render.show(render_snapshots.snapshot_tree(instance, snapshots))


@snapshot_app.command()
def show(
    ctx: typer.Context,
    instance: Annotated[str, typer.Argument(help="Instance name.")],
    name: Annotated[str, typer.Argument(help="Snapshot name.")],
    output: OutputOption = None,
) -> None:
    """Show one snapshot."""
    with open_client(ctx) as client:
        snapshot: Snapshot = client.get_snapshot(instance, name)
    render.emit(
        output_format(ctx, output) is OutputFormat.JSON, snapshot, render_snapshots.snapshot_details
    )


@snapshot_app.command()
def revert(
    ctx: typer.Context,
    instance: Annotated[str, typer.Argument(help="Instance name.")],
    name: Annotated[str, typer.Argument(help="Snapshot name.")],
    no_wait: NoWait = False,
    timeout: Timeout = 600.0,
) -> None:
    """Go back to a snapshot. With memory, the running guest resumes from it; disk-only, a
    running guest is shut down, reverted and booted again."""
    with open_client(ctx) as client:
        op = client.revert_snapshot(instance, name)
        final = finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done="")
    if no_wait or output_format(ctx, None) is OutputFormat.JSON:
        return
    typer.echo(f"Reverted {instance} to snapshot {name}: {final.message or 'done'}.")


@snapshot_app.command()
def delete(
    ctx: typer.Context,
    instance: Annotated[str, typer.Argument(help="Instance name.")],
    name: Annotated[str, typer.Argument(help="Snapshot name.")],
    no_wait: NoWait = False,
    timeout: Timeout = 300.0,
) -> None:
    """Delete a snapshot; its children keep their place in the tree."""
    with open_client(ctx) as client:
        op = client.delete_snapshot(instance, name)
        done = f"Deleted snapshot {name} of {instance}"
        finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done=done)


def register(app: typer.Typer) -> None:
    """Add the `snapshot` group to the root app."""
    app.add_typer(snapshot_app, name="snapshot")
