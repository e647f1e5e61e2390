"""Make a Debian root filesystem with mmdebstrap, sharing Corral's .deb cache.

mmdebstrap runs in root mode inside a private mount namespace (`unshare --mount`), so the
/proc, /sys and /dev mounts it makes in the new root vanish with it, even when it is killed:
deleting a failed build can never reach into the host's /dev.

The cache: before mmdebstrap starts, every cached .deb is hard-linked into the new root's
/var/cache/apt/archives and the apt lists of the previous build are copied into
/var/lib/apt/lists; apt then downloads only what is missing and revalidates the lists with
conditional requests. Afterwards the new .debs go into the cache (the same directory and
file names as the `tiny` builder's) and the root's apt caches are emptied.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.errors import ImageBuildError
from corral.images.apt import APT_UPDATE_HINT, cache_lock, parse_control_fields
from corral.images.recipes import DiskRecipe

log = logging.getLogger(__name__)

ARCHIVES = Path("var/cache/apt/archives")
LISTS = Path("var/lib/apt/lists")
APT_BINARY_CACHES = (Path("var/cache/apt/pkgcache.bin"), Path("var/cache/apt/srcpkgcache.bin"))
# dpkg without fsync while building (the disk image is written once, at the end); removed
# from the root before it becomes the image.
BUILD_DPKG_CONFIG = Path("etc/dpkg/dpkg.cfg.d/corral-build")
MMDEBSTRAP_SKIPS = (
    "check/empty",  # the root already holds the cached .debs and lists
    "essential/unlink",  # keep downloaded essential .debs: they go into the cache
    "cleanup/apt",  # ...and so do the others and the lists; clean_root empties them after
)
NOT_LISTS = {"lock", "partial", "auxfiles"}
APT_PROXY_QUERY = ("HTTP", "Acquire::http::Proxy", "HTTPS", "Acquire::https::Proxy")
NETWORK_HINT = "check that this host reaches its Debian mirror (`apt-get update` works)"

ProgressFn = Callable[[float, str], None]


# ------------------------------------------------------------------------- progress


@dataclass
class MmdebstrapProgress:
    """Turns mmdebstrap --verbose output into (fraction, message) progress, line by line.

    Fractions run from `start` to `end` and never go back; a message is produced when the
    phase changes or the fraction gains a whole percent, not for every line.
    """

    start: float = 0.0
    end: float = 1.0
    phase: str = "setup"
    total: int = 0  # packages apt announced for the current phase
    essential_total: int = 0
    fetched: int = 0
    configured: int = 0
    _fraction: float = 0.0
    _reported_phase: str = ""
    _reported_percent: int = -1
    _detail: str = ""
    _milestone: bool = False  # a detail worth reporting even without a whole percent gained

    # Where each phase starts, as a share of the whole mmdebstrap run.
    PHASES = {
        "setup": 0.0,
        "update": 0.02,
        "download": 0.06,
        "extract": 0.15,
        "essential": 0.22,
        "install": 0.40,
        "customize": 0.94,
        "cleanup": 0.98,
        "done": 1.0,
    }
    PHASE_LINES = (
        ("I: running apt-get update", "update"),
        ("I: downloading packages", "download"),
        ("I: extracting archives", "extract"),
        ("I: installing essential packages", "essential"),
        ("I: installing remaining packages", "install"),
        ("I: running --customize-hook", "customize"),
        ("I: cleaning", "cleanup"),
        ("I: skipping cleanup", "cleanup"),
        ("I: success", "done"),
    )
    NEWLY_INSTALLED = re.compile(r"^\d+ upgraded, (\d+) newly installed")
    NOTHING_TO_GET = re.compile(r"^Need to get 0 B/")
    GET = re.compile(r"^Get:\d+ \S+ \S+ \S+ (\S+) ")
    SETTING_UP = re.compile(r"^Setting up (\S+) ")
    INITRAMFS = re.compile(r"^update-initramfs: Generating (\S+)")

    def feed(self, line: str) -> tuple[float, str] | None:
        """Digest one output line; return progress to report, if any."""
        line = line.rstrip("\n")
        for prefix, phase in self.PHASE_LINES:
            if line.startswith(prefix):
                self._enter(phase)
                break
        else:
            self._count(line)
        return self._maybe_report()

    def _enter(self, phase: str) -> None:
        if phase == self.phase:
            return
        self.phase = phase
        self.fetched = self.configured = 0
        self._detail = ""
        if phase == "essential":
            self.total = self.essential_total
        elif phase == "install":
            self.total = 0

    def _count(self, line: str) -> None:
        if match := self.NEWLY_INSTALLED.match(line):
            self.total = int(match[1])
            if self.phase == "download":
                self.essential_total = self.total
        elif self.NOTHING_TO_GET.match(line) and self.phase in ("download", "install"):
            self._detail, self._milestone = "all packages cached", True
        elif (match := self.GET.match(line)) and self.phase in ("download", "install"):
            self.fetched += 1
            self._detail = f"fetched {self.fetched}/{self.total or '?'}: {match[1]}"
        elif match := self.SETTING_UP.match(line):
            self.configured += 1
            self._detail = f"set up {self.configured}/{self.total or '?'}: {match[1]}"
        elif match := self.INITRAMFS.match(line):
            self._detail, self._milestone = f"initramfs {Path(match[1]).name}", True

    def _share(self) -> float:
        """How far through the whole run we are, from the phase and its counters."""
        names = list(self.PHASES)
        here = self.PHASES[self.phase]
        following = names.index(self.phase) + 1
        upto = self.PHASES[names[following]] if following < len(names) else 1.0
        done = 0.0
        if self.total:
            if self.phase == "download":
                done = self.fetched / self.total
            elif self.phase == "essential":
                done = self.configured / self.total
            elif self.phase == "install":  # downloads, then unpacking and configuring
                done = 0.2 * self.fetched / self.total + 0.8 * self.configured / self.total
        return here + (upto - here) * min(done, 1.0)

    def _maybe_report(self) -> tuple[float, str] | None:
        self._fraction = max(self._fraction, self.start + (self.end - self.start) * self._share())
        percent = int(self._fraction * 100)
        same = self.phase == self._reported_phase and percent == self._reported_percent
        if same and not self._milestone:
            return None
        self._reported_phase, self._reported_percent = self.phase, percent
        self._milestone = False
        label = "mmdebstrap done" if self.phase == "done" else self.phase
        return self._fraction, f"{label}: {self._detail}" if self._detail else label


# ------------------------------------------------------------------------- command line


def mmdebstrap_argv(
    recipe: DiskRecipe,
    root: Path,
    essential_hook: Path,
    customize_hook: Path,
    apt_options: list[str],
) -> list[str]:
    """The whole command: mmdebstrap in root mode inside a private mount namespace."""
    argv = ["unshare", "--mount", "--propagation", "private", "mmdebstrap"]
    argv += ["--mode=root", "--format=directory", f"--variant={recipe.variant}", "--verbose"]
    argv.append("--skip=" + ",".join(MMDEBSTRAP_SKIPS))
    argv.append("--include=" + ",".join(recipe.packages))
    argv += [f"--dpkgopt={option}" for option in recipe.dpkg_options]
    argv += [f"--aptopt={option}" for option in apt_options]
    argv.append(f'--essential-hook=sh {shlex.quote(str(essential_hook))} "$1"')
    argv.append(f'--customize-hook=sh {shlex.quote(str(customize_hook))} "$1"')
    argv += [recipe.suite, str(root)]
    return argv


def parse_apt_proxies(shell_output: str) -> list[str]:
    """apt options for the host's proxies, from `apt-config shell HTTP ... HTTPS ...`.

    mmdebstrap's apt reads only its own configuration, so a proxy the host's apt needs must
    be passed on explicitly.
    """
    options = []
    for line in shell_output.splitlines():
        name, sep, value = line.partition("=")
        words = shlex.split(value) if sep else []
        if name in ("HTTP", "HTTPS") and words and words[0]:
            options.append(f'Acquire::{name.lower()}::Proxy "{words[0]}";')
    return options


def host_apt_proxies() -> list[str]:
    """The host apt's http/https proxy settings as mmdebstrap --aptopt values."""
    try:
        result = subprocess.run(
            ["apt-config", "shell", *APT_PROXY_QUERY],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return []
    return parse_apt_proxies(result.stdout) if result.returncode == 0 else []


def check_host() -> None:
    """Refuse early, with what to do, when this host cannot run a root-mode mmdebstrap."""
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building a disk image needs root (mmdebstrap --mode=root, and mke2fs must keep "
            "the files' owners); run the Corral agent as root"
        )
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            raise ImageBuildError(f"{tool} is not installed; apt-get install {package}")


# ------------------------------------------------------------------------- the cache


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(source, dest)


def lists_cache_dir(cache_dir: Path, recipe: DiskRecipe) -> Path:
    """Where the apt lists of `recipe`'s last build are kept."""
    return cache_dir / "apt-lists" / recipe.suite


def prepare_root(root: Path, debs_dir: Path, lists_dir: Path) -> int:
    """Seed an empty `root` with the cached .debs and apt lists; return how many .debs."""
    archives, lists = root / ARCHIVES, root / LISTS
    archives.mkdir(parents=True)
    lists.mkdir(parents=True)
    linked = 0
    if debs_dir.is_dir():
        for deb in debs_dir.glob("*.deb"):
            _link_or_copy(deb, archives / deb.name)
            linked += 1
    if lists_dir.is_dir():
        for item in lists_dir.iterdir():
            if item.is_file() and item.name not in NOT_LISTS:
                shutil.copy2(item, lists / item.name)
    config = root / BUILD_DPKG_CONFIG
    config.parent.mkdir(parents=True)
    config.write_text("force-unsafe-io\n")
    return linked


def harvest_cache(root: Path, debs_dir: Path, lists_dir: Path) -> int:
    """Put the .debs apt downloaded into the cache and keep the lists; return how many .debs.

    Each .deb is written under a temporary name and renamed: the cache never holds half a
    file, and a concurrent build (holding the same lock) never sees one.
    """
    debs_dir.mkdir(parents=True, exist_ok=True)
    added = 0
    with cache_lock(debs_dir):
        for deb in (root / ARCHIVES).glob("*.deb"):
            dest = debs_dir / deb.name
            if dest.exists():
                continue
            partial = debs_dir / f".{deb.name}.{uuid.uuid4().hex[:8]}"
            _link_or_copy(deb, partial)
            os.replace(partial, dest)
            added += 1
    lists = root / LISTS
    if lists.is_dir():
        lists_dir.parent.mkdir(parents=True, exist_ok=True)
        with cache_lock(lists_dir.parent):
            fresh = lists_dir.with_name(f".{lists_dir.name}.new-{uuid.uuid4().hex[:8]}")
            fresh.mkdir()
            for item in lists.iterdir():
                if item.is_file() and item.name not in NOT_LISTS:
                    shutil.copy2(item, fresh / item.name)
            old = lists_dir.with_name(f".{lists_dir.name}.old-{uuid.uuid4().hex[:8]}")
            if lists_dir.exists():
                os.rename(lists_dir, old)
            os.rename(fresh, lists_dir)
            shutil.rmtree(old, ignore_errors=True)
    return added


def clean_root(root: Path) -> None:
    """Leave the guest what mmdebstrap's own cleanup would: no .debs, lists or apt caches."""
    for deb in (root / ARCHIVES).glob("*.deb"):
        deb.unlink()
    lists = root / LISTS
    for item in lists.iterdir():
        if item.name == "lock":
            continue
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
            continue
        item.unlink()
    (lists / "partial").mkdir(exist_ok=True)
    for path in (*APT_BINARY_CACHES, BUILD_DPKG_CONFIG):
        (root / path).unlink(missing_ok=True)
    root.chmod(0o755)  # the build directory is private; the guest's / must not be


def installed_packages(root: Path) -> dict[str, str]:
    """name -> version of every package dpkg has installed in `root`."""
    status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    packages = {}
    for stanza in status.split("\n\n"):
        fields = parse_control_fields(stanza)
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(packages.items()))


