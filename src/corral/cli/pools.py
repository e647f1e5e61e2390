"""`corral pool ...`: storage pools (where volumes live): create, list, show, delete."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli import inputs, render
from corral.cli.progress import finish_operation
from corral.cli.state import (
    NoWait,
    OutputFormat,
    OutputOption,
    Timeout,
    open_client,
    output_format,
)
from corral.model import format_size
from corral.model.storage import PoolDriver

pool_app = typer.Typer(help="Storage pools: where volumes live.", no_args_is_help=True)


@pool_app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pool name (lowercase letters, digits, '-').")],
    driver: Annotated[
        PoolDriver | None,
        typer.Option(
            "--driver",
            help="dir: qcow2/raw files in a directory; btrfs: reflink/snapshot clones on btrfs "
            "(fake: only for a server run with --compute fake). Default: dir.",
            show_default=False,
        ),
    ] = None,
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
            help="Absolute path on the server's host: a directory (dir) or a btrfs mount "
            "(default: a directory in the server's data dir).",
            show_default=False,
        ),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            metavar="SIZE",
            help="btrfs without --path: size of the loop file Corral makes, e.g. 2G.",
            show_default=False,
        ),
    ] = None,
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Create a storage pool."""
    if path is not None and not path.startswith("/"):
        raise typer.BadParameter(
            f"{path!r} is relative; give an absolute path on the server's host",
            param_hint="'--path'",
        )
    is_btrfs = driver is PoolDriver.BTRFS
    if size is not None and not is_btrfs:
        raise typer.BadParameter(
            "only a btrfs pool has a size (its loop file); a dir pool uses its filesystem",
            param_hint="'--size'",
        )
    if is_btrfs and path is None and size is None:
        raise typer.BadParameter(
            "a btrfs pool needs --path (an existing btrfs mount) or --size (a loop file "
            "Corral makes, e.g. --size 2G)",
            param_hint="'--driver btrfs'",
        )
    size_bytes = inputs.size(size, "--size") if size is not None else None
    with open_client(ctx) as client:
        op = client.create_pool(name, driver=driver, path=path, size_bytes=size_bytes)
        finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done="")
        if no_wait or output_format(ctx, None) is OutputFormat.JSON:
            return
        pool = client.get_pool(name)
    where = pool.status.path or pool.spec.path or "?"
    capacity = format_size(pool.status.capacity_bytes) if pool.status.capacity_bytes else "?"
    typer.echo(f"Created pool {name} ({pool.spec.driver} at {where}, {capacity} capacity).")


@pool_app.command("list")
def list_pools(ctx: typer.Context, output: OutputOption = None) -> None:
    """List pools with capacity, use and thin allocation."""
    with open_client(ctx) as client:
        pools = client.list_pools()
    hint = "No pools. Create one with `corral pool create NAME`."
    render.emit(output_format(ctx, output) is OutputFormat.JSON, pools, render.pools_table, hint)


@pool_app.command()
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pool name.")],
    output: OutputOption = None,
) -> None:
    """Show one pool."""
    with open_client(ctx) as client:
        pool = client.get_pool(name)
    render.emit(output_format(ctx, output) is OutputFormat.JSON, pool, render.pool_details)


@pool_app.command()
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pool name.")],
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Delete an empty pool (refused while it holds volumes, and for `default`)."""
    with open_client(ctx) as client:
        op = client.delete_pool(name)
        finish_operation(
            ctx, client, op, no_wait=no_wait, timeout=timeout, done=f"Deleted pool {name}"
        )


def register(app: typer.Typer) -> None:
    """Add the `pool` group to the root app."""
    app.add_typer(pool_app, name="pool")
