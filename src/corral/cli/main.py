"""The `corral` app: global options, the command rooms, and the one place errors are shown.

A CorralError never reaches the user as a traceback: it is printed as `Error: <message>` with its
code (and field) on stderr, exit status 1. Usage errors stay Typer's (exit status 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from corral.cli import (
    backups,
    console,
    events,
    hosts,
    images,
    instances,
    operations,
    pools,
    serve,
    snapshots,
    volumes,
)
from corral.cli.state import CliState, OutputFormat
from corral.errors import CorralError


def report_error(err: CorralError) -> None:
    """`Error: <message> (code: x, field: y)` in red on stderr."""
    extras = f"code: {err.code}" + (f", field: {err.field}" if err.field else "")
    typer.secho(f"Error: {err.message} ({extras})", fg="red", err=True)


class _CorralGroup(TyperGroup):
    """The root group: turns CorralError from any subcommand into a message and exit status 1."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # Typer passes its own Context
        try:
            return super().invoke(ctx)
        except CorralError as err:
            report_error(err)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_CorralGroup,
    name="corral",
    help="Corral: virtual machines on your own servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Server URL (default: $CORRAL_URL, else http://127.0.0.1:8470).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Data dir whose `token` file holds the API token "
            "(default: $CORRAL_DATA_DIR, else the platform default). $CORRAL_TOKEN wins.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts.")
    ] = OutputFormat.TABLE,
) -> None:
    """Corral: virtual machines on your own servers."""
    ctx.obj = CliState(url=url, data_dir=data_dir, output=output)


for room in (
    instances,
    console,
    events,
    snapshots,
    images,
    pools,
    volumes,
    backups,
    hosts,
    operations,
    serve,
):
    room.register(app)


def main() -> None:
    """Console-script entry point (`corral`, or `python -m corral.cli.main`)."""
    app(prog_name="corral")


if __name__ == "__main__":  # `python -m corral.cli.main`, as the e2e tests run it
    main()
