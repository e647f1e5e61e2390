"""Build a bootable guest image from a recipe: resolve, download, unpack, kernel, initramfs.

The QEMU driver and the API server call `build_image`; everything it makes lands in
`dest_dir` at once (built in a hidden sibling directory, then renamed), so a failed or
interrupted build never leaves a half-made image where a driver would boot it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.errors import ImageBuildError
from corral.images import apt
from corral.images.initramfs import assemble, choose_compression, write_initrd
from corral.images.kernel import extract_vmlinux, find_kernel, kernel_config
from corral.images.modules import (
    ensure_modules_dep,
    load_order,
    parse_modules_builtin,
    parse_modules_dep,
)
from corral.images.recipes import Recipe, get_recipe
from corral.images.recipes import list_recipes as _recipe_names
from corral.images.sharedlibs import library_closure

log = logging.getLogger(__name__)

BUILDER_VERSION = 1
KIND_INITRAMFS = "initramfs"
KERNEL_FILE = "vmlinux"
INITRD_FILES = {"gzip": "initrd.cpio.gz", "zstd": "initrd.cpio.zst"}
MANIFEST_FILE = "image.json"
DEBS_SUBDIR = "debs"  # under cache_dir, so the cache can be shared with other tools

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class BuiltImage:
    """A finished image in its directory: what to boot and what it was made from."""

    name: str
    kind: str  # "initramfs": kernel + initrd, no disk
    kernel: Path  # uncompressed vmlinux (PVH-bootable ELF)
    initrd: Path  # compressed newc cpio (zstd or gzip)
    cmdline: str  # kernel arguments the image needs, without console=
    size_bytes: int  # kernel + initrd
    digest: str  # "sha256:<hex>" over the kernel then the initrd
    recipe: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0

    def to_manifest(self) -> dict[str, Any]:
        """JSON-ready description, with file names relative to the image directory."""
        return {
            "name": self.name,
            "kind": self.kind,
            "kernel": self.kernel.name,
            "initrd": self.initrd.name,
            "cmdline": self.cmdline,
            "size_bytes": self.size_bytes,
            "digest": self.digest,
            "recipe": self.recipe,
            "build_seconds": self.build_seconds,
        }


def list_recipes() -> list[str]:
    """Names of the images `build_image` can make."""
    return _recipe_names()


def load_image(image_dir: Path) -> BuiltImage:
    """Read back an image that `build_image` made earlier (from its image.json)."""
    manifest_path = Path(image_dir) / MANIFEST_FILE
    try:
        data = json.loads(manifest_path.read_text())
        image = BuiltImage(
            name=data["name"],
            kind=data["kind"],
            kernel=Path(image_dir) / data["kernel"],
            initrd=Path(image_dir) / data["initrd"],
            cmdline=data["cmdline"],
            size_bytes=int(data["size_bytes"]),
            digest=data["digest"],
            recipe=dict(data["recipe"]),
            build_seconds=float(data["build_seconds"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ImageBuildError(
            f"no usable image in {image_dir} ({err}); build it again with `corral image build`"
        ) from err
    if not (image.kernel.is_file() and image.initrd.is_file()):
        raise ImageBuildError(f"image files are missing in {image_dir}; build it again")
    return image


class _Reporter:
    """Forward progress to the caller and the log; a failing callback never fails a build."""

    def __init__(self, callback: ProgressFn | None) -> None:
        self._callback = callback

    def __call__(self, fraction: float, message: str) -> None:
        log.info("image build %3.0f%% %s", fraction * 100, message)
        if self._callback is not None:
            try:
                self._callback(min(max(fraction, 0.0), 1.0), message)
            except Exception:  # the caller's bug must not abort a long build
                log.exception("image build progress callback failed")


def build_image(
    recipe_name: str, dest_dir: Path, cache_dir: Path, progress: ProgressFn | None = None
) -> BuiltImage:
    """Build recipe `recipe_name` into `dest_dir`, caching .debs under `cache_dir`.

    Raises ImageBuildError (with what to do next) for an unknown recipe or any failure.
    """
    recipe = get_recipe(recipe_name)
    report = _Reporter(progress)
    started = time.monotonic()
    dest_dir = Path(dest_dir).absolute()
    cache_dir = Path(cache_dir).absolute()
    try:
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        build_dir = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.build-", dir=dest_dir.parent))
    except OSError as err:
        raise ImageBuildError(f"cannot create a build directory next to {dest_dir}: {err}") from err
    try:
        image = _build(recipe, build_dir, cache_dir / DEBS_SUBDIR, report)
        elapsed = round(time.monotonic() - started, 2)
        image = BuiltImage(
            name=image.name,
            kind=image.kind,
            kernel=dest_dir / image.kernel.name,
            initrd=dest_dir / image.initrd.name,
            cmdline=image.cmdline,
            size_bytes=image.size_bytes,
            digest=image.digest,
            recipe=image.recipe,
            build_seconds=elapsed,
        )
        (build_dir / MANIFEST_FILE).write_text(json.dumps(image.to_manifest(), indent=2) + "\n")
        build_dir.chmod(0o755)  # mkdtemp made it private; QEMU may run as another user
        _replace_dir(build_dir, dest_dir)
    except ImageBuildError:
        raise
    except (OSError, subprocess.SubprocessError) as err:
        raise ImageBuildError(f"building image {recipe.name!r} failed: {err}") from err
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
    size_mib = image.size_bytes / (1 << 20)
    report(1.0, f"done: {recipe.name} in {image.build_seconds:.1f} s ({size_mib:.1f} MiB)")
    return image


def _build(recipe: Recipe, build_dir: Path, debs_dir: Path, report: _Reporter) -> BuiltImage:
    """Do the work inside `build_dir`; the returned paths point into it."""
    report(0.0, f"resolve: {recipe.kernel_metapackage} and {', '.join(recipe.packages)}")
    kernel_pkg = apt.resolve_metapackage(recipe.kernel_metapackage, recipe.kernel_package_pattern)
    userland = apt.resolve_closure(recipe.packages)
    packages = sorted({kernel_pkg, *userland})

    def on_download(done: int, total: int, name: str) -> None:
        if total == 0:
            report(0.45, f"download: all {len(packages)} packages cached")
        else:
            suffix = f": {name}" if name else ""
            report(0.05 + 0.4 * done / total, f"download {done}/{total}{suffix}")

    debs = apt.fetch(packages, debs_dir, on_download)

    report(0.5, f"extract: {len(packages)} packages")
    staging = build_dir / "staging"
    kernel_root, user_root = staging / "kernel", staging / "rootfs"
    kernel_root.mkdir(parents=True)
    user_root.mkdir(parents=True)
    # The kernel package is most of the bytes: unpack it alongside the userland packages.
    with ThreadPoolExecutor(max_workers=2) as pool:
        kernel_job = pool.submit(apt.unpack, debs[kernel_pkg], kernel_root)
        for package in userland:
            apt.unpack(debs[package], user_root)
        kernel_job.result()

    vmlinuz, release = find_kernel(kernel_root)
    report(0.65, f"kernel: unpacking {vmlinuz.name} to vmlinux")
    kernel_path = build_dir / KERNEL_FILE
    kernel_path.write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
    config = kernel_config(kernel_root, release)

    modules_dir = kernel_root / "lib" / "modules" / release
    available = parse_modules_dep(ensure_modules_dep(modules_dir, release))
    builtin_file = modules_dir / "modules.builtin"
    builtin = parse_modules_builtin(builtin_file.read_text()) if builtin_file.exists() else set()
    modules = load_order(recipe.modules, available, builtin, recipe.optional_modules)

    compression = choose_compression(config)
    report(0.75, f"initramfs: {len(modules)} modules, {compression}")
    libraries = library_closure(user_root, recipe.executables)
    archive = assemble(user_root, kernel_root, release, modules, libraries, recipe.executables)
    initrd_path = build_dir / INITRD_FILES[compression]
    write_initrd(archive, initrd_path, compression)
    shutil.rmtree(staging)

    report(0.95, "digest")
    return BuiltImage(
        name=recipe.name,
        kind=KIND_INITRAMFS,
        kernel=kernel_path,
        initrd=initrd_path,
        cmdline=recipe.cmdline,
        size_bytes=kernel_path.stat().st_size + initrd_path.stat().st_size,
        digest=_digest(kernel_path, initrd_path),
        recipe={
            "name": recipe.name,
            "packages": {p.name: p.version for p in packages},
            "modules": [m.name for m in modules],
            "builder_version": BUILDER_VERSION,
            "kernel_release": release,
        },
    )


def _digest(*paths: Path) -> str:
    sha = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def _replace_dir(new: Path, dest: Path) -> None:
    """Put `new` at `dest`, replacing an older build there (renames only, same filesystem)."""
    if dest.exists() and not dest.is_dir():
        raise ImageBuildError(f"{dest} exists and is not a directory; remove it or pick another")
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    if dest.exists():
        os.rename(dest, old)
    os.rename(new, dest)
    shutil.rmtree(old, ignore_errors=True)
