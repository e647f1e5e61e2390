"""`corral console NAME`: the guest's serial console on this terminal, or piped, or its log.

On a terminal, stdin goes raw (every key, Ctrl-C included, reaches the guest) until Ctrl-]; the
terminal mode is restored however we leave. Without a terminal, stdin is copied to the console
and the console to stdout; after stdin ends we keep printing until the guest has been quiet for
`--linger` seconds, so `echo uname | corral console vm1` shows the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import threading
import tty
from typing import Annotated, BinaryIO

import typer

from corral.cli.state import open_client
from corral.client import AsyncCorralClient, ConsoleSession

ESCAPE = b"\x1d"  # Ctrl-]
_CHUNK = 65536
_LOG_BYTES = 64 * 1024
_MAX_LOG_BYTES = 4 * 1024 * 1024


class _OutputPump:
    """Copies console output to a local stream and remembers when the guest last spoke."""

    def __init__(self, session: ConsoleSession, out: BinaryIO) -> None:
        self.session, self.out = session, out
        self.last_output = asyncio.get_running_loop().time()

    async def run(self) -> None:
        async for chunk in self.session:
            self.out.write(chunk)
            self.out.flush()
            self.last_output = asyncio.get_running_loop().time()


async def _race(*tasks: asyncio.Task[None]) -> None:
    """Wait for the first task to end, cancel the rest, and re-raise what the first raised."""
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in done:
        task.result()


async def pipe_console(
    client: AsyncCorralClient, name: str, stdin: BinaryIO, stdout: BinaryIO, linger: float
) -> None:
    """stdin -> console and console -> stdout, for scripts and pipes."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def read_stdin() -> None:  # a thread: plain files and pipes cannot be awaited portably
        while True:
            data = stdin.read1(_CHUNK) if hasattr(stdin, "read1") else stdin.read(_CHUNK)
            loop.call_soon_threadsafe(chunks.put_nowait, data)
            if not data:
                return

    async def send_input() -> None:
        while data := await chunks.get():
            await session.send(data)

    async with client.console(name) as session:
        threading.Thread(target=read_stdin, name="console-stdin", daemon=True).start()
        pump = _OutputPump(session, stdout)
        output = asyncio.create_task(pump.run())
        sender = asyncio.create_task(send_input())
        await asyncio.wait({output, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done() and not sender.exception():
            while not output.done():  # stdin ended: drain until the guest goes quiet
                quiet = loop.time() - pump.last_output
                if quiet >= linger:
                    break
                await asyncio.wait({output}, timeout=linger - quiet)
        await _race(output, sender)


async def interactive_console(
    client: AsyncCorralClient, name: str, fd: int, stdout: BinaryIO
) -> None:
    """A raw terminal on the console until Ctrl-], EOF, SIGTERM/SIGHUP, or the server closes."""
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    leave = loop.create_future()

    async def send_keys() -> None:
        while data := await keys.get():
            if ESCAPE in data:
                before = data.split(ESCAPE, 1)[0]
                if before:
                    await session.send(before)
                return
            await session.send(data)

    async def until_signal() -> None:
        await leave

    def on_signal() -> None:
        if not leave.done():
            leave.set_result(None)

    async with client.console(name) as session:
        typer.echo(f"Connected to the console of {name}; press Ctrl-] to leave.", err=True)
        saved = termios.tcgetattr(fd)
        try:
            tty.setraw(fd)
            loop.add_reader(fd, lambda: keys.put_nowait(os.read(fd, _CHUNK)))
            for sig in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, on_signal)
            await _race(
                asyncio.create_task(_OutputPump(session, stdout).run()),
                asyncio.create_task(send_keys()),
                asyncio.create_task(until_signal()),
            )
        finally:
            loop.remove_reader(fd)
            for sig in (signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        typer.echo(f"\nLeft the console of {name}.", err=True)


def last_lines(data: bytes, count: int) -> bytes:
    """The last `count` lines of `data` (a trailing newline does not count as a line)."""
    if count <= 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:])


def console(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Instance name.")],
    log: Annotated[
        bool, typer.Option("--log", help="Print what the guest printed recently, then exit.")
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option("--tail", help="Print the last N lines of console output, then exit.", min=0),
    ] = None,
    linger: Annotated[
        float,
        typer.Option(
            "--linger", help="Without a terminal: seconds of guest silence after stdin ends.", min=0
        ),
    ] = 1.0,
) -> None:
    """Attach to an instance's serial console (Ctrl-] leaves)."""
    stdout = sys.stdout.buffer
    with open_client(ctx) as client:
        if log or tail is not None:
            window = (
                _LOG_BYTES if tail is None else min(max(tail * 256, _LOG_BYTES), _MAX_LOG_BYTES)
            )
            data = client.console_log(name, max_bytes=window)
            stdout.write(data if tail is None else last_lines(data, tail))
            stdout.flush()
            return
        if sys.stdin.isatty():
            client.run(interactive_console(client.aio, name, sys.stdin.fileno(), stdout))
        else:
            client.run(pipe_console(client.aio, name, sys.stdin.buffer, stdout, linger))


def register(app: typer.Typer) -> None:
    """Add `console` to the root app."""
    app.command()(console)
