"""`corral events`: follow the server's event stream, one line (or JSON object) per event."""

from __future__ import annotations

import itertools
import sys
from typing import Annotated

import typer

from corral.cli import render
from corral.cli.state import OutputFormat, OutputOption, open_client, output_format


def events(
    ctx: typer.Context,
    since: Annotated[
        int | None, typer.Option("--since", help="Replay events after this id first.")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", "-n", help="Stop after this many events.", min=1)
    ] = None,
    output: OutputOption = None,
) -> None:
    """Follow events until Ctrl-C (JSON lines with -o json)."""
    json_lines = output_format(ctx, output) is OutputFormat.JSON
    with open_client(ctx) as client:
        stream = client.events(since=since)
        try:
            for event in itertools.islice(stream, count):
                line = event.model_dump_json() if json_lines else render.event_line(event)
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass  # Ctrl-C is how one stops following
        finally:
            stream.close()


def register(app: typer.Typer) -> None:
    """Add `events` to the root app."""
    app.command()(events)
