"""`corral volume ...`: virtual disks: create (blank, thin clone, copy), resize, attach, delete."""

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
from corral.client import volume_etag
from corral.errors import Conflict
from corral.model import format_size
from corral.model.storage import Volume, VolumeFormat, VolumeSource, VolumeSourceKind

volume_app = typer.Typer(help="Volumes: virtual disks in pools.", no_args_is_help=True)


def volume_source(
    from_image: str | None,
    from_volume: str | None,
    copy_of: str | None,
    from_snapshot: str | None = None,
) -> VolumeSource | None:
    """The `spec.source` the source options stand for (at most one may be given)."""
    given = [
        (kind, name)
        for kind, name in (
            (VolumeSourceKind.IMAGE, from_image),
            (VolumeSourceKind.VOLUME, from_volume),
            (VolumeSourceKind.COPY, copy_of),
            (VolumeSourceKind.SNAPSHOT, from_snapshot),
        )
        if name is not None
    ]
    if len(given) > 1:
        raise typer.BadParameter(
            "give at most one of --from-image, --from-volume, --copy-of and --from-snapshot",
            param_hint="'--from-image' / '--from-volume' / '--copy-of' / '--from-snapshot'",
        )
    if not given:
        return None
    kind, name = given[0]
    # Unvalidated on purpose: the server checks the name and answers with the field.
    if kind is VolumeSourceKind.IMAGE:
        return VolumeSource.model_construct(kind=kind, image=name)
    if kind is VolumeSourceKind.SNAPSHOT:
        volume, at, snapshot = name.partition("@")
        if not at or not volume or not snapshot:
            raise typer.BadParameter(
                f"{name!r} is not VOLUME@SNAPSHOT (e.g. web-root@before-upgrade)",
                param_hint="'--from-snapshot'",
            )
        return VolumeSource.model_construct(kind=kind, volume=volume, snapshot=snapshot)
    return VolumeSource.model_construct(kind=kind, volume=name)


@volume_app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Volume name (unique across pools).")],
    pool: Annotated[
        str | None,
        typer.Option("--pool", help="Pool to create it in (default: default).", show_default=False),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            metavar="SIZE",
            help="Size, e.g. 1G; needed for a blank volume, else grows the source's size.",
            show_default=False,
        ),
    ] = None,
    volume_format: Annotated[
        VolumeFormat | None,
        typer.Option("--format", help="On-disk format (default: qcow2).", show_default=False),
    ] = None,
    from_image: Annotated[
        str | None,
        typer.Option("--from-image", metavar="IMAGE", help="Thin clone of a disk image."),
    ] = None,
    from_volume: Annotated[
        str | None,
        typer.Option(
            "--from-volume", metavar="VOLUME", help="Thin clone of a volume (not attached)."
        ),
    ] = None,
    copy_of: Annotated[
        str | None,
        typer.Option("--copy-of", metavar="VOLUME", help="Full, independent copy of a volume."),
    ] = None,
    from_snapshot: Annotated[
        str | None,
        typer.Option(
            "--from-snapshot",
            metavar="VOLUME@SNAPSHOT",
            help="Full, independent copy of a volume as it was at a snapshot of its instance.",
        ),
    ] = None,
    no_wait: NoWait = False,
    timeout: Timeout = 600.0,
) -> None:
    """Create a volume: blank, a thin clone of an image or volume, or a full copy (of a volume
    now, or as it was at a snapshot)."""
    source = volume_source(from_image, from_volume, copy_of, from_snapshot)
    if source is None and size is None:
        raise typer.BadParameter(
            "a blank volume needs a size (e.g. --size 1G), or give --from-image, "
            "--from-volume or --copy-of",
            param_hint="'--size'",
        )
    size_bytes = inputs.size(size, "--size") if size is not None else None
    with open_client(ctx) as client:
        op = client.create_volume(
            name, size_bytes=size_bytes, pool=pool, format=volume_format, source=source
        )
        bar = source is not None and source.kind in (
            VolumeSourceKind.COPY,
            VolumeSourceKind.SNAPSHOT,
        )
        finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done="", bar=bar)
        if no_wait or output_format(ctx, None) is OutputFormat.JSON:
            return
        volume = client.get_volume(name)
    typer.echo(f"Created volume {name}: {_summary(volume)}.")


