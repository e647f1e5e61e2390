"""Fixtures for the agent's tests: short runtime dirs and process cleanup (tiny_image is in
tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.compute.qemu.process import processes_mentioning


def kill_processes_under(directory: Path) -> list[int]:
    """SIGKILL every process whose command line names a path under `directory`; their pids."""
    pids = [pid for pid in processes_mentioning(str(directory)) if pid != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh dir with a short path (unix socket paths must fit in 107 bytes); on teardown
    every process still using it is killed and the dir removed."""
    path = Path(tempfile.mkdtemp(prefix="crl-", dir="/tmp"))
    yield path
    kill_processes_under(path)
    shutil.rmtree(path, ignore_errors=True)
