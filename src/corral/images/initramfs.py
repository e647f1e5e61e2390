"""Assemble the tiny guest's initramfs from an unpacked staging root and our guest files.

Everything comes from Debian's packages except the few scripts in guest/, which are the
guest's whole userland policy (init, inittab, power button, DHCP, shutdown).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from corral.errors import ImageBuildError
from corral.images.compression import decompress
from corral.images.cpio import CpioArchive
from corral.images.modules import KernelModule, render_modules_dep, uncompressed_path
from corral.images.sharedlibs import walk_path

# (file in corral/images/guest, path in the initramfs, mode)
GUEST_FILES: tuple[tuple[str, str, int], ...] = (
    ("init", "init", 0o755),
    ("inittab", "etc/inittab", 0o644),
    ("shutdown", "etc/corral/shutdown", 0o755),
    ("power-button", "etc/acpi/PWRF/00000080", 0o755),  # busybox acpid's power-button action
    ("udhcpc.script", "etc/udhcpc/default.script", 0o755),
    ("profile", "etc/profile", 0o644),
)

BASE_DIRS: tuple[tuple[str, int], ...] = (
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("mnt", 0o755),
    ("etc", 0o755),
    ("var", 0o755),
)

BASE_FILES: tuple[tuple[str, str], ...] = (
    ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
    ("etc/group", "root:x:0:\ntty:x:5:\n"),
    ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
)

BASE_LINKS: tuple[tuple[str, str], ...] = (
    ("var/run", "../run"),
    ("var/tmp", "../tmp"),
    ("etc/mtab", "../proc/self/mounts"),
)

MODULE_LIST = "etc/corral/modules"


def guest_file(name: str) -> bytes:
    """The bytes of one file shipped in corral/images/guest."""
    return resources.files("corral.images").joinpath("guest", name).read_bytes()


def busybox_applets(busybox: Path) -> list[str]:
    """Every applet path busybox provides (e.g. "bin/sh", "sbin/udhcpc").

    Asked at build time (busybox-static runs on the build host) so the guest does not
    spend boot time on `busybox --install`.
    """
    try:
        result = subprocess.run(
            [str(busybox), "--list-full"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as err:
        raise ImageBuildError(f"cannot list busybox applets with {busybox}: {err}") from err
    applets = [line.strip().lstrip("/") for line in result.stdout.splitlines() if line.strip()]
    if "bin/sh" not in applets:
        raise ImageBuildError(f"{busybox} has no sh applet; the guest needs a shell")
    return applets


def add_from_root(archive: CpioArchive, root: Path, path: str) -> None:
    """Copy `path` from the staging root, with every symlink on its way, as the loader sees it."""
    for step in walk_path(root, path):
        if step.link_target is not None:
            archive.add_symlink(step.path, step.link_target)
        else:
            host = root / step.path.lstrip("/")
            archive.add_file(step.path, source=host, mode=host.stat().st_mode & 0o7777)


def add_modules(
    archive: CpioArchive, kernel_root: Path, release: str, modules: Sequence[KernelModule]
) -> None:
    """Add the modules (uncompressed), their load list for init, and a matching modules.dep."""
    base = f"lib/modules/{release}"
    load_list = []
    for mod in modules:
        source = kernel_root / base / mod.path
        dest = f"{base}/{uncompressed_path(mod.path)}"
        if dest.endswith(mod.path):
            archive.add_file(dest, source=source)
        else:  # busybox insmod cannot read compressed modules
            archive.add_file(dest, data=decompress(source.read_bytes()))
        load_list.append("/" + dest)
    archive.add_file(MODULE_LIST, data=("\n".join(load_list) + "\n").encode())
    archive.add_file(f"{base}/modules.dep", data=render_modules_dep(modules).encode())


def assemble(
    root: Path,
    kernel_root: Path,
    release: str,
    modules: Sequence[KernelModule],
    libraries: Sequence[str],
    executables: Sequence[str],
) -> CpioArchive:
    """The whole initramfs: base layout, busybox, executables with their libraries, modules.

    `root` holds the unpacked userland packages, `kernel_root` the unpacked kernel package.
    """
    archive = CpioArchive()
    for path, mode in BASE_DIRS:
        archive.add_dir(path, mode)
    for path, text in BASE_FILES:
        archive.add_file(path, data=text.encode())
    for path, target in BASE_LINKS:
        archive.add_symlink(path, target)
    # The kernel opens /dev/console before init runs, before devtmpfs is mounted.
    archive.add_char_device("dev/console", 5, 1, 0o600)
    archive.add_char_device("dev/null", 1, 3, 0o666)

    busybox = root / "bin" / "busybox"
    if not busybox.is_file():
        raise ImageBuildError("busybox-static did not provide /bin/busybox")
    archive.add_file("bin/busybox", source=busybox, mode=0o755)
    for applet in busybox_applets(busybox):
        if applet != "bin/busybox":
            archive.add_symlink(applet, "/bin/busybox")

    for path in [*executables, *libraries]:
        add_from_root(archive, root, path)
    add_modules(archive, kernel_root, release, modules)
    for name, path, mode in GUEST_FILES:
        archive.add_file(path, data=guest_file(name), mode=mode)
    return archive


def choose_compression(kernel_config: dict[str, str]) -> str:
    """zstd when the kernel unpacks it and the host has the tool (faster boot), else gzip."""
    if kernel_config.get("CONFIG_RD_ZSTD") == "y" and shutil.which("zstd"):
        return "zstd"
    return "gzip"


def write_initrd(archive: CpioArchive, dest: Path, compression: str) -> None:
    """Write the archive compressed to `dest` (deterministic: same input, same bytes)."""
    if compression == "gzip":
        with (
            open(dest, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out,
        ):
            archive.write(out)
        return
    if compression != "zstd":
        raise ImageBuildError(f"unsupported initrd compression {compression!r}")
    # Measured: -19 packs 2.9 MB in 3.5 s, -9 packs 3.3 MB in 0.2 s, and boot-to-ready is
    # the same (~2.3 s under TCG), so the build takes the fast level.
    argv = ["zstd", "-q", "-f", "-9", "-T0", "--no-progress", "-o", str(dest)]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as err:
        raise ImageBuildError("zstd disappeared during the build: apt-get install zstd") from err
    assert proc.stdin is not None and proc.stderr is not None
    try:
        archive.write(proc.stdin)
    finally:
        proc.stdin.close()
    stderr = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise ImageBuildError(f"zstd failed to compress the initrd: {stderr.strip()}")
