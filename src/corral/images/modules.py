"""Pick kernel modules and the order to load them, from depmod's modules.dep.

The guest has no modprobe database to speak of and boot time matters under TCG, so the
initramfs gets a flat, pre-sorted list and init just insmods it line by line. Debian's
kernel packages do not ship modules.dep (their postinst runs depmod), so the builder runs
`depmod -b` over the unpacked tree first.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corral.errors import ImageBuildError

MODULE_SUFFIX = re.compile(r"\.ko(\.(xz|zst|gz))?$")


@dataclass(frozen=True)
class KernelModule:
    """One loadable module: its canonical name, path under /lib/modules/<release>, deps."""

    name: str
    path: str  # relative to /lib/modules/<release>, as modules.dep writes it
    depends: tuple[str, ...]  # paths, in modules.dep's order (modprobe loads them last first)


def module_name(path: str) -> str:
    """Canonical name of a module file: basename, no .ko[.xz|.zst|.gz], '-' folded to '_'."""
    base = path.rsplit("/", 1)[-1]
    return MODULE_SUFFIX.sub("", base).replace("-", "_")


def uncompressed_path(path: str) -> str:
    """The path a module gets in the initramfs, where it is stored uncompressed."""
    return MODULE_SUFFIX.sub(".ko", path)


def parse_modules_dep(text: str) -> dict[str, KernelModule]:
    """Parse modules.dep ("path: dep dep ...") into modules keyed by canonical name."""
    modules: dict[str, KernelModule] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        path, sep, deps = line.partition(":")
        if not sep:
            raise ImageBuildError(f"modules.dep line {lineno} has no ':': {raw!r}")
        mod = KernelModule(module_name(path), path.strip(), tuple(deps.split()))
        modules.setdefault(mod.name, mod)  # depmod lists the preferred copy first
    return modules


def parse_modules_builtin(text: str) -> set[str]:
    """Canonical names of the modules compiled into the kernel (modules.builtin)."""
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def load_order(
    wanted: Sequence[str],
    available: dict[str, KernelModule],
    builtin: Iterable[str] = (),
    optional: Sequence[str] = (),
) -> list[KernelModule]:
    """Modules to insmod, dependencies first, otherwise in the order they were asked for.

    A wanted module that is built in is skipped; a missing one raises ImageBuildError unless
    it is listed in `optional` (helpers that only some kernel versions split out).
    """
    builtin_names = {module_name(n) for n in builtin}
    by_path = {m.path: m for m in available.values()}
    order: list[KernelModule] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def visit(mod: KernelModule) -> None:
        if mod.name in placed:
            return
        if mod.name in visiting:
            raise ImageBuildError(f"module dependency cycle through {mod.name}")
        visiting.add(mod.name)
        # modprobe inserts the last-listed dependency first; do the same, each after its own deps.
        for dep_path in reversed(mod.depends):
            dep = by_path.get(dep_path) or available.get(module_name(dep_path))
            if dep is None:
                raise ImageBuildError(f"{mod.name} depends on {dep_path}, absent from modules.dep")
            visit(dep)
        visiting.discard(mod.name)
        placed.add(mod.name)
        order.append(mod)

    optional_names = {module_name(n) for n in optional}
    for requested in [*wanted, *optional]:
        name = module_name(requested)
        if name in builtin_names:
            continue
        mod = available.get(name)
        if mod is None:
            if name in optional_names:
                continue
            raise ImageBuildError(
                f"kernel module {name} is neither built in nor in modules.dep; "
                "check the recipe's kernel package"
            )
        visit(mod)
    return order


def ensure_modules_dep(modules_dir: Path, release: str) -> str:
    """Return modules.dep's text for an unpacked kernel, running `depmod -b` when absent.

    `modules_dir` is <root>/lib/modules/<release>.
    """
    dep_file = modules_dir / "modules.dep"
    if not dep_file.exists():
        depmod = shutil.which("depmod") or next(
            (p for p in ("/sbin/depmod", "/usr/sbin/depmod") if Path(p).exists()), None
        )
        if depmod is None:
            raise ImageBuildError("depmod is needed to order kernel modules: apt-get install kmod")
        base = modules_dir.parent.parent.parent  # <root>/lib/modules/<release> -> <root>
        result = subprocess.run(
            [depmod, "-b", str(base), release], capture_output=True, text=True, check=False
        )
        if result.returncode != 0 or not dep_file.exists():
            raise ImageBuildError(f"depmod failed for {release}: {result.stderr.strip()}")
    return dep_file.read_text()


def render_modules_dep(modules: Sequence[KernelModule]) -> str:
    """A modules.dep covering only `modules` (uncompressed paths), for modprobe in the guest."""
    included = {m.path for m in modules}
    lines = []
    for mod in modules:
        deps = " ".join(uncompressed_path(d) for d in mod.depends if d in included)
        lines.append(f"{uncompressed_path(mod.path)}:{' ' + deps if deps else ''}")
    return "\n".join(lines) + "\n"
