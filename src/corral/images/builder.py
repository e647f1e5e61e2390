"""Build a bootable guest image from a recipe.

`initramfs` recipes (tiny): resolve, download, unpack, kernel, initramfs.
`disk` recipes (debian-12): mmdebstrap a root filesystem, take its kernel and initramfs out,
write the rest as a qcow2 root disk.

The QEMU driver and the API server call `build_image`; everything it makes lands in
`dest_dir` at once (built in a hidden sibling directory, then renamed), so a failed or
interrupted build never leaves a half-made image where a driver would boot it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from corral.errors import ImageBuildError
from corral.images import apt, disk, rootfs
from corral.images.initramfs import assemble, choose_compression, write_initrd
from corral.images.kernel import extract_vmlinux, find_kernel, kernel_config
from corral.images.modules import (
    ensure_modules_dep,
    load_order,
    parse_modules_builtin,
    parse_modules_dep,
)
from corral.images.recipes import DiskRecipe, Recipe, get_recipe
from corral.images.recipes import list_recipes as _recipe_names
from corral.images.sharedlibs import library_closure

log = logging.getLogger(__name__)

BUILDER_VERSION = 1
KIND_INITRAMFS = "initramfs"
KIND_DISK = "disk"
KERNEL_FILE = "vmlinux"
INITRD_FILES = {"gzip": "initrd.cpio.gz", "zstd": "initrd.cpio.zst"}
DISK_INITRD_FILE = "initrd.img"  # Debian's own initramfs, made by initramfs-tools
DISK_FILE = "disk.qcow2"
MANIFEST_FILE = "image.json"
DEBS_SUBDIR = "debs"  # under cache_dir, so the cache can be shared with other tools

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class BuiltImage:
    """A finished image in its directory: what to boot and what it was made from."""

    name: str
    kind: str  # "initramfs": kernel + initrd, no disk; "disk": plus a qcow2 root disk
    kernel: Path  # uncompressed vmlinux (PVH-bootable ELF)
    initrd: Path  # compressed initramfs (tiny: our newc cpio; disk: Debian's initrd.img)
    cmdline: str  # kernel arguments the image needs, without console=
    size_bytes: int  # kernel + initrd (+ the disk's file size)
    digest: str  # "sha256:<hex>" over the kernel, the initrd, then the disk
    recipe: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    disk: Path | None = None  # qcow2 root disk that instances thin-clone (kind "disk")
    disk_virtual_size_bytes: int = 0  # the smallest volume an instance's root disk can be
    cloud_init: bool = False  # the guest runs cloud-init: attach a NoCloud seed (seed.py)

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
            "disk": self.disk.name if self.disk is not None else None,
            "disk_virtual_size_bytes": self.disk_virtual_size_bytes,
            "cloud_init": self.cloud_init,
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
            # Manifests written before disk images existed have none of these three.
            disk=Path(image_dir) / data["disk"] if data.get("disk") else None,
            disk_virtual_size_bytes=int(data.get("disk_virtual_size_bytes", 0)),
            cloud_init=bool(data.get("cloud_init", False)),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ImageBuildError(
            f"no usable image in {image_dir} ({err}); build it again with `corral image build`"
        ) from err
    files = [image.kernel, image.initrd] + ([image.disk] if image.disk is not None else [])
    if not all(path.is_file() for path in files):
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
        if isinstance(recipe, DiskRecipe):
            image = _build_disk(recipe, build_dir, cache_dir, report)
        else:
            image = _build(recipe, build_dir, cache_dir / DEBS_SUBDIR, report)
        image = replace(
            image,
            kernel=dest_dir / image.kernel.name,
            initrd=dest_dir / image.initrd.name,
            disk=dest_dir / image.disk.name if image.disk is not None else None,
            build_seconds=round(time.monotonic() - started, 2),
        )
        (build_dir / MANIFEST_FILE).write_text(json.dumps(image.to_manifest(), indent=2) + "\n")
        build_dir.chmod(0o755)  # mkdtemp made it private; QEMU may run as another user
        _replace_dir(build_dir, dest_dir)
    except ImageBuildError:
        raise
    except (OSError, subprocess.SubprocessError) as err:
        raise ImageBuildError(f"building image {recipe.name!r} failed: {err}") from err
    finally:
        _remove_build_dir(build_dir)
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


def _build_disk(
    recipe: DiskRecipe, build_dir: Path, cache_dir: Path, report: _Reporter
) -> BuiltImage:
    """mmdebstrap a root, take out its kernel and initramfs, write the rest as qcow2."""
    rootfs.check_host()
    debs_dir = cache_dir / DEBS_SUBDIR
    lists_dir = rootfs.lists_cache_dir(cache_dir, recipe)
    root = build_dir / "root"
    root.mkdir(mode=0o755)
    cached = rootfs.prepare_root(root, debs_dir, lists_dir)
    report(0.0, f"prepare: {recipe.suite}, {len(recipe.packages)} packages, {cached} .debs cached")
    hooks_dir = build_dir / "hooks"
    hooks_dir.mkdir()
    hooks = []
    for script in (recipe.essential_hook, recipe.customize_hook):
        hook = hooks_dir / script
        hook.write_bytes(resources.files("corral.images").joinpath("guest", script).read_bytes())
        hooks.append(hook)
    argv = rootfs.mmdebstrap_argv(recipe, root, hooks[0], hooks[1], rootfs.host_apt_proxies())
    rootfs.run_mmdebstrap(argv, rootfs.MmdebstrapProgress(start=0.01, end=0.8), report)
    shutil.rmtree(hooks_dir)
    added = rootfs.harvest_cache(root, debs_dir, lists_dir)
    packages = rootfs.installed_packages(root)
    rootfs.clean_root(root)

    vmlinuz, release = find_kernel(root)
    report(0.8, f"kernel: unpacking {vmlinuz.name} to vmlinux ({added} new .debs cached)")
    kernel_path = build_dir / KERNEL_FILE
    kernel_path.write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
    initrd_path = build_dir / DISK_INITRD_FILE
    made_initrd = root / "boot" / f"initrd.img-{release}"
    if not made_initrd.is_file():
        raise ImageBuildError(f"initramfs-tools made no /boot/{made_initrd.name} in the image")
    shutil.copyfile(made_initrd, initrd_path)

    used_mib = _tree_bytes(root) / (1 << 20)
    size_gib = recipe.disk_size_bytes / (1 << 30)
    report(0.84, f"filesystem: {used_mib:.0f} MiB into a {size_gib:g} GiB ext4")
    raw = build_dir / "disk.raw"
    disk.make_ext4(root, raw, recipe.disk_size_bytes, recipe.filesystem_label)
    shutil.rmtree(root)
    report(0.9, "qcow2: converting the root disk")
    disk_path = build_dir / DISK_FILE
    compression = disk.convert_to_qcow2(raw, disk_path)
    raw.unlink()

    report(0.96, "digest")
    files = (kernel_path, initrd_path, disk_path)
    return BuiltImage(
        name=recipe.name,
        kind=KIND_DISK,
        kernel=kernel_path,
        initrd=initrd_path,
        cmdline=recipe.cmdline,
        size_bytes=sum(path.stat().st_size for path in files),
        digest=_digest(*files),
        recipe={
            "name": recipe.name,
            "suite": recipe.suite,
            "packages": packages,
            "builder_version": BUILDER_VERSION,
            "kernel_release": release,
            "filesystem_label": recipe.filesystem_label,
            "disk_compression": compression,
        },
        disk=disk_path,
        disk_virtual_size_bytes=disk.virtual_size(disk_path),
        cloud_init=recipe.cloud_init,
    )


def _tree_bytes(root: Path) -> int:
    """Bytes allocated by the files under `root` (hard links counted once)."""
    seen: set[int] = set()
    total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            stat = os.lstat(os.path.join(directory, name))
            if stat.st_ino not in seen:
                seen.add(stat.st_ino)
                total += stat.st_blocks * 512
    return total


def _remove_build_dir(build_dir: Path) -> None:
    """Delete a build directory, but never through a mount point left inside it."""
    mounted = _mounts_under(build_dir)
    if mounted:
        log.error("not deleting %s: still mounted inside it: %s", build_dir, ", ".join(mounted))
        return
    shutil.rmtree(build_dir, ignore_errors=True)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (from /proc/self/mounts; octal escapes decoded)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    prefix = str(path.resolve())
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) > 1:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


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
