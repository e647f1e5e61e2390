"""What apt prints is read right: simulated installs, control fields, cache file names."""

from __future__ import annotations

import pytest

from corral.images.apt import (
    DebPackage,
    dependency_alternatives,
    parse_control_fields,
    parse_simulation,
)

SIMULATION = """\
NOTE: This is only a simulation!
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []
Inst libpcre2-8-0 (10.42-1+deb12u2 Debian-Security:12/oldstable-security [amd64])
Inst perl-modules-5.36 (5.36.0-7+deb12u4 Debian-Security:12/oldstable-security [all])
Inst libfile-find-rule-perl (0.34-4~deb12u1 Debian:12.15/oldstable, Debian-Security:12/\
oldstable-security [all])
Inst qemu-guest-agent (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])
Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.15/oldstable [all])
Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])
"""


def test_simulation_lists_every_package_to_install() -> None:
    assert parse_simulation(SIMULATION) == [
        DebPackage("gcc-12-base", "12.2.0-14+deb12u1", "amd64"),
        DebPackage("libc6", "2.36-9+deb12u14", "amd64"),
        DebPackage("libpcre2-8-0", "10.42-1+deb12u2", "amd64"),
        DebPackage("perl-modules-5.36", "5.36.0-7+deb12u4", "all"),
        DebPackage("libfile-find-rule-perl", "0.34-4~deb12u1", "all"),
        DebPackage("qemu-guest-agent", "1:7.2+dfsg-7+deb12u18+b3", "amd64"),
        DebPackage("tzdata", "2025b-0+deb12u1", "all"),  # an upgrade: the new version counts
    ]


@pytest.mark.parametrize(
    ("package", "filename"),
    [
        (DebPackage("libc6", "2.36-9+deb12u14", "amd64"), "libc6_2.36-9+deb12u14_amd64.deb"),
        (
            DebPackage("qemu-guest-agent", "1:7.2+dfsg-7+deb12u18+b3", "amd64"),
            "qemu-guest-agent_1%3a7.2+dfsg-7+deb12u18+b3_amd64.deb",  # apt's epoch escape
        ),
        (DebPackage("usrmerge", "37~deb12u1", "all"), "usrmerge_37~deb12u1_all.deb"),
    ],
)
def test_cache_file_names_match_apt_get_download(package: DebPackage, filename: str) -> None:
    assert package.filename == filename


@pytest.mark.parametrize(
    ("depends", "expected"),
    [
        (
            "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)",
            [("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2")],
        ),
        ("libc6 (>= 2.34), libglib2.0-0", [("libc6", None), ("libglib2.0-0", None)]),
        ("perl:any, a | b (= 1.0)", [("perl", None), ("a", None), ("b", "1.0")]),
        ("", []),
    ],
)
def test_dependency_alternatives(depends: str, expected: list[tuple[str, str | None]]) -> None:
    assert dependency_alternatives(depends) == expected


def test_control_fields_fold_continuation_lines() -> None:
    stanza = (
        "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\n"
        "Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n"
        "Description: Linux for x86-64 cloud (meta-package)\n This package depends on the latest.\n"
    )
    fields = parse_control_fields(stanza)
    assert fields["Version"] == "6.1.192-2"
    assert fields["Description"].endswith("\nThis package depends on the latest.")
