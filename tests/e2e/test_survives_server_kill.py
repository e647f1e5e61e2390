"""The control plane may die; the guests may not. And a guest killed outside Corral is noticed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.e2e.server import CorralServer, pid_alive, wait_for

pytestmark = pytest.mark.slow

NAMES = ("keep-1", "keep-2", "keep-3")


def _pids(server: CorralServer) -> dict[str, int]:
    items = server.cli("list", "-o", "json").json()
    return {i["name"]: i["status"]["pid"] for i in items if i["name"] in NAMES}


def test_kill9_of_server_keeps_three_guests_running(server: CorralServer) -> None:
    for name in NAMES:
        server.cli("create", name, "--image", "tiny", "--no-wait")
    for name in NAMES:
        wait_for(
            lambda n=name: server.cli("show", n, "-o", "json").json()["status"]["ready"], 120, 0.5
        )
    before = _pids(server)
    assert len(before) == 3

    server.kill9()
    for pid in before.values():
        assert pid_alive(pid), "a guest died with the control plane"

    server.start()
    listed = server.cli("list", "-o", "json").json()
    after = {i["name"]: i for i in listed if i["name"] in NAMES}
    assert {n: i["status"]["pid"] for n, i in after.items()} == before
    assert all(i["status"]["state"] == "running" for i in after.values())

    for name in NAMES:
        out = server.cli("exec", name, "--", "hostname").stdout
        assert out.strip() == name
    console = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "console", NAMES[0]],
        input="echo after-restart-$((2*21))\n",
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "after-restart-42" in console.stdout

    # A guest killed from outside Corral is reported stopped within one resync (policy: stop).
    victim = before[NAMES[1]]
    os.kill(victim, signal.SIGKILL)
    shown = wait_for(
        lambda: (
            s
            if (s := server.cli("show", NAMES[1], "-o", "json").json())["status"]["state"]
            == "stopped"
            else None
        ),
        server.resync_s * 2 + 5,
    )
    assert shown["spec"]["power"] == "stopped"
    exited = shown["status"]["conditions"]
    assert any(c["type"] == "GuestExited" for c in exited)

    for name in NAMES:
        server.cli("delete", name)
    for pid in before.values():
        wait_for(lambda p=pid: not pid_alive(p), 15)
