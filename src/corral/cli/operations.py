"""`corral operations [ID]`: recent long work, or one operation in detail."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli import render
from corral.cli.state import OutputFormat, OutputOption, open_client, output_format


def operations(
    ctx: typer.Context,
    op_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="Show one operation.")] = None,
    output: OutputOption = None,
) -> None:
    """List recent operations (newest first), or show one."""
    json_out = output_format(ctx, output) is OutputFormat.JSON
    with open_client(ctx) as client:
        if op_id is not None:
            op = client.get_operation(op_id)
            render.print_json(op) if json_out else render.show(render.operation_details(op))
            return
        ops = client.list_operations()
    render.print_json(ops) if json_out else render.show(render.operations_table(ops))


def register(app: typer.Typer) -> None:
    """Add `operations` to the root app."""
    app.command()(operations)
