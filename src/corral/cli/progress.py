"""Following an operation on the terminal: a spinner (or a bar) with its message and the time.

Drawn on stderr, so stdout stays clean for JSON, and only when stderr is a terminal.
"""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from corral.cli import render
from corral.cli.state import OutputFormat, output_format
from corral.client import CorralClient
from corral.model import Operation


def describe(op: Operation) -> str:
    """`create vm1: waiting for the guest agent`."""
    return f"{op.kind} {op.target}: {op.message or op.state}"


def follow_operation(
    client: CorralClient, op: Operation, *, timeout: float, bar: bool = False
) -> Operation:
    """Wait for `op` while showing its progress; raises its error when it fails.

    Ctrl-C stops the waiting, not the work: the operation goes on in the server, and we say so.
    """
    columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}")]
    if bar:
        columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
    columns.append(TimeElapsedColumn())
    stderr = Console(stderr=True)
    with Progress(
        *columns, console=stderr, transient=True, disable=not stderr.is_terminal
    ) as progress:
        task = progress.add_task(describe(op), total=1.0 if bar else None)

        def on_update(current: Operation) -> None:
            progress.update(
                task,
                description=describe(current),
                completed=current.progress if bar else None,
            )

        on_update(op)
        try:
            return client.wait_operation(op.id, timeout=timeout, on_update=on_update)
        except KeyboardInterrupt:
            progress.stop()
            typer.echo(
                f"Stopped waiting; {op.kind} of {op.target} goes on in the server "
                f"(follow it with `corral operations {op.id}`).",
                err=True,
            )
            raise typer.Exit(130) from None


def finish_operation(
    ctx: typer.Context,
    client: CorralClient,
    op: Operation,
    *,
    no_wait: bool,
    timeout: float,
    done: str,
    bar: bool = False,
) -> Operation:
    """Wait (unless told not to) and say what happened: the operation as JSON, or a line.

    `done` is the line printed on success (with the time it took); empty: print nothing.
    """
    json_out = output_format(ctx, None) is OutputFormat.JSON
    if no_wait:
        if json_out:
            render.print_json(op)
        else:
            typer.echo(f"Accepted: {op.kind} {op.target} (operation {op.id}).")
        return op
    started = time.monotonic()
    final = follow_operation(client, op, timeout=timeout, bar=bar)
    if json_out:
        render.print_json(final)
    elif done:
        typer.echo(f"{done} ({time.monotonic() - started:.1f} s).")
    return final
