"""`corral serve`: run the server (API, controllers and the local agent) in this process.

The only CLI module allowed to import corral.daemon (an import-linter exception). The import is
inside the command so every other command starts without loading the server's dependencies.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from corral import paths
from corral.cli.state import cli_state


class Compute(StrEnum):
    """Compute backends `corral serve` can run guests with."""

    QEMU = "qemu"
    FAKE = "fake"


def check_listen(value: str) -> str:
    """`HOST:PORT` with a numeric port, or a usage error that shows the form."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"{value!r} is not HOST:PORT; use e.g. 127.0.0.1:8470")
    return value


def serve(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where state, images and the API token live "
            "(default: the global --data-dir, $CORRAL_DATA_DIR, or the platform default).",
            show_default=False,
        ),
    ] = None,
    listen: Annotated[
        str, typer.Option("--listen", help="Address to serve the API on.", callback=check_listen)
    ] = paths.DEFAULT_LISTEN,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="Database URL (default: SQLite in the data dir).", show_default=False
        ),
    ] = None,
    compute: Annotated[
        Compute, typer.Option("--compute", help="Run guests with QEMU, or fake them.")
    ] = Compute.QEMU,
    resync: Annotated[
        float, typer.Option("--resync", help="Seconds between full reconciles.", min=0.1)
    ] = 5.0,
) -> None:
    """Run the Corral server in the foreground."""
    from corral.daemon import ServerConfig
    from corral.daemon import serve as run_server

    config = ServerConfig(
        data_dir=data_dir or cli_state(ctx).data_dir or paths.default_data_dir(),
        listen=listen,
        db_url=db,
        compute=compute.value,
        resync_s=resync,
    )
    run_server(config)


def register(app: typer.Typer) -> None:
    """Add `serve` to the root app."""
    app.command()(serve)
