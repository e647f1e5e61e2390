"""The host daemon's brain-free core: it executes and observes, it decides nothing.

It implements the control plane's AgentAPI (corral.bus.agent_link) structurally, on top of one
compute backend and one image builder.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from corral.agent.compute.base import AgentEventHandler, ComputeBackend
from corral.agent.image_builders import ImageBuilder, ProgressFn
from corral.errors import ImageBuildError
from corral.model.names import validate_name
from corral.model.rpc import (
    ExecRequest,
    ExecResult,
    GuestObservation,
    HostFacts,
    ImageArtifact,
    LaunchRequest,
)


def _memory_mib() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


class Agent:
    """One host's agent: guests through `compute`, images through `builder`."""

    def __init__(
        self,
        host_name: str,
        compute: ComputeBackend,
        builder: ImageBuilder,
        images_dir: Path,
        cache_dir: Path,
    ) -> None:
        self.host_name = host_name
        self.compute = compute
        self.builder = builder
        self.images_dir = images_dir
        self.cache_dir = cache_dir
        images_dir.mkdir(parents=True, exist_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Agent(host={self.host_name!r}, compute={self.compute.name!r})"

    async def host_facts(self) -> HostFacts:
        """Capacity and accelerator of this host."""
        accel = self.compute.accel_info()
        return HostFacts(
            name=self.host_name,
            cpus=os.cpu_count() or 1,
            memory_mib=_memory_mib(),
            accel=accel.accel,
            accel_reason=accel.reason,
            qemu_version=self.compute.version(),
            kernel=os.uname().release,
        )

    async def launch(self, req: LaunchRequest) -> GuestObservation:
        """Start a guest."""
        return await self.compute.launch(req)

    async def observe(self, name: str) -> GuestObservation:
        """Observe one guest."""
        return await self.compute.observe(name)

    async def observe_all(self) -> list[GuestObservation]:
        """Observe every guest with runtime files."""
        return await self.compute.observe_all()

    async def wait_ready(self, name: str, timeout_s: float) -> float:
        """Wait for the guest agent."""
        return await self.compute.wait_ready(name, timeout_s)

    async def shutdown(self, name: str, timeout_s: float) -> None:
        """Clean power-off with a timeout."""
        await self.compute.shutdown(name, timeout_s)

    async def kill(self, name: str) -> None:
        """Hard stop."""
        await self.compute.kill(name)

    async def forget(self, name: str) -> None:
        """Drop runtime files."""
        await self.compute.forget(name)

    async def exec(self, req: ExecRequest) -> ExecResult:
        """Run a command in the guest."""
        return await self.compute.exec(req)

    async def open_console(self, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Serial console stream."""
        return await self.compute.open_console(name)

    async def console_log(self, name: str, max_bytes: int) -> bytes:
        """Recent console output."""
        return await self.compute.console_log(name, max_bytes)

    def recipes(self) -> list[str]:
        """Recipes this host can build."""
        return self.builder.recipes()

    async def build_image(self, recipe: str, name: str, progress: ProgressFn) -> ImageArtifact:
        """Build an image in a worker thread; progress is delivered on the event loop."""
        validate_name(name, "name")
        if recipe not in self.builder.recipes():
            known = ", ".join(self.builder.recipes())
            raise ImageBuildError(
                f"unknown recipe {recipe!r}; known recipes: {known}", code="unknown_recipe"
            )
        loop = asyncio.get_running_loop()

        def threadsafe_progress(fraction: float, message: str) -> None:
            loop.call_soon_threadsafe(progress, fraction, message)

        built = await asyncio.to_thread(
            self.builder.build,
            recipe,
            name,
            self.images_dir / name,
            self.cache_dir,
            threadsafe_progress,
        )
        return ImageArtifact(
            name=name,
            kind=built.kind,
            kernel=str(built.kernel),
            initrd=str(built.initrd) if built.initrd else None,
            cmdline=built.cmdline,
            size_bytes=built.size_bytes,
            digest=built.digest,
            recipe=built.recipe,
            build_seconds=built.build_seconds,
        )

    async def delete_image(self, name: str) -> None:
        """Remove an image's files (idempotent)."""
        validate_name(name, "name")
        await asyncio.to_thread(shutil.rmtree, self.images_dir / name, True)

    def subscribe(self, handler: AgentEventHandler) -> None:
        """Guest events from the compute backend."""
        self.compute.subscribe(handler)

    async def close(self) -> None:
        """Let go; guests keep running."""
        await self.compute.close()
