"""A real `corral serve` in a throwaway data dir, driven through the real CLI, for e2e tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from corral.paths import read_token, runtime_dir_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class CliResult:
    """What one `corral ...` run printed and returned."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.stdout)


@dataclass
class CorralServer:
    """One embedded Corral server process (API + controller + agent, QEMU compute)."""

    data_dir: Path
    cache_dir: Path
    resync_s: float = 2.0
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def runtime_dir(self) -> Path:
        """Where this server's guests keep sockets and pid files."""
        return runtime_dir_for(self.data_dir)

    @property
    def env(self) -> dict[str, str]:
        """Environment for CLI calls against this server."""
        env = dict(os.environ)
        env.update(
            CORRAL_URL=self.url,
            CORRAL_DATA_DIR=str(self.data_dir),
            CORRAL_CACHE_DIR=str(self.cache_dir),
        )
        env.pop("CORRAL_TOKEN", None)
        return env

    def start(self, timeout_s: float = 30) -> None:
        """Start `corral serve` and wait for /healthz."""
        log = (self.data_dir.parent / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corral.cli.main",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--resync",
                str(self.resync_s),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"corral serve exited: see {log.name}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("corral serve did not become healthy")

    def kill9(self) -> None:
        """kill -9 the server process (guests must survive this)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop the server gracefully (guests keep running)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def cli(self, *args: str, timeout: float = 300, check: bool = True) -> CliResult:
        """Run `corral ARGS...` against this server."""
        done = subprocess.run(
            [sys.executable, "-m", "corral.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result = CliResult(done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return result

    def api(self) -> httpx.Client:
        """An authenticated HTTP client for direct API checks."""
        token = read_token(self.data_dir)
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )

    def guest_pids(self) -> list[int]:
        """Pids of QEMU processes whose command line names this server's runtime dir."""
        marker = str(self.runtime_dir)
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "qemu-system" in cmdline and marker in cmdline:
                pids.append(int(proc.name))
        return pids

    def kill_guests(self) -> None:
        """Last-resort cleanup: SIGKILL every QEMU of this server."""
        for pid in self.guest_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """True when a process with `pid` exists (and is not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> Any:
    """Poll `predicate()` until it returns something truthy; return it, or fail after timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")