def _summary(volume: Volume) -> str:
    size = render.volume_size(volume)
    return ", ".join(
        [
            format_size(size) if size else "size unknown",
            str(volume.status.format or volume.spec.format),
            f"in pool {volume.spec.pool}",
            render.volume_source_text(volume),
        ]
    )


@volume_app.command("list")
def list_volumes(
    ctx: typer.Context,
    pool: Annotated[
        str | None, typer.Option("--pool", help="Only the volumes of this pool.")
    ] = None,
    output: OutputOption = None,
) -> None:
    """List volumes (all, or one pool's)."""
    with open_client(ctx) as client:
        volumes = client.list_volumes(pool=pool)
    where = f" in pool {pool}" if pool else ""
    hint = f"No volumes{where}. Create one with `corral volume create NAME --size 1G`."
    render.emit(
        output_format(ctx, output) is OutputFormat.JSON, volumes, render.volumes_table, hint
    )


@volume_app.command()
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Volume name.")],
    output: OutputOption = None,
) -> None:
    """Show one volume."""
    with open_client(ctx) as client:
        volume = client.get_volume(name)
    render.emit(output_format(ctx, output) is OutputFormat.JSON, volume, render.volume_details)


@volume_app.command()
def resize(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Volume name.")],
    size: Annotated[
        str,
        typer.Argument(
            metavar="SIZE", help="New size (e.g. 20G), or +SIZE to grow by that much (+1G)."
        ),
    ],
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Grow a volume (online when its guest runs); shrinking is refused."""
    change = inputs.size_change(size)
    with open_client(ctx) as client:
        target, if_match, grown_from = change.size_bytes, None, ""
        if change.relative:
            current = client.get_volume(name)
            base = _current_size(current)
            target = base + change.size_bytes
            # Guarded: if someone resizes it between our read and our write, the server
            # answers 412 instead of applying a sum computed from a stale size.
            if_match = volume_etag(current)
            grown_from = f" from {format_size(base)}"
        op = client.resize_volume(name, target, if_match=if_match)
        done = f"Resized volume {name}{grown_from} to {format_size(target)}"
        finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done=done)


def _current_size(volume: Volume) -> int:
    """The size to add to: the larger of the observed size and one still being applied."""
    size = max(volume.status.virtual_size_bytes, volume.spec.size_bytes or 0)
    if size == 0:
        raise Conflict(
            f"the size of volume {volume.name} is not known yet (state {volume.status.state}); "
            "wait until it is ready, or give an absolute size",
            code="invalid_state",
        )
    return size


@volume_app.command()
def attach(
    ctx: typer.Context,
    volume: Annotated[str, typer.Argument(help="Volume name.")],
    instance: Annotated[str, typer.Argument(help="Instance name.")],
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Attach a volume to an instance as its next disk (hot-plugged when it runs)."""
    with open_client(ctx) as client:
        op = client.attach_volume(volume, instance)
        done = f"Attached volume {volume} to {instance}"
        finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done=done)


@volume_app.command()
def detach(
    ctx: typer.Context,
    volume: Annotated[str, typer.Argument(help="Volume name.")],
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Detach a volume from its instance (hot-unplugged when it runs)."""
    with open_client(ctx) as client:
        op = client.detach_volume(volume)
        done = f"Detached volume {volume}"
        finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done=done)


@volume_app.command()
def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Volume name.")],
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Delete a volume (refused while attached or while a clone depends on it)."""
    with open_client(ctx) as client:
        op = client.delete_volume(name)
        done = f"Deleted volume {name}"
        finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done=done)


def register(app: typer.Typer) -> None:
    """Add the `volume` group to the root app."""
    app.add_typer(volume_app, name="volume")
