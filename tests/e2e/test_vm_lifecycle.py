"""A user's day with one VM, through the real CLI, against real QEMU guests (TCG here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.server import CorralServer, pid_alive, wait_for

pytestmark = pytest.mark.slow


def test_create_exec_console_stop_delete(server: CorralServer) -> None:
    created = server.cli("create", "life-1", "--image", "tiny", "--memory", "256M")
    assert created.code == 0

    shown = server.cli("show", "life-1", "-o", "json").json()
    assert shown["status"]["state"] == "running"
    assert shown["status"]["ready"] is True
    assert shown["status"]["create_to_ready_ms"] > 0
    pid = shown["status"]["pid"]
    assert pid_alive(pid)

    # The command really ran inside the guest: its kernel is the Debian cloud kernel.
    uname = server.cli("exec", "life-1", "--", "uname", "-a")
    assert "Linux life-1" in uname.stdout
    assert "cloud-amd64" in uname.stdout

    # exit codes of guest commands come back as the CLI's exit code
    failing = server.cli("exec", "life-1", "--", "sh", "-c", "echo oops >&2; exit 7", check=False)
    assert failing.code == 7
    assert "oops" in failing.stderr

    # The serial console is a real shell: type a command, read its output.
    console = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "console", "life-1"],
        input="echo console-$((6*7))\n",
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "console-42" in console.stdout

    log = server.cli("console", "life-1", "--log")
    assert "corral-guest: ready" in log.stdout

    server.cli("stop", "life-1")
    stopped = server.cli("show", "life-1", "-o", "json").json()
    assert stopped["status"]["state"] == "stopped"
    assert stopped["spec"]["power"] == "stopped"
    wait_for(lambda: not pid_alive(pid), 10)
    # the guest powered itself off on ACPI: its console shows the kernel's last words
    assert "Power down" in server.cli("console", "life-1", "--log").stdout

    server.cli("start", "life-1")
    restarted = server.cli("exec", "life-1", "--", "cat", "/proc/uptime")
    assert restarted.code == 0

    server.cli("delete", "life-1")
    listed = server.cli("list", "-o", "json").json()
    assert "life-1" not in [item["name"] for item in listed]
    assert not (server.runtime_dir / "life-1").exists()
    assert server.guest_pids() == []


def test_deleting_a_running_vm_stops_it_first(server: CorralServer) -> None:
    server.cli("create", "del-running", "--image", "tiny")
    pid = server.cli("show", "del-running", "-o", "json").json()["status"]["pid"]
    server.cli("delete", "del-running")
    wait_for(lambda: not pid_alive(pid), 10)
    missing = server.cli("show", "del-running", check=False)
    assert missing.code == 1
    assert "not_found" in missing.stderr


def test_restart_boots_the_guest_again(server: CorralServer) -> None:
    server.cli("create", "rst-1", "--image", "tiny")
    boot_id = server.cli("exec", "rst-1", "--", "cat", "/proc/sys/kernel/random/boot_id").stdout
    server.cli("restart", "rst-1")
    after = server.cli("exec", "rst-1", "--", "cat", "/proc/sys/kernel/random/boot_id").stdout
    assert after.strip() and after != boot_id
    server.cli("delete", "rst-1")
