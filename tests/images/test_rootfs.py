"""The debian-12 root filesystem build around mmdebstrap: cache in and out, command line,
package list, error messages. mmdebstrap itself runs only in the slow tests."""

from __future__ import annotations

import shlex
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from corral.errors import ImageBuildError
from corral.images import rootfs
from corral.images.recipes import DEBIAN_12, DiskRecipe, get_recipe

DPKG_STATUS = """\
Package: libc6
Status: install ok installed
Version: 2.36-9+deb12u14
Description: GNU C Library
 shared libraries

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: cloud-init
Status: install ok installed
Version: 22.4.2-1+deb12u4
"""


def make_cache(tmp_path: Path) -> tuple[Path, Path]:
    debs, lists = tmp_path / "cache" / "debs", tmp_path / "cache" / "apt-lists" / "bookworm"
    debs.mkdir(parents=True)
    lists.mkdir(parents=True)
    (debs / "libc6_2.36_amd64.deb").write_bytes(b"libc6")
    (debs / ".lock").write_text("")
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("release")
    (lists / "lock").write_text("")
    return debs, lists


def test_prepare_root_links_cached_debs_and_lists_in(tmp_path: Path) -> None:
    debs, lists = make_cache(tmp_path)
    root = tmp_path / "root"
    root.mkdir()

    assert rootfs.prepare_root(root, debs, lists) == 1

    linked = root / rootfs.ARCHIVES / "libc6_2.36_amd64.deb"
    assert linked.stat().st_ino == (debs / "libc6_2.36_amd64.deb").stat().st_ino  # no copy
    assert not (root / rootfs.ARCHIVES / ".lock").exists()
    assert sorted(p.name for p in (root / rootfs.LISTS).iterdir()) == [
        "deb.debian.org_debian_dists_bookworm_InRelease"
    ]
    assert (root / rootfs.BUILD_DPKG_CONFIG).read_text() == "force-unsafe-io\n"


