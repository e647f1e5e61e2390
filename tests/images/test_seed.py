"""NoCloud seeds: what cloud-init will read, and a vfat image that really holds it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from corral.errors import ImageBuildError
from corral.images.seed import (
    DEFAULT_USER_DATA,
    render_seed_files,
    seed_size_bytes,
    write_nocloud_seed,
)
from corral.model.rpc import CloudInitSeed

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx0nW1r3wHnFfZl5oWz3w1C9a2d6sRkq8x8kXJ0abcd a@b"
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def mtools(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=MTOOLS_ENV, check=True)
    return result.stdout


def read_back(image: Path, name: str) -> bytes:
    result = subprocess.run(
        ["mtype", "-i", str(image), f"::{name}"], capture_output=True, env=MTOOLS_ENV, check=True
    )
    return result.stdout


def test_meta_data_names_the_instance_and_carries_the_keys() -> None:
    files = render_seed_files(
        CloudInitSeed(instance_id="i-42", hostname="web-1", ssh_keys=[KEY, "  ", KEY + "\n"])
    )
    assert json.loads(files["meta-data"]) == {
        "instance-id": "i-42",
        "local-hostname": "web-1",
        "public-keys": [KEY, KEY],
    }


def test_meta_data_without_keys_has_no_public_keys() -> None:
    files = render_seed_files(CloudInitSeed(instance_id="i-1", hostname="h"))
    assert "public-keys" not in json.loads(files["meta-data"])


@pytest.mark.parametrize(
    "user_data",
    [
        "#cloud-config\nssh_authorized_keys: [ssh-rsa AAAA other]\nruncmd: [[touch, /x]]\n",
        "#!/bin/sh\necho hello > /tmp/hello\n",
        'Content-Type: multipart/mixed; boundary="==B=="\nMIME-Version: 1.0\n\n--==B==--\n',
    ],
)
def test_user_data_is_passed_on_untouched_and_keys_stay_in_meta_data(user_data: str) -> None:
    files = render_seed_files(
        CloudInitSeed(instance_id="i-1", hostname="h", ssh_keys=[KEY], user_data=user_data)
    )
    assert files["user-data"] == user_data.encode()
    assert json.loads(files["meta-data"])["public-keys"] == [KEY]


def test_without_user_data_an_empty_cloud_config_is_written() -> None:
    files = render_seed_files(CloudInitSeed(instance_id="i-1", hostname="h", ssh_keys=[KEY]))
    assert files["user-data"] == DEFAULT_USER_DATA.encode()
    assert files["user-data"].startswith(b"#cloud-config\n")


def test_network_config_is_version_2_dhcp_on_every_ethernet_name() -> None:
    config = json.loads(
        render_seed_files(CloudInitSeed(instance_id="i", hostname="h"))["network-config"]
    )
    assert config["version"] == 2
    matches = {eth["match"]["name"]: eth["dhcp4"] for eth in config["ethernets"].values()}
    assert matches == {"en*": True, "eth*": True}


def test_odd_characters_cannot_break_the_yaml() -> None:
    nasty = 'x"\n: - {evil: true}\\'
    files = render_seed_files(CloudInitSeed(instance_id=nasty, hostname="h"))
    assert json.loads(files["meta-data"])["instance-id"] == nasty


@pytest.mark.parametrize(
    ("payload", "at_least"), [(0, 1 << 20), (100_000, 1 << 20), (3 << 20, 6 << 20)]
)
def test_seed_size_leaves_room_for_the_files(payload: int, at_least: int) -> None:
    size = seed_size_bytes({"user-data": b"x" * payload})
    assert size >= at_least and size % 1024 == 0


def test_written_seed_is_a_cidata_vfat_with_the_three_files(tmp_path: Path) -> None:
    seed = CloudInitSeed(
        instance_id="i-7", hostname="db-2", ssh_keys=[KEY], user_data="#!/bin/sh\ntrue\n"
    )
    image = write_nocloud_seed(seed, tmp_path / "seed.img")

    assert image == tmp_path / "seed.img"
    assert "CIDATA" in mtools("mlabel", "-s", "-i", str(image), "::")
    listing = mtools("mdir", "-b", "-i", str(image), "::/")
    assert sorted(line.rsplit("/", 1)[-1] for line in listing.split()) == [
        "meta-data",
        "network-config",
        "user-data",
    ]
    expected = render_seed_files(seed)
    for name, content in expected.items():
        assert read_back(image, name) == content
    assert [p.name for p in tmp_path.iterdir()] == ["seed.img"]  # no temporary files left


def test_rewriting_a_seed_replaces_it_whole(tmp_path: Path) -> None:
    dest = tmp_path / "seeds" / "seed.img"
    write_nocloud_seed(CloudInitSeed(instance_id="i-1", hostname="old"), dest)
    big = "#cloud-config\n# " + "x" * (2 << 20) + "\n"
    write_nocloud_seed(CloudInitSeed(instance_id="i-2", hostname="new", user_data=big), dest)
    assert json.loads(read_back(dest, "meta-data"))["local-hostname"] == "new"
    assert read_back(dest, "user-data") == big.encode()
    assert [p.name for p in dest.parent.iterdir()] == ["seed.img"]


def test_missing_tools_are_named_with_their_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ImageBuildError, match="apt-get install dosfstools"):
        write_nocloud_seed(CloudInitSeed(instance_id="i", hostname="h"), tmp_path / "seed.img")
    assert not (tmp_path / "seed.img").exists()
