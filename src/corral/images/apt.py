"""Resolve, fetch and unpack Debian packages with the host's apt, into a cache we own.

Resolution asks apt's own solver against an empty dpkg status (`Dir::State::status=/dev/null`),
so the answer is the full closure whatever the build host happens to have installed.
Downloads go through `apt-get download` (which checks the signed indexes' hashes) into a
temporary directory, then are renamed into the cache: a crash never leaves a half .deb
under its final name, and a file lock keeps two concurrent builds from fetching twice.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from corral.errors import ImageBuildError

APT_UPDATE_HINT = "run `apt-get update` (as root) and try again"
INST_LINE = re.compile(
    r"^Inst (?P<name>\S+) (?:\[\S+\] )?\((?P<version>\S+) .*\[(?P<arch>[^\]]+)\]\)"
)
GET_LINE = re.compile(r"^Get:\d+ ")
DEPENDENCY = re.compile(r"^(?P<name>[^\s:(]+)(?::\S+)?\s*(?:\(\s*=\s*(?P<version>[^)\s]+)\s*\))?")

DownloadProgress = Callable[[int, int, str], None]  # done, total, package name


@dataclass(frozen=True, order=True)
class DebPackage:
    """One binary package at an exact version."""

    name: str
    version: str
    arch: str

    @property
    def filename(self) -> str:
        """The file name apt gives this .deb (the epoch's ':' is written %3a)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    @property
    def spec(self) -> str:
        """`name=version`, how apt-get is told to fetch exactly this one."""
        return f"{self.name}={self.version}"


def _run(argv: Sequence[str], what: str) -> str:
    """Run an apt tool; a missing tool or a failure becomes an ImageBuildError with advice."""
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise ImageBuildError(
            f"{argv[0]} is not installed; image builds need a Debian host with apt and dpkg"
        ) from err
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        message = detail[-1] if detail else f"exit status {result.returncode}"
        hint = APT_UPDATE_HINT if "locate package" in message or "No packages" in message else ""
        raise ImageBuildError(f"{what} failed: {message}" + (f"; {hint}" if hint else ""))
    return result.stdout


def _apt_options() -> list[str]:
    # Simulation and download never touch dpkg's database: do not queue behind its lock.
    options = ["-o", "Debug::NoLocking=true", "-o", "APT::Get::Show-Versions=false"]
    if os.geteuid() == 0:
        # Root would otherwise hand the download to the _apt user, who cannot write our cache.
        options += ["-o", "APT::Sandbox::User=root"]
    return options


def parse_control_fields(stanza: str) -> dict[str, str]:
    """Fields of one deb822 stanza (continuation lines folded into their field)."""
    fields: dict[str, str] = {}
    key = ""
    for line in stanza.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def candidate(name: str) -> dict[str, str]:
    """apt's candidate version of `name`, as its control fields."""
    text = _run(["apt-cache", "show", "--no-all-versions", name], f"looking up {name}")
    stanza = text.strip().split("\n\n")[0]
    fields = parse_control_fields(stanza)
    if "Version" not in fields:
        raise ImageBuildError(f"apt knows no installable {name}; {APT_UPDATE_HINT}")
    return fields


def dependency_alternatives(depends: str) -> list[tuple[str, str | None]]:
    """(name, pinned version) for every alternative in a Depends field.

    The version is set only for an exact "(= V)" constraint, as kernel metapackages write it.
    """
    found: list[tuple[str, str | None]] = []
    for clause in depends.split(","):
        for alternative in clause.split("|"):
            match = DEPENDENCY.match(alternative.strip())
            if match:
                found.append((match["name"], match["version"]))
    return found


def resolve_metapackage(metapackage: str, pattern: str) -> DebPackage:
    """The real package a metapackage stands for (linux-image-cloud-amd64 -> -6.1.0-N-...)."""
    fields = candidate(metapackage)
    for name, version in dependency_alternatives(fields.get("Depends", "")):
        if re.match(pattern, name):
            if version is None:
                return resolve_single(name)
            return DebPackage(name, version, fields.get("Architecture", "all"))
    raise ImageBuildError(
        f"{metapackage} {fields['Version']} depends on no package matching {pattern}"
    )


def parse_simulation(text: str) -> list[DebPackage]:
    """Packages from `apt-get install -s` output ("Inst name (version archive [arch])")."""
    packages = []
    for line in text.splitlines():
        match = INST_LINE.match(line)
        if match:
            packages.append(DebPackage(match["name"], match["version"], match["arch"]))
    return packages


def resolve_single(name: str) -> DebPackage:
    """apt's candidate of `name` alone, without its dependencies."""
    fields = candidate(name)
    return DebPackage(name, fields["Version"], fields.get("Architecture", "all"))


def resolve_closure(names: Sequence[str]) -> list[DebPackage]:
    """Exact packages to fetch for `names`: their candidates and every dependency.

    Recommends are left out: a guest image wants what the binaries need, nothing more.
    """
    argv = ["apt-get", "install", "-s", "-qq", "--no-install-recommends", *_apt_options()]
    argv += ["-o", "Dir::State::status=/dev/null", "-o", "APT::Install-Suggests=false"]
    packages = parse_simulation(_run([*argv, *names], "resolving " + ", ".join(names)))
    missing = set(names) - {p.name for p in packages}
    if missing:
        raise ImageBuildError(
            f"apt did not resolve {', '.join(sorted(missing))}; {APT_UPDATE_HINT}"
        )
    return sorted(packages)


@contextmanager
def cache_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (advisory; shared by every Corral build)."""
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(
    packages: Sequence[DebPackage], debs_dir: Path, progress: DownloadProgress | None = None
) -> dict[DebPackage, Path]:
    """Make sure every package's .deb is in `debs_dir`, downloading only the missing ones."""
    debs_dir.mkdir(parents=True, exist_ok=True)
    with cache_lock(debs_dir):
        missing = [p for p in packages if not (debs_dir / p.filename).is_file()]
        total = len(missing)
        if progress:
            progress(0, total, "")
        if missing:
            _download(missing, debs_dir, progress)
    return {p: debs_dir / p.filename for p in packages}


def _download(
    missing: Sequence[DebPackage], debs_dir: Path, progress: DownloadProgress | None
) -> None:
    with tempfile.TemporaryDirectory(prefix=".download-", dir=debs_dir) as tmp:
        argv = ["apt-get", "download", "-q", *_apt_options(), *(p.spec for p in missing)]
        try:
            proc = subprocess.Popen(
                argv, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        except FileNotFoundError as err:
            raise ImageBuildError(
                "apt-get is not installed; image builds need a Debian host"
            ) from err
        assert proc.stdout is not None and proc.stderr is not None
        done = 0
        for line in proc.stdout:
            if GET_LINE.match(line):
                done += 1
                if progress:
                    # "Get:N URL SUITE/COMPONENT ARCH NAME ARCH VERSION [SIZE]"
                    words = line.split()
                    name = words[4] if len(words) > 4 else ""
                    progress(min(done, len(missing)), len(missing), name)
        stderr = proc.stderr.read()
        if proc.wait() != 0:
            tail = stderr.strip().splitlines()
            reason = tail[-1] if tail else "apt-get error"
            raise ImageBuildError(
                f"downloading {len(missing)} packages failed: {reason}; {APT_UPDATE_HINT}"
            )
        for package in missing:
            got = Path(tmp) / package.filename
            if not got.is_file():
                raise ImageBuildError(f"apt-get download did not produce {package.filename}")
            os.replace(got, debs_dir / package.filename)
        if progress:
            progress(len(missing), len(missing), "")


def unpack(deb: Path, root: Path) -> None:
    """Extract a .deb's files into `root` (no maintainer scripts run)."""
    if shutil.which("dpkg-deb") is None:
        raise ImageBuildError("dpkg-deb is not installed; apt-get install dpkg")
    result = subprocess.run(
        ["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ImageBuildError(
            f"cannot unpack {deb.name}: {result.stderr.strip()}; delete it from the cache "
            "and build again"
        )
