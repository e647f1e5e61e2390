"""Instance commands: create, start, stop, restart, delete, list, show, exec."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from corral.cli import inputs, render
from corral.cli.progress import finish_operation, follow_operation
from corral.cli.state import (
    NoWait,
    OutputFormat,
    OutputOption,
    Timeout,
    open_client,
    output_format,
)
from corral.client import CorralClient
from corral.errors import Conflict, InvalidInput
from corral.model import Machine, OnCrash, Operation, PowerState, parse_size
from corral.model.instance import FromSnapshot, RootDisk

_MIB = 1024 * 1024


def memory_mib(text: str) -> int:
    """`256M`, `1.5G`, `512` (MiB) as a whole number of MiB; InvalidInput says why not."""
    size = parse_size(text, field="memory", default_unit="M")
    mib, rest = divmod(size, _MIB)
    if rest or mib == 0:
        raise InvalidInput(
            f"memory {text!r} is not a whole number of MiB; use e.g. 256M, 512 or 1.5G",
            code="invalid_size",
            field="memory",
        )
    return mib


def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name (lowercase letters, digits, '-').")],
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="Image to boot, e.g. tiny (with --from-snapshot: the source's by default).",
            show_default=False,
        ),
    ] = None,
    cpus: Annotated[int | None, typer.Option("--cpus", help="Virtual CPUs (default: 1).")] = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", help="Guest memory, e.g. 256M or 1.5G (default: 256M)."),
    ] = None,
    machine: Annotated[Machine | None, typer.Option("--machine", help="QEMU machine type.")] = None,
    on_crash: Annotated[
        OnCrash | None, typer.Option("--on-crash", help="What to do when the guest dies.")
    ] = None,
    stopped: Annotated[bool, typer.Option("--stopped", help="Create it powered off.")] = False,
    disk: Annotated[
        str | None,
        typer.Option(
            "--disk",
            metavar="SIZE",
            help="Root disk size for a disk image, e.g. 8G (default: the image's size).",
        ),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(
            "--pool", help="Pool for the root disk (default: default).", show_default=False
        ),
    ] = None,
    attach: Annotated[
        list[str] | None,
        typer.Option(
            "--attach",
            metavar="VOLUME[:ro]",
            help="Attach an existing volume (repeat for more; in order after the root disk).",
        ),
    ] = None,
    ssh_key: Annotated[
        list[str] | None,
        typer.Option(
            "--ssh-key",
            metavar="KEY|@FILE",
            help="SSH public key, or @FILE of one (e.g. @~/.ssh/id_ed25519.pub); repeatable. "
            "For cloud-init images.",
        ),
    ] = None,
    user_data: Annotated[
        str | None,
        typer.Option(
            "--user-data",
            metavar="FILE",
            help="cloud-init user-data file (at most 64 KiB; - reads stdin).",
        ),
    ] = None,
    from_snapshot: Annotated[
        str | None,
        typer.Option(
            "--from-snapshot",
            metavar="INSTANCE/SNAPSHOT",
            help="Clone an instance from its snapshot: disks copied from the snapshot (or linked "
            "with --linked); image, cpus, memory and machine as the source's unless given.",
        ),
    ] = None,
    linked: Annotated[
        bool,
        typer.Option(
            "--linked",
            help="With --from-snapshot: thin clones of a shared base per snapshot disk "
            "(fast, small) instead of full copies.",
        ),
    ] = False,
    no_wait: NoWait = False,
    timeout: Timeout = 300.0,
) -> None:
    """Create an instance and wait until it is ready."""
    try:
        mib = memory_mib(memory) if memory is not None else None
    except InvalidInput as err:
        raise typer.BadParameter(err.message, param_hint="'--memory'") from None
    source = _from_snapshot(from_snapshot, linked)
    if source is None and image is None:
        raise typer.BadParameter(
            "give the image to boot (e.g. --image tiny)", param_hint="'--image'"
        )
    root_disk = _root_disk(disk, pool)
    disks = inputs.disks(attach) if attach else None
    keys = inputs.ssh_keys(ssh_key) if ssh_key else None
    seed_user_data = inputs.user_data(user_data) if user_data is not None else None
    started = time.monotonic()
    with open_client(ctx) as client:
        if source is not None:
            origin = client.get_instance(source.instance).spec
            image = image or origin.image
            cpus = cpus if cpus is not None else origin.cpus
            mib = mib if mib is not None else origin.memory_mib
            machine = machine or origin.machine
        assert image is not None
        op = client.create_instance(
            name,
            image=image,
            cpus=cpus,
            memory_mib=mib,
            power=PowerState.STOPPED if stopped else None,
            machine=machine,
            on_crash=on_crash,
            disks=disks,
            root_disk=root_disk,
            ssh_keys=keys,
            user_data=seed_user_data,
            from_snapshot=source,
        )
        finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done="")
        if no_wait or output_format(ctx, None) is OutputFormat.JSON:
            return
        inst = client.get_instance(name)
    here = time.monotonic() - started
    status = inst.status
    if status.ready and status.create_to_ready_ms is not None:
        typer.echo(
            f"Created {name}: {status.state}, ready {status.create_to_ready_ms / 1000:.2f} s "
            f"after create ({here:.2f} s as seen here)."
        )
    else:
        typer.echo(f"Created {name}: {status.state} ({here:.2f} s).")


def _from_snapshot(text: str | None, linked: bool) -> FromSnapshot | None:
    """`--from-snapshot INSTANCE/SNAPSHOT` (and `--linked`) as the request's `from_snapshot`."""
    if text is None:
        if linked:
            raise typer.BadParameter(
                "--linked goes with --from-snapshot INSTANCE/SNAPSHOT", param_hint="'--linked'"
            )
        return None
    instance, slash, snapshot = text.partition("/")
    if not slash or not instance or not snapshot:
        raise typer.BadParameter(
            f"{text!r} is not INSTANCE/SNAPSHOT (e.g. web/before-upgrade)",
            param_hint="'--from-snapshot'",
        )
    # Unvalidated on purpose: the server checks the names and answers with the field.
    return FromSnapshot.model_construct(instance=instance, snapshot=snapshot, linked=linked)


