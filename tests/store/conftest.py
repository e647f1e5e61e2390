"""A fresh SQLite store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.store import Database, open_database, sqlite_url


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A migrated store in a temp dir."""
    database = open_database(sqlite_url(tmp_path / "corral.db"))
    yield database
    database.close()
