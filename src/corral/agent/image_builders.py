"""Image builders the agent can use: Debian-package builds, or a fake one for fast tests."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from corral.errors import ImageBuildError

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class BuiltFiles:
    """What a builder made, in the agent's terms."""

    name: str
    kind: str
    kernel: Path
    initrd: Path | None
    cmdline: str
    size_bytes: int
    digest: str
    recipe: dict[str, Any]
    build_seconds: float
    disk: Path | None = None  # kind "disk": the qcow2 root disk instances thin-clone
    disk_virtual_size_bytes: int = 0
    cloud_init: bool = False  # instances need a NoCloud seed (corral.images.seed)


class ImageBuilder(Protocol):
    """Makes bootable images from named recipes."""

    def recipes(self) -> list[str]:
        """Names of the recipes it can build."""
        ...

    def build(
        self, recipe: str, name: str, dest_dir: Path, cache_dir: Path, progress: ProgressFn
    ) -> BuiltFiles:
        """Build `recipe` into `dest_dir` (made whole or not at all)."""
        ...


class DebianImageBuilder:
    """The real builder: corral.images, from Debian's packages."""

    def recipes(self) -> list[str]:
        """Recipes of corral.images."""
        from corral.images.builder import list_recipes

        return list_recipes()

    def build(
        self, recipe: str, name: str, dest_dir: Path, cache_dir: Path, progress: ProgressFn
    ) -> BuiltFiles:
        """Run corral.images' builder."""
        from corral.images.builder import build_image

        built = build_image(recipe, dest_dir, cache_dir, progress)
        return BuiltFiles(
            name=name,
            kind=built.kind,
            kernel=built.kernel,
            initrd=built.initrd,
            cmdline=built.cmdline,
            size_bytes=built.size_bytes,
            digest=built.digest,
            recipe=dict(built.recipe),
            build_seconds=built.build_seconds,
            disk=built.disk,
            disk_virtual_size_bytes=built.disk_virtual_size_bytes,
            cloud_init=built.cloud_init,
        )


class FakeImageBuilder:
    """Writes small placeholder files at once: for tests on the fake compute backend."""

    RECIPES = ("tiny",)

    def recipes(self) -> list[str]:
        """Same recipe names as the real builder."""
        return list(self.RECIPES)

    def build(
        self, recipe: str, name: str, dest_dir: Path, cache_dir: Path, progress: ProgressFn
    ) -> BuiltFiles:
        """Placeholder kernel and initrd with a real digest."""
        if recipe not in self.RECIPES:
            raise ImageBuildError(
                f"unknown recipe {recipe!r}; known recipes: {', '.join(self.RECIPES)}",
                code="unknown_recipe",
            )
        started = time.monotonic()
        tmp = dest_dir.with_name(dest_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        progress(0.5, "writing placeholder kernel and initrd")
        (tmp / "vmlinux").write_bytes(b"\x7fELF fake kernel for " + name.encode())
        (tmp / "initrd.img").write_bytes(b"fake initrd")
        shutil.rmtree(dest_dir, ignore_errors=True)
        tmp.rename(dest_dir)
        kernel, initrd = dest_dir / "vmlinux", dest_dir / "initrd.img"
        digest = hashlib.sha256(kernel.read_bytes() + initrd.read_bytes()).hexdigest()
        progress(1.0, "done")
        return BuiltFiles(
            name=name,
            kind="initramfs",
            kernel=kernel,
            initrd=initrd,
            cmdline="quiet",
            size_bytes=kernel.stat().st_size + initrd.stat().st_size,
            digest=f"sha256:{digest}",
            recipe={"name": recipe, "packages": {}, "builder_version": 0},
            build_seconds=time.monotonic() - started,
        )
