"""Fixtures for the agent's tests: short runtime dirs, process cleanup, and the compute
contract's harness (one backend kind per parameter: the fake, and real QEMU marked slow).
tiny_image is in tests/conftest.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.agent.compute.base import ComputeBackend
from corral.agent.compute.fake import FakeComputeBackend
from corral.agent.compute.qemu.driver import QemuBackend
from corral.agent.compute.qemu.process import processes_mentioning
from corral.model.rpc import AgentEvent, AgentEventKind, LaunchRequest


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


def make_qcow2(path: Path, size_bytes: int) -> Path:
    """An empty qcow2 image made by qemu-img, as the storage backends make them."""
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size_bytes)], check=True
    )
    return path


@dataclass
class Harness:
    """A backend under test plus what the contract needs to know about its kind."""

    kind: str
    runtime_dir: Path
    kernel: str
    initrd: str | None
    cmdline: str
    make: Callable[[Path], ComputeBackend]
    backends: list[ComputeBackend] = field(default_factory=list)
    events: list[AgentEvent] = field(default_factory=list)

    @property
    def real(self) -> bool:
        return self.kind == "qemu"

    def new_backend(self) -> ComputeBackend:
        """A backend on the runtime dir, as after an agent restart; it records events."""
        backend = self.make(self.runtime_dir)
        backend.subscribe(self.events.append)
        self.backends.append(backend)
        return backend

    def request(self, name: str, **overrides: object) -> LaunchRequest:
        fields: dict[str, object] = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "cpus": 1,
            "memory_mib": 256,
            "machine": "pc",
            "kernel": self.kernel,
            "initrd": self.initrd,
            "cmdline": self.cmdline,
        }
        fields.update(overrides)
        return LaunchRequest.model_validate(fields)

    def crash(self, backend: ComputeBackend, name: str, pid: int) -> None:
        """Kill the guest from outside Corral (kill -9)."""
        if isinstance(backend, FakeComputeBackend):
            backend.simulate_crash(name)
        else:
            os.kill(pid, signal.SIGKILL)

    def host_processes(self) -> list[int]:
        """Processes on this host that use the runtime dir (real backends only)."""
        return processes_mentioning(str(self.runtime_dir)) if self.real else []

    def kinds(self, name: str) -> list[AgentEventKind]:
        return [event.kind for event in self.events if event.name == name]


@pytest.fixture(params=["fake", pytest.param("qemu", marks=pytest.mark.slow)])
async def harness(request: pytest.FixtureRequest, short_dir: Path) -> AsyncIterator[Harness]:
    """The contract's harness, once with the fake and once with QEMU booting the tiny image."""
    if request.param == "fake":
        kernel = short_dir / "vmlinux"
        kernel.write_bytes(b"\x7fELF fake kernel")
        made = Harness("fake", short_dir / "run", str(kernel), None, "", FakeComputeBackend)
    else:
        image = request.getfixturevalue("tiny_image")
        made = Harness(
            "qemu",
            short_dir / "run",
            str(image.kernel),
            str(image.initrd),
            image.cmdline,
            QemuBackend,
        )
    yield made
    for backend in made.backends:
        with contextlib.suppress(Exception):
            await backend.close()
    assert kill_processes_under(short_dir) == [], "a test left a guest process behind"


@pytest.fixture
def backend(harness: Harness) -> ComputeBackend:
    """A backend of the harness's kind."""
    return harness.new_backend()