def test_prepare_root_on_an_empty_cache(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    assert rootfs.prepare_root(root, tmp_path / "no-debs", tmp_path / "no-lists") == 0
    assert (root / rootfs.ARCHIVES).is_dir() and (root / rootfs.LISTS).is_dir()


def test_harvest_adds_only_new_debs_and_replaces_the_lists(tmp_path: Path) -> None:
    debs, lists = make_cache(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    rootfs.prepare_root(root, debs, lists)
    (root / rootfs.ARCHIVES / "udev_252_amd64.deb").write_bytes(b"udev")  # apt downloaded it
    (root / rootfs.ARCHIVES / "partial").mkdir()
    new_lists = root / rootfs.LISTS
    (new_lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("newer release")
    (new_lists / "partial").mkdir()

    assert rootfs.harvest_cache(root, debs, lists) == 1

    assert sorted(p.name for p in debs.glob("*.deb")) == [
        "libc6_2.36_amd64.deb",
        "udev_252_amd64.deb",
    ]
    assert (debs / "udev_252_amd64.deb").read_bytes() == b"udev"
    assert [p.read_text() for p in lists.iterdir()] == ["newer release"]
    assert sorted(p.name for p in lists.parent.iterdir()) == [".lock", "bookworm"]  # no temps
    assert not [p for p in debs.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_clean_root_leaves_no_apt_caches_or_build_config(tmp_path: Path) -> None:
    debs, lists = make_cache(tmp_path)
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    rootfs.prepare_root(root, debs, lists)
    for cache in rootfs.APT_BINARY_CACHES:
        (root / cache).write_bytes(b"cache")
    (root / rootfs.LISTS / "partial" / "half").parent.mkdir()

    rootfs.clean_root(root)

    assert list((root / rootfs.ARCHIVES).iterdir()) == []
    assert [p.name for p in (root / rootfs.LISTS).iterdir()] == ["partial"]
    assert not any((root / cache).exists() for cache in rootfs.APT_BINARY_CACHES)
    assert not (root / rootfs.BUILD_DPKG_CONFIG).exists()
    assert root.stat().st_mode & 0o777 == 0o755
    assert (debs / "libc6_2.36_amd64.deb").read_bytes() == b"libc6"  # the cache is untouched


def test_installed_packages_come_from_dpkg_status(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(DPKG_STATUS)
    assert rootfs.installed_packages(tmp_path) == {
        "cloud-init": "22.4.2-1+deb12u4",
        "libc6": "2.36-9+deb12u14",
    }


def test_mmdebstrap_runs_in_root_mode_in_a_private_mount_namespace() -> None:
    argv = rootfs.mmdebstrap_argv(
        DEBIAN_12,
        Path("/images/.d.build-1/root"),
        Path("/images/.d.build-1/hooks/essential"),
        Path("/images/with space/customize"),
        ['Acquire::http::Proxy "http://proxy:3128";'],
    )
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "mmdebstrap"]
    assert "--mode=root" in argv and "--variant=apt" in argv and "--verbose" in argv
    assert "--skip=check/empty,essential/unlink,cleanup/apt" in argv
    assert f"--include={','.join(DEBIAN_12.packages)}" in argv
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    assert '--aptopt=Acquire::http::Proxy "http://proxy:3128";' in argv
    assert argv[-2:] == ["bookworm", "/images/.d.build-1/root"]
    customize = next(a for a in argv if a.startswith("--customize-hook="))
    assert shlex.split(customize.split("=", 1)[1]) == ["sh", "/images/with space/customize", "$1"]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("HTTP='http://proxy:3128'\n", ['Acquire::http::Proxy "http://proxy:3128";']),
        (
            "HTTP='http://a:1'\nHTTPS='http://b:2'\n",
            ['Acquire::http::Proxy "http://a:1";', 'Acquire::https::Proxy "http://b:2";'],
        ),
        ("", []),
        ("HTTP=''\n", []),
    ],
)
def test_host_proxies_are_passed_on(output: str, expected: list[str]) -> None:
    assert rootfs.parse_apt_proxies(output) == expected


@pytest.mark.parametrize(
    ("tail", "reason", "hint"),
    [
        (
            ["Err:1 http://deb.debian.org/debian bookworm InRelease", "E: Failed to fetch x"],
            "E: Failed to fetch x",
            rootfs.NETWORK_HINT,
        ),
        (
            ["E: Unable to locate package nosuch"],
            "E: Unable to locate package nosuch",
            "apt-get update",
        ),
        (["dpkg: error processing package x", "E: Sub-process failed"], "E: Sub-process", "log"),
        ([], "no output", "log"),
    ],
)
def test_failures_say_why_and_what_to_do(tail: list[str], reason: str, hint: str) -> None:
    message = rootfs.explain_failure(25, tail)
    assert message.startswith("mmdebstrap failed (exit 25): ")
    assert reason in message and hint in message


def test_a_failing_mmdebstrap_becomes_an_image_build_error() -> None:
    argv = ["sh", "-c", "echo 'I: running apt-get update...'; echo 'E: Failed to fetch y'; exit 1"]
    reports: list[tuple[float, str]] = []
    with pytest.raises(ImageBuildError, match="Failed to fetch y") as caught:
        rootfs.run_mmdebstrap(
            argv, rootfs.MmdebstrapProgress(), lambda f, m: reports.append((f, m))
        )
    assert caught.value.code == "image_build_failed"
    assert [m for _, m in reports] == ["update"]


def test_non_root_hosts_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs.os, "geteuid", lambda: 1000)
    with pytest.raises(ImageBuildError, match="needs root"):
        rootfs.check_host()


def test_debian_12_recipe_boots_from_the_first_virtio_disk() -> None:
    recipe = get_recipe("debian-12")
    assert isinstance(recipe, DiskRecipe)
    assert recipe.cmdline.split()[:2] == ["root=/dev/vda", "ro"]
    assert "console=" not in recipe.cmdline
    assert recipe.cloud_init and recipe.disk_size_bytes == 2 << 30
    required = {"linux-image-cloud-amd64", "systemd-sysv", "cloud-init", "qemu-guest-agent"}
    required |= {"openssh-server", "iproute2", "e2fsprogs", "locales", "udev"}
    assert required <= set(recipe.packages)


@pytest.mark.parametrize("hook", [DEBIAN_12.essential_hook, DEBIAN_12.customize_hook])
def test_hook_scripts_ship_with_the_package_and_parse(hook: str, tmp_path: Path) -> None:
    script = resources.files("corral.images").joinpath("guest", hook)
    assert script.is_file()
    copy = tmp_path / hook
    copy.write_bytes(script.read_bytes())
    subprocess.run(["sh", "-n", str(copy)], check=True)
