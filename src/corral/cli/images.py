"""`corral image ...`: build images from recipes, list, show and delete them."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from corral.cli import render
from corral.cli.progress import follow_operation
from corral.cli.state import OutputFormat, OutputOption, open_client, output_format
from corral.model import format_size

image_app = typer.Typer(help="Build and manage images.", no_args_is_help=True)


@image_app.command()
def build(
    ctx: typer.Context,
    recipe: Annotated[str, typer.Argument(help="Recipe to build (see `corral image recipes`).")],
    name: Annotated[
        str | None, typer.Option("--name", help="Image name (default: the recipe's).")
    ] = None,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Return at once; follow with `corral operations ID`.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the build.", min=0)
    ] = 900.0,
) -> None:
    """Build an image from a recipe, with a progress bar."""
    json_out = output_format(ctx, None) is OutputFormat.JSON
    started = time.monotonic()
    with open_client(ctx) as client:
        op = client.build_image(recipe, name=name)
        if no_wait:
            if json_out:
                render.print_json(op)
            else:
                typer.echo(f"Building image {op.target} (operation {op.id}).")
            return
        final = follow_operation(client, op, timeout=timeout, bar=True)
        if json_out:
            render.print_json(final)
            return
        image = client.get_image(op.target)
    size = format_size(image.size_bytes) if image.size_bytes else "?"
    typer.echo(f"Built image {image.name} ({size}) in {time.monotonic() - started:.1f} s.")


@image_app.command("list")
def list_images(ctx: typer.Context, output: OutputOption = None) -> None:
    """List images."""
    with open_client(ctx) as client:
        images = client.list_images()
    hint = "No images. Build one with `corral image build tiny`."
    render.emit(output_format(ctx, output) is OutputFormat.JSON, images, render.images_table, hint)


@image_app.command()
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Image name.")],
    output: OutputOption = None,
) -> None:
    """Show one image."""
    with open_client(ctx) as client:
        image = client.get_image(name)
    render.emit(output_format(ctx, output) is OutputFormat.JSON, image, render.image_details)


@image_app.command()
def delete(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Image name.")]) -> None:
    """Delete an image (refused while instances use it)."""
    with open_client(ctx) as client:
        client.delete_image(name)
    typer.echo(f"Deleted image {name}.")


@image_app.command()
def recipes(ctx: typer.Context, output: OutputOption = None) -> None:
    """List the recipes the server can build."""
    with open_client(ctx) as client:
        names = client.list_recipes()
    if output_format(ctx, output) is OutputFormat.JSON:
        render.print_json(names)
    else:
        typer.echo("\n".join(names))


def register(app: typer.Typer) -> None:
    """Add the `image` group to the root app."""
    app.add_typer(image_app, name="image")
