"""`corral backup ...`: restore points of a volume: create, list, show, restore, delete."""

from __future__ import annotations

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
from corral.model.snapshot import BackupPoint

backup_app = typer.Typer(
    help="Backups of volumes: full and incremental restore points, restored to new volumes.",
    no_args_is_help=True,
)


@backup_app.command()
def create(
    ctx: typer.Context,
    volume: Annotated[str, typer.Argument(help="Volume name.")],
    full: Annotated[
        bool,
        typer.Option("--full", help="A full backup even when an incremental one is possible."),
    ] = False,
    no_wait: NoWait = False,
    timeout: Timeout = 3600.0,
) -> None:
    """Back a volume up (incremental on top of its newest point when possible)."""
    with open_client(ctx) as client:
        op = client.create_backup(volume, full=full)
        final = finish_operation(
            ctx, client, op, no_wait=no_wait, timeout=timeout, done="", bar=True
        )
    if no_wait or output_format(ctx, None) is OutputFormat.JSON:
        return
    written = final.result.get("backup")
    if isinstance(written, dict):
        point = BackupPoint.model_validate(written)
        reason = f" ({point.reason})" if point.reason else ""
        typer.echo(f"Backed up volume {volume}: {render_snapshots.backup_summary(point)}{reason}.")
    else:
        typer.echo(f"Backed up volume {volume}: {final.message}.")


@backup_app.command("list")
def list_backups(
    ctx: typer.Context,
    volume: Annotated[str, typer.Argument(help="Volume name.")],
    output: OutputOption = None,
) -> None:
    """List a volume's restore points (id, kind, parent, size, created, reason)."""
    with open_client(ctx) as client:
        points = client.list_backups(volume)
    hint = f"No backups of {volume}. Make one with `corral backup create {volume}`."
    render.emit(
        output_format(ctx, output) is OutputFormat.JSON,
        points,
        render_snapshots.backups_table,
        hint,
    )


@backup_app.command()
def show(
    ctx: typer.Context,
    volume: Annotated[str, typer.Argument(help="Volume name.")],
    backup: Annotated[str, typer.Argument(metavar="ID", help="Restore point id (b0001, ...).")],
    output: OutputOption = None,
) -> None:
    """Show one restore point."""
    with open_client(ctx) as client:
        point = client.get_backup(volume, backup)
    render.emit(
        output_format(ctx, output) is OutputFormat.JSON, point, render_snapshots.backup_details
    )


@backup_app.command()
def restore(
    ctx: typer.Context,
    volume: Annotated[str, typer.Argument(help="Volume the restore point belongs to.")],
    backup: Annotated[str, typer.Argument(metavar="ID", help="Restore point id (b0001, ...).")],
    to: Annotated[str, typer.Option("--to", metavar="NEWVOL", help="Name of the new volume.")],
    pool: Annotated[
        str | None,
        typer.Option(
            "--pool", help="Pool of the new volume (default: default).", show_default=False
        ),
    ] = None,
    no_wait: NoWait = False,
    timeout: Timeout = 3600.0,
) -> None:
    """Restore a point to a new volume (a full, independent copy)."""
    with open_client(ctx) as client:
        op = client.restore_backup(volume, backup, to=to, pool=pool)
        done = f"Restored {volume}/{backup} to volume {to}"
        finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done=done)


@backup_app.command()
def delete(
    ctx: typer.Context,
    volume: Annotated[str, typer.Argument(help="Volume name.")],
    backup: Annotated[str, typer.Argument(metavar="ID", help="Restore point id (b0001, ...).")],
    chain: Annotated[
        bool,
        typer.Option("--chain", help="Also delete every point built on this one."),
    ] = False,
    no_wait: NoWait = False,
    timeout: Timeout = 300.0,
) -> None:
    """Delete a restore point nothing builds on (or, with --chain, it and its successors)."""
    with open_client(ctx) as client:
        op = client.delete_backup(volume, backup, chain=chain)
        final = finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done="")
    if no_wait or output_format(ctx, None) is OutputFormat.JSON:
        return
    typer.echo(f"Volume {volume}: {final.message or 'deleted'}.")


def register(app: typer.Typer) -> None:
    """Add the `backup` group to the root app."""
    app.add_typer(backup_app, name="backup")