def _root_disk(disk: str | None, pool: str | None) -> RootDisk | None:
    """`root_disk` with only what was given, so the server's defaults fill the rest."""
    values: dict[str, Any] = {}
    if disk is not None:
        values["size_bytes"] = inputs.size(disk, "--disk")
    if pool is not None:
        values["pool"] = pool
    # Unvalidated on purpose: the server checks the pool name and answers with the field.
    return RootDisk.model_construct(None, **values) if values else None


def start(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name.")],
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Power an instance on."""
    _act(ctx, lambda c: c.start_instance(name), no_wait, timeout, f"Started {name}")


def stop(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name.")],
    force: Annotated[bool, typer.Option("--force", help="Power off at once, no shutdown.")] = False,
    grace: Annotated[
        float | None,
        typer.Option("--grace", help="Seconds the guest gets to shut down before power-off."),
    ] = None,
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Shut an instance down (cleanly, unless --force)."""
    _act(
        ctx,
        lambda c: c.stop_instance(name, force=force, timeout_s=grace),
        no_wait,
        timeout,
        f"Stopped {name}",
    )


def restart(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name.")],
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Stop an instance, then start it again."""
    _act(ctx, lambda c: c.restart_instance(name), no_wait, timeout, f"Restarted {name}")


def delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name.")],
    force: Annotated[
        bool, typer.Option("--force", help="Power the guest off at once instead of shutting down.")
    ] = False,
    no_wait: NoWait = False,
    timeout: Timeout = 120.0,
) -> None:
    """Delete an instance (a running guest is shut down first)."""
    with open_client(ctx) as client:
        if force:
            try:
                stop_op = client.stop_instance(name, force=True)
            except Conflict:
                pass  # not running: nothing to power off
            else:
                follow_operation(client, stop_op, timeout=timeout)
        op = client.delete_instance(name)
        finish_operation(ctx, client, op, no_wait=no_wait, timeout=timeout, done=f"Deleted {name}")


def _act(
    ctx: typer.Context,
    call: Callable[[CorralClient], Operation],
    no_wait: bool,
    timeout: float,
    done: str,
) -> None:
    with open_client(ctx) as client:
        finish_operation(ctx, client, call(client), no_wait=no_wait, timeout=timeout, done=done)


def list_instances(ctx: typer.Context, output: OutputOption = None) -> None:
    """List instances."""
    with open_client(ctx) as client:
        instances = client.list_instances()
    if output_format(ctx, output) is OutputFormat.JSON:
        render.print_json(instances)
    elif not instances:
        typer.echo("No instances. Create one with `corral create NAME --image tiny`.", err=True)
    else:
        render.show(render.instances_table(instances))


def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name.")],
    output: OutputOption = None,
) -> None:
    """Show one instance with its disks and conditions."""
    json_out = output_format(ctx, output) is OutputFormat.JSON
    with open_client(ctx) as client:
        inst = client.get_instance(name)
        # Sizes and pools of its disks live on the volumes: one more request, only if needed.
        volumes = client.list_volumes() if inst.spec.disks and not json_out else []
    if json_out:
        render.print_json(inst)
    else:
        by_name = {volume.name: volume for volume in volumes}
        render.show(render.instance_details(inst, by_name))


def exec_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name.")],
    command: Annotated[list[str], typer.Argument(help="The command, after `--`.")],
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds the command may run.", min=0)
    ] = 60.0,
    stdin: Annotated[
        bool, typer.Option("--stdin", "-i", help="Send local stdin as the command's input.")
    ] = False,
    output: OutputOption = None,
) -> None:
    """Run a command in the guest: its output on our stdout/stderr, its exit code as ours."""
    data = sys.stdin.read() if stdin else None
    with open_client(ctx) as client:
        result = client.exec_instance(name, command, timeout_s=timeout, input=data)
    if output_format(ctx, output) is OutputFormat.JSON:
        render.print_json(result)
    else:
        sys.stdout.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.write(result.stderr)
        sys.stderr.flush()
    # Exit statuses are 0-255; anything else (a signal, a bogus value) is plain failure.
    code = result.exit_code
    raise typer.Exit(code if 0 <= code <= 255 else 1)


def register(app: typer.Typer) -> None:
    """Add the instance commands to the root app."""
    app.command()(create)
    app.command()(start)
    app.command()(stop)
    app.command()(restart)
    app.command()(delete)
    app.command("list")(list_instances)
    app.command()(show)
    app.command("exec")(exec_command)
