"""A real Debian 12 guest through Corral: root disk thin-cloned from the image, cloud-init
configured from Corral's NoCloud seed, exec through the real qemu-guest-agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.server import CorralServer, pid_alive, wait_for

pytestmark = pytest.mark.slow

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx0CorralTestKeyOnlyForTheSuite0000000 e2e@corral"
USER_DATA = """#cloud-config
write_files:
  - path: /etc/corral-e2e
    content: "user-data reached the guest\\n"
"""


def test_debian_guest_is_configured_by_cloud_init(server: CorralServer, tmp_path: Path) -> None:
    server.cli("image", "build", "debian-12", timeout=900)
    image = server.cli("image", "show", "debian-12", "-o", "json").json()
    assert image["kind"] == "disk"
    assert image["cloud_init"] is True

    user_data = tmp_path / "user-data"
    user_data.write_text(USER_DATA)
    server.cli(
        "create",
        "deb-1",
        "--image",
        "debian-12",
        "--memory",
        "1024M",
        "--cpus",
        "2",
        "--disk",
        "3G",
        "--ssh-key",
        SSH_KEY,
        "--user-data",
        str(user_data),
        timeout=600,
    )
    shown = server.cli("show", "deb-1", "-o", "json").json()
    assert shown["status"]["ready"] is True
    assert shown["spec"]["disks"][0] == {"volume": "deb-1-root", "boot": True, "read_only": False}
    root = server.cli("volume", "show", "deb-1-root", "-o", "json").json()
    assert root["status"]["virtual_size_bytes"] == 3 * 1024**3
    assert root["status"]["backing"]  # a thin clone of the image's disk

    # The guest agent answers before cloud-init is done; wait for cloud-init's result file.
    wait_for(
        lambda: (
            server.cli(
                "exec", "deb-1", "--", "test", "-e", "/run/cloud-init/result.json", check=False
            ).code
            == 0
        ),
        300,
        2,
    )
    result = json.loads(
        server.cli("exec", "deb-1", "--", "cat", "/run/cloud-init/result.json").stdout
    )
    assert result["v1"]["errors"] == []
    assert "NoCloud" in result["v1"]["datasource"]

    assert server.cli("exec", "deb-1", "--", "hostname").stdout.strip() == "deb-1"
    assert (
        "user-data reached the guest"
        in server.cli("exec", "deb-1", "--", "cat", "/etc/corral-e2e").stdout
    )
    keys = server.cli("exec", "deb-1", "--", "cat", "/home/debian/.ssh/authorized_keys").stdout
    assert SSH_KEY.split()[1] in keys
    # cloud-init grew the root filesystem into the 3 GiB volume
    df = server.cli("exec", "deb-1", "--", "df", "-B1", "--output=size", "/").stdout
    assert int(df.split()[-1]) > 2.5 * 1024**3
    uname = server.cli("exec", "deb-1", "--", "uname", "-r").stdout
    assert "cloud-amd64" in uname

    pid = shown["status"]["pid"]
    server.cli("delete", "deb-1", timeout=120)
    wait_for(lambda: not pid_alive(pid), 30)
    volumes = [v["name"] for v in server.cli("volume", "list", "-o", "json").json()]
    assert "deb-1-root" not in volumes  # the root disk belonged to the instance
    server.cli("image", "delete", "debian-12")
