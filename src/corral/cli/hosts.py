"""`corral hosts`: the hosts, their capacity, and how (and why so) they accelerate guests."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli import render
from corral.cli.state import OutputFormat, OutputOption, open_client, output_format


def hosts(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Show only this host.")] = None,
    output: OutputOption = None,
) -> None:
    """List hosts (capacity, allocation, accel and the reason for it)."""
    with open_client(ctx) as client:
        found = [client.get_host(name)] if name else client.list_hosts()
    if output_format(ctx, output) is OutputFormat.JSON:
        render.print_json(found[0] if name else found)
    else:
        render.show(render.hosts_table(found))


def register(app: typer.Typer) -> None:
    """Add `hosts` to the root app."""
    app.command()(hosts)