# ------------------------------------------------------------------------- running it


def run_mmdebstrap(argv: list[str], progress: MmdebstrapProgress, report: ProgressFn) -> None:
    """Run mmdebstrap, reporting its phases; ImageBuildError with its errors if it fails."""
    env = {**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    log.info("image build: %s", shlex.join(argv))
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,  # killed as a group if the build is abandoned
        )
    except FileNotFoundError as err:
        raise ImageBuildError(f"{argv[0]} is not installed: {err}") from err
    assert proc.stdout is not None
    tail: deque[str] = deque(maxlen=60)
    try:
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            update = progress.feed(line)
            if update is not None:
                report(*update)
        returncode = proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    if returncode != 0:
        log.error("mmdebstrap failed (exit %d); its last lines:\n%s", returncode, "\n".join(tail))
        raise ImageBuildError(explain_failure(returncode, list(tail)))


def explain_failure(returncode: int, tail: list[str]) -> str:
    """A one-line reason and what to do, from mmdebstrap's last output lines."""
    errors = [line for line in tail if line.startswith("E:")]
    reason = errors[-1] if errors else (tail[-1] if tail else "no output")
    text = "\n".join(tail)
    network = ("Failed to fetch", "Temporary failure", "Could not resolve", "Unable to connect")
    if any(marker in text for marker in network):
        hint = NETWORK_HINT
    elif "Unable to locate package" in text or "has no installation candidate" in text:
        hint = APT_UPDATE_HINT
    else:
        hint = "the agent's log has mmdebstrap's last lines"
    return f"mmdebstrap failed (exit {returncode}): {reason}; {hint}"
