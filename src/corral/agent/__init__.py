"""The agent: one per host; executes and observes, decides nothing (see docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

from corral.agent.agent import Agent
from corral.agent.compute.fake_snapshots import FakeOfflineDisks
from corral.agent.compute.registry import make_compute_backend
from corral.agent.image_builders import DebianImageBuilder, FakeImageBuilder, ImageBuilder

__all__ = ["Agent", "build_agent"]


def build_agent(
    compute: str,
    *,
    host_name: str,
    runtime_dir: Path,
    images_dir: Path,
    cache_dir: Path,
    pools_dir: Path | None = None,
) -> Agent:
    """An agent with the named compute backend ("qemu" or "fake").

    The fake backend gets the fake image builder too, so tests never download packages, and
    its modelled snapshots serve stopped guests too (the real agent uses qemu-img for those).
    Storage pools follow the driver each pool asks for (`dir` works with either compute
    backend; `fake` is there for tests); `pools_dir` defaults to `<images_dir>/../pools`.
    """
    backend = make_compute_backend(compute, runtime_dir)
    builder: ImageBuilder = FakeImageBuilder() if compute == "fake" else DebianImageBuilder()
    # The fake's snapshots and bitmaps are modelled; a stopped fake guest uses the same model.
    offline = FakeOfflineDisks(runtime_dir) if compute == "fake" else None
    return Agent(
        host_name, backend, builder, images_dir, cache_dir, pools_dir=pools_dir, offline=offline
    )
