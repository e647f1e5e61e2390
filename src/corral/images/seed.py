"""NoCloud seeds: the small `cidata` disk from which cloud-init in a guest learns who it is.

The agent writes one per instance of an image with `cloud_init` set and attaches it as a
read-only virtio disk. The seed is a raw vfat image made without mounting anything
(mkfs.vfat + mtools' mcopy), holding three files:

- `meta-data`: instance-id, local-hostname, and the SSH keys as `public-keys`;
- `user-data`: the user's text exactly as given, or an empty `#cloud-config`;
- `network-config`: version 2, DHCP on every en*/eth* NIC.

SSH keys travel in meta-data, never merged into user-data: cloud-init installs meta-data's
`public-keys` for the default user *and* any `ssh_authorized_keys` the user-data lists, so
the user's text (cloud-config, shell script, MIME multipart, gzip...) is passed on untouched
and Corral's keys work whatever format it has.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from corral.errors import ImageBuildError
from corral.model.rpc import CloudInitSeed

SEED_LABEL = "CIDATA"  # cloud-init looks for the label cidata in either case
SEED_FILES = ("meta-data", "user-data", "network-config")
MIN_SEED_BYTES = 1 << 20
DEFAULT_USER_DATA = (
    "#cloud-config\n"
    "# Written by Corral: no user-data was given. SSH keys are in meta-data (public-keys).\n"
    "{}\n"
)
# DHCP on every Ethernet NIC whatever the guest names it (ens3, enp0s4, eth0...).
NETWORK_CONFIG: dict[str, object] = {
    "version": 2,
    "ethernets": {
        "corral-en": {"match": {"name": "en*"}, "dhcp4": True, "dhcp6": False},
        "corral-eth": {"match": {"name": "eth*"}, "dhcp4": True, "dhcp6": False},
    },
}
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}  # no complaints about the odd geometry of a tiny image


def render_seed_files(seed: CloudInitSeed) -> dict[str, bytes]:
    """The seed's files, name -> content. JSON is valid YAML, and escapes whatever it holds."""
    meta_data: dict[str, object] = {
        "instance-id": seed.instance_id,
        "local-hostname": seed.hostname,
    }
    keys = [key.strip() for key in seed.ssh_keys if key.strip()]
    if keys:
        meta_data["public-keys"] = keys
    user_data = seed.user_data if seed.user_data is not None else DEFAULT_USER_DATA
    return {
        "meta-data": (json.dumps(meta_data, indent=2) + "\n").encode(),
        "user-data": user_data.encode(),
        "network-config": (json.dumps(NETWORK_CONFIG, indent=2) + "\n").encode(),
    }


def seed_size_bytes(files: Mapping[str, bytes]) -> int:
    """A vfat size (whole KiB) with room for the files and FAT overhead."""
    payload = sum(len(content) for content in files.values())
    size = max(MIN_SEED_BYTES, 2 * payload + (256 << 10))
    return (size + 1023) // 1024 * 1024


def write_nocloud_seed(seed: CloudInitSeed, dest: Path) -> Path:
    """Write `seed` as a raw vfat image labelled cidata at `dest` (atomically) and return it.

    An existing file at `dest` is replaced only once the new image is complete.
    Raises ImageBuildError when mkfs.vfat or mcopy is missing or fails.
    """
    for tool, package in (("mkfs.vfat", "dosfstools"), ("mcopy", "mtools")):
        if shutil.which(tool) is None:
            raise ImageBuildError(
                f"{tool} is not installed; cloud-init seeds need it: apt-get install {package}"
            )
    files = render_seed_files(seed)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as tmp:
        image = Path(tmp) / "seed.img"
        kib = seed_size_bytes(files) // 1024
        _run(["mkfs.vfat", "-n", SEED_LABEL, "-C", str(image), str(kib)], "mkfs.vfat")
        for name, content in files.items():
            source = Path(tmp) / name
            source.write_bytes(content)
            _run(["mcopy", "-o", "-i", str(image), str(source), f"::{name}"], "mcopy")
        with open(image, "rb+") as handle:
            os.fsync(handle.fileno())
        image.chmod(0o644)
        os.replace(image, dest)
    return dest


def _run(argv: list[str], what: str) -> None:
    env = {**os.environ, **MTOOLS_ENV}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise ImageBuildError(f"writing the cloud-init seed failed: {what}: {detail}")
