"""The pure parsers behind storage options: sizes, resize amounts, keys, disks, device names."""

from __future__ import annotations

import pytest
import typer

from corral.cli import inputs
from corral.cli.render import device_name
from corral.cli.volumes import volume_source

GIB = 1024**3
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk5 me@laptop"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4G", inputs.SizeChange(4 * GIB, relative=False)),
        ("+1G", inputs.SizeChange(GIB, relative=True)),
        (" +512M ", inputs.SizeChange(512 * 1024**2, relative=True)),
        ("1.5T", inputs.SizeChange(int(1.5 * 1024**4), relative=False)),
    ],
)
def test_size_change(text: str, expected: inputs.SizeChange) -> None:
    assert inputs.size_change(text) == expected


@pytest.mark.parametrize("text", ["-1G", "+0", "0", "+", "++1G", "1Q"])
def test_size_change_refuses(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        inputs.size_change(text)


@pytest.mark.parametrize(
    "key",
    [
        KEY,
        "ecdsa-sha2-nistp256 AAAAE2VjZHNh= host",
        "sk-ssh-ed25519@openssh.com AAAAGnNr",
        'from="10.0.0.0/8" ssh-rsa AAAAB3NzaC1yc2E= ops',
    ],
)
def test_public_keys_pass_unchanged(key: str) -> None:
    assert inputs.ssh_keys([key]) == [key]


@pytest.mark.parametrize("key", ["", "AAAAC3Nza", "ssh-ed25519", "ssh-ed25519 not*base64"])
def test_non_keys_are_refused(key: str) -> None:
    with pytest.raises(typer.BadParameter):
        inputs.ssh_keys([key])


def test_disks_keep_order_and_read_only() -> None:
    disks = inputs.disks(["data", "logs:ro", "scratch:rw"])
    assert [(d.volume, d.read_only) for d in disks] == [
        ("data", False),
        ("logs", True),
        ("scratch", False),
    ]


@pytest.mark.parametrize(("index", "name"), [(0, "vda"), (1, "vdb"), (25, "vdz"), (26, "vdaa")])
def test_device_names(index: int, name: str) -> None:
    assert device_name(index) == name


def test_volume_source_from_options() -> None:
    assert volume_source(None, None, None) is None
    image = volume_source("debian-12", None, None)
    assert image is not None and image.model_dump(mode="json", exclude_none=True) == {
        "kind": "image",
        "image": "debian-12",
    }
    with pytest.raises(typer.BadParameter):
        volume_source("debian-12", "gold", None)
