"""Compute backends by name: "qemu" for real VMs, "fake" for fast tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from corral.agent.compute.base import ComputeBackend
from corral.errors import InvalidInput


def _qemu(runtime_dir: Path) -> ComputeBackend:
    from corral.agent.compute.qemu.driver import QemuBackend

    return QemuBackend(runtime_dir)


def _fake(runtime_dir: Path) -> ComputeBackend:
    from corral.agent.compute.fake import FakeComputeBackend

    return FakeComputeBackend(runtime_dir)


COMPUTE_BACKENDS: dict[str, Callable[[Path], ComputeBackend]] = {"qemu": _qemu, "fake": _fake}


def make_compute_backend(kind: str, runtime_dir: Path) -> ComputeBackend:
    """Build the backend registered as `kind`."""
    try:
        factory = COMPUTE_BACKENDS[kind]
    except KeyError:
        known = ", ".join(sorted(COMPUTE_BACKENDS))
        raise InvalidInput(
            f"unknown compute backend {kind!r}; choose one of: {known}", field="compute"
        ) from None
    return factory(runtime_dir)
