"""The debian-12 image: what the build makes, and one real boot under bare QEMU (TCG).

The boot checks what Corral relies on: the guest agent answers, cloud-init configures the
guest from a NoCloud seed (hostname, SSH key, DHCP) and grows the root filesystem to the
volume, and an ACPI power-down makes QEMU exit by itself. Bare qemu-system-x86_64 on
purpose: this vets the image, not the QEMU driver. It is one boot (~1-2 min under TCG).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from corral.images import load_image, write_nocloud_seed
from corral.model.rpc import CloudInitSeed
from tests.images.conftest import DebianBuild
from tests.images.guest_channels import GuestAgent, Qmp

QEMU = "qemu-system-x86_64"
HOSTNAME = "debtest-1"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJx0nW1r3wHnFfZl5oWz3w1C9a2d6sRkq8x8kXJ0abcd t@corral"
VOLUME_BYTES = 4 << 30

pytestmark = [
    pytest.mark.slow,
]


def qemu_img_info(path: Path) -> dict[str, object]:
    result = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True
    )
    info: dict[str, object] = json.loads(result.stdout)
    return info


def test_debian_image_is_a_qcow2_disk_with_kernel_initrd_and_manifest(
    debian_image: DebianBuild, capsys: pytest.CaptureFixture[str]
) -> None:
    image = debian_image.image
    assert (image.kind, image.cloud_init) == ("disk", True)
    assert image.disk is not None
    assert sorted(p.name for p in image.disk.parent.iterdir()) == [
        "disk.qcow2",
        "image.json",
        "initrd.img",
        "vmlinux",
    ]
    assert [p.name for p in image.disk.parent.parent.iterdir()] == ["debian-12"]  # no leftovers
    assert image.kernel.read_bytes()[:4] == b"\x7fELF"
    assert image.initrd.stat().st_size > 1 << 20
    info = qemu_img_info(image.disk)
    assert info["format"] == "qcow2" and info["virtual-size"] == 2 << 30
    assert image.disk_virtual_size_bytes == 2 << 30
    files = (image.kernel, image.initrd, image.disk)
    assert image.size_bytes == sum(path.stat().st_size for path in files)
    assert image.cmdline.startswith("root=/dev/vda ro") and "console=" not in image.cmdline
    recipe = image.recipe
    assert recipe["name"] == "debian-12" and recipe["kernel_release"].endswith("-cloud-amd64")
    assert {"cloud-init", "qemu-guest-agent", "openssh-server", "netplan.io"} <= set(
        recipe["packages"]
    )
    assert load_image(image.disk.parent) == image

    fractions = [fraction for fraction, _ in debian_image.progress]
    messages = [message for _, message in debian_image.progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    for phase in ("prepare", "update", "essential", "install", "kernel", "filesystem", "qcow2"):
        assert any(message.startswith(phase) for message in messages), phase
    assert messages[-1].startswith("done")
    assert image.build_seconds < 240
    warm = "download: all packages cached" in messages
    with capsys.disabled():
        print(
            f"\n[debian-12] {'warm' if warm else 'cold'} build {image.build_seconds:.1f} s, "
            f"disk {image.disk.stat().st_size / 2**20:.0f} MiB "
            f"({recipe['disk_compression']}), total {image.size_bytes / 2**20:.0f} MiB"
        )


def qemu_argv(debian: DebianBuild, runtime: Path) -> list[str]:
    """The root disk first (vda, as root=/dev/vda says), the seed second, one virtio NIC."""
    image = debian.image
    return [
        QEMU,
        "-accel", "tcg",
        "-machine", "pc",
        "-m", "1024",
        "-smp", "2",
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-kernel", str(image.kernel),
        "-initrd", str(image.initrd),
        "-append", f"console=ttyS0 {image.cmdline}",
        "-serial", f"file:{runtime / 'console.log'}",
        "-drive", f"file={runtime / 'root.qcow2'},format=qcow2,if=none,id=root",
        "-device", "virtio-blk-pci,drive=root",
        "-drive", f"file={runtime / 'seed.img'},format=raw,if=none,id=seed,readonly=on",
        "-device", "virtio-blk-pci,drive=seed",
        "-netdev", "user,id=net0",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=qga0,path={runtime / 'qga.sock'},server=on,wait=off",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-qmp", f"unix:{runtime / 'qmp.sock'},server=on,wait=off",
    ]  # fmt: skip


def wait_for_cloud_init(agent: GuestAgent, deadline: float) -> None:
    """Until cloud-init's final stage wrote its result (a cheap `test` each second).

    Not `cloud-init status --wait`: that keeps a Python process polling inside a guest whose
    two emulated CPUs are already the bottleneck, and slows the very boot it waits for.
    """
    while time.monotonic() < deadline:
        if agent.run("test", ["-e", "/run/cloud-init/result.json"]).exitcode == 0:
            return
        time.sleep(1)
    raise AssertionError("cloud-init did not finish in time")


def test_debian_guest_boots_configures_itself_and_powers_off(
    debian_image: DebianBuild, capsys: pytest.CaptureFixture[str]
) -> None:
    image = debian_image.image
    assert image.disk is not None
    # Under /tmp, not tmp_path: unix socket paths must stay under 108 bytes.
    runtime = Path(tempfile.mkdtemp(prefix="corral-debian-", dir="/tmp"))
    process: subprocess.Popen[bytes] | None = None
    try:
        overlay = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.disk)]
        subprocess.run([*overlay, str(runtime / "root.qcow2"), str(VOLUME_BYTES)], check=True)
        seed = CloudInitSeed(instance_id="i-debtest-1", hostname=HOSTNAME, ssh_keys=[KEY])
        write_nocloud_seed(seed, runtime / "seed.img")
        with open(runtime / "qemu.log", "wb") as qemu_log:
            started = time.monotonic()
            process = subprocess.Popen(
                qemu_argv(debian_image, runtime),
                stdin=subprocess.DEVNULL,
                stdout=qemu_log,
                stderr=qemu_log,
            )
        agent = GuestAgent(runtime / "qga.sock")
        try:
            agent.sync(timeout=240)
            assert agent.execute("guest-ping") == {}
            to_agent = time.monotonic() - started
            wait_for_cloud_init(agent, deadline=started + 400)
            to_cloud_init = time.monotonic() - started

            status = agent.run("cloud-init", ["status", "--long"], timeout=60)
            hostname = agent.run("hostname", [])
            size = agent.run("df", ["-B1", "--output=size", "/"])
            keys = agent.run("cat", ["/home/debian/.ssh/authorized_keys"])
            address = agent.run("ip", ["-4", "-o", "addr", "show", "scope", "global"])
            failed = agent.run("systemctl", ["--failed", "--no-legend", "--plain"])
        finally:
            agent.close()

        assert "status: done" in status.stdout and "DataSourceNoCloud" in status.stdout, status
        assert hostname.stdout.strip() == HOSTNAME
        root_bytes = int(size.stdout.split()[-1])
        assert root_bytes > 0.9 * VOLUME_BYTES, size.stdout  # grew from the image's 2 GiB
        assert keys.stdout.strip() == KEY
        assert " 10.0.2.15/24 " in address.stdout, address.stdout  # DHCP from QEMU's slirp
        assert failed.stdout.strip() == "", failed.stdout

        qmp = Qmp(runtime / "qmp.sock")
        try:
            asked = time.monotonic()
            qmp.execute("system_powerdown")
        finally:
            qmp.close()
        assert process.wait(timeout=120) == 0
        to_exit = time.monotonic() - asked
        console = (runtime / "console.log").read_text(errors="replace")
        assert "reboot: Power down" in console
    except BaseException:
        console_file = runtime / "console.log"
        if console_file.exists():
            print(console_file.read_text(errors="replace")[-4000:])
        raise
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(runtime, ignore_errors=True)
    with capsys.disabled():
        print(
            f"\n[debian-12] QEMU start to guest agent {to_agent:.1f} s, to cloud-init done "
            f"{to_cloud_init:.1f} s; root fs {root_bytes / 2**30:.2f} GiB; "
            f"powerdown to exit {to_exit:.1f} s"
        )
