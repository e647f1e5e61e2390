"""The tiny image boots under bare QEMU (TCG), runs its agent and powers off when asked.

Bare qemu-system-x86_64 on purpose: these tests vet the image, not the QEMU driver.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.images import BuiltImage
from tests.images.guest_channels import GuestAgent, Qmp

QEMU = "qemu-system-x86_64"
READY_MARKER = "corral-guest: ready"
HOSTNAME = "tinytest"

pytestmark = [
    pytest.mark.slow,
]


@dataclass
class Guest:
    """One QEMU process booted from the tiny image, with its console and sockets."""

    process: subprocess.Popen[bytes]
    runtime: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def console(self) -> Path:
        return self.runtime / "console.log"

    @property
    def agent_socket(self) -> Path:
        return self.runtime / "qga.sock"

    @property
    def qmp_socket(self) -> Path:
        return self.runtime / "qmp.sock"

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def wait_for_console(self, text: str, timeout: float) -> float:
        """Seconds from QEMU's start until `text` appeared on the serial console."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.console_text():
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not on the console; it shows:\n{self.console_text()}")


def qemu_argv(image: BuiltImage, runtime: Path) -> list[str]:
    """The smallest QEMU command line the image is meant for (what the driver builds upon)."""
    return [
        QEMU,
        "-accel", "tcg",
        "-machine", "pc",
        "-m", "256",
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-kernel", str(image.kernel),
        "-initrd", str(image.initrd),
        "-append", f"console=ttyS0 {image.cmdline} corral.hostname={HOSTNAME}",
        "-serial", f"file:{runtime / 'console.log'}",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=qga0,path={runtime / 'qga.sock'},server=on,wait=off",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        "-qmp", f"unix:{runtime / 'qmp.sock'},server=on,wait=off",
    ]  # fmt: skip


@pytest.fixture
def tiny_guest(tiny_image: BuiltImage) -> Iterator[Guest]:
    """A freshly started tiny guest; QEMU is killed and its files removed afterwards."""
    # Under /tmp, not tmp_path: unix socket paths must stay under 108 bytes.
    runtime = Path(tempfile.mkdtemp(prefix="corral-tiny-", dir="/tmp"))
    stderr = open(runtime / "qemu.stderr", "wb")  # noqa: SIM115 - closed in teardown
    process = subprocess.Popen(
        qemu_argv(tiny_image, runtime), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
    )
    guest = Guest(process=process, runtime=runtime)
    try:
        yield guest
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        stderr.close()
        shutil.rmtree(runtime, ignore_errors=True)


def test_console_shows_ready_marker(tiny_guest: Guest, capsys: pytest.CaptureFixture[str]) -> None:
    ready = tiny_guest.wait_for_console(READY_MARKER, timeout=60)
    with capsys.disabled():
        print(f"\n[tiny] boot-to-ready {ready:.2f} s (QEMU start to '{READY_MARKER}')")


def test_guest_agent_answers_ping_and_runs_uname(
    tiny_guest: Guest, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = GuestAgent(tiny_guest.agent_socket)
    try:
        agent.sync(timeout=60)
        assert agent.execute("guest-ping") == {}
        first_ping = time.monotonic() - tiny_guest.started
        result = agent.run("uname", ["-a"])
    finally:
        agent.close()
    assert result.exitcode == 0, result
    assert "Linux" in result.stdout
    assert HOSTNAME in result.stdout  # corral.hostname= on the kernel command line took
    with capsys.disabled():
        print(f"\n[tiny] first guest-ping {first_ping:.2f} s after QEMU start")


def test_guest_exec_runs_shell_and_busybox_commands(tiny_guest: Guest) -> None:
    agent = GuestAgent(tiny_guest.agent_socket)
    try:
        agent.sync(timeout=60)
        shell = agent.run("sh", ["-c", "echo $PATH; cat /proc/cmdline | tr ' ' '\\n' | grep -c ."])
        modules = agent.run("cat", ["/proc/modules"])
        failing = agent.run("sh", ["-c", "echo oops >&2; exit 3"])
    finally:
        agent.close()
    assert shell.exitcode == 0, shell
    assert shell.stdout.splitlines()[0].startswith("/usr/sbin:")
    assert "virtio_console" in modules.stdout and "virtio_net" in modules.stdout
    assert (failing.exitcode, failing.stderr.strip()) == (3, "oops")


def test_system_powerdown_makes_qemu_exit_by_itself(
    tiny_guest: Guest, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_guest.wait_for_console(READY_MARKER, timeout=60)
    qmp = Qmp(tiny_guest.qmp_socket)
    try:
        asked = time.monotonic()
        qmp.execute("system_powerdown")
    finally:
        qmp.close()
    returncode = tiny_guest.process.wait(timeout=15)
    took = time.monotonic() - asked
    assert returncode == 0
    assert "reboot: Power down" in tiny_guest.console_text()
    with capsys.disabled():
        print(f"\n[tiny] system_powerdown to QEMU exit {took:.2f} s")
