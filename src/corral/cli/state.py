"""What every command shares: the global options and the one place clients are made.

`client_factory` is the seam for tests: point it at a function returning a CorralClient built on
an httpx.MockTransport, and every command talks to that instead of a real server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from corral.client import CorralClient

ClientFactory = Callable[[str | None, Path | None], CorralClient]


class OutputFormat(StrEnum):
    """How read commands print: rich tables for people, JSON for scripts."""

    TABLE = "table"
    JSON = "json"


def _client_from_env(url: str | None, data_dir: Path | None) -> CorralClient:
    return CorralClient.from_env(url=url, data_dir=data_dir)


# The seam: tests replace this (monkeypatch) with a factory over an httpx.MockTransport.
client_factory: ClientFactory = _client_from_env


@dataclass
class CliState:
    """The global options, kept on the root Typer context."""

    url: str | None = None
    data_dir: Path | None = None
    output: OutputFormat = OutputFormat.TABLE


OutputOption = Annotated[
    OutputFormat | None,
    typer.Option("--output", "-o", help="table or json (overrides the global -o)."),
]
NoWait = Annotated[
    bool, typer.Option("--no-wait", help="Return at once; follow with `corral operations ID`.")
]
Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for the operation.", min=0)
]


def cli_state(ctx: typer.Context) -> CliState:
    """The global options of this invocation (defaults when the root callback did not run)."""
    found = ctx.find_object(CliState)
    return found if found is not None else CliState()


def output_format(ctx: typer.Context, override: OutputFormat | None) -> OutputFormat:
    """A command's own -o wins over the global one."""
    return override if override is not None else cli_state(ctx).output


@contextmanager
def open_client(ctx: typer.Context) -> Iterator[CorralClient]:
    """A client for this invocation's --url/--data-dir, closed when the command ends."""
    state = cli_state(ctx)
    client = client_factory(state.url, state.data_dir)
    try:
        yield client
    finally:
        client.close()
