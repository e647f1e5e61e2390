"""Fixtures for CLI tests: the CLI's client factory pointed at a CannedAPI (httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from corral.cli import state
from corral.cli.main import app
from corral.client import CorralClient
from corral.client.testing import CannedAPI, sample_instance, sample_operation
from corral.model import Instance, Operation

NOW = datetime(2025, 1, 1, tzinfo=UTC)
Run = Callable[..., Result]


def build_instance(name: str = "vm1", **status: Any) -> Instance:
    return sample_instance(name, memory_mib=1536, **status)


build_operation = sample_operation


@pytest.fixture
def make_instance() -> Callable[..., Instance]:
    return build_instance


@pytest.fixture
def make_operation() -> Callable[..., Operation]:
    return build_operation


@pytest.fixture
def api() -> CannedAPI:
    return CannedAPI()


@pytest.fixture
def factory_calls(api: CannedAPI, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Point the CLI's client factory at `api`; record the --url/--data-dir it was given."""
    calls: list[tuple[str | None, Path | None]] = []

    def factory(url: str | None, data_dir: Path | None) -> CorralClient:
        calls.append((url, data_dir))
        return CorralClient("http://corral.test", "cli-token", transport=api.transport())

    monkeypatch.setattr(state, "client_factory", factory)
    return calls


@pytest.fixture
def corral(factory_calls: list[tuple[Any, Any]]) -> Run:
    """Run `corral ARGS...` in-process; returns typer's Result (stdout, stderr, exit_code)."""
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None) -> Result:
        return runner.invoke(app, list(args), input=input)

    return run
