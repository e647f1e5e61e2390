"""Fixtures for the agent's tests: short runtime dirs, the tiny guest image, process cleanup."""

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
from corral.images.builder import BuiltImage, build_image

DEFAULT_TEST_CACHE = "/var/cache/corral-test"


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


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """The tiny busybox + qemu-ga guest, built once per test session (packages are cached in
    $CORRAL_TEST_CACHE, default /var/cache/corral-test)."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    cache_dir = Path(os.environ.get("CORRAL_TEST_CACHE", DEFAULT_TEST_CACHE))
    dest = tmp_path_factory.mktemp("images") / "tiny"
    return build_image("tiny", dest, cache_dir)
