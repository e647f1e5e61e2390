"""`make demo`: Corral's main job from a user's seat, start to finish, with timings.

Starts the embedded server in a throwaway data dir, builds the `tiny` image, creates two VMs and
waits until both are ready, runs `uname -a` in one with `corral exec`, shows `corral list`, stops
and deletes them, prints the timings, and cleans up after itself (server, guests, data dir).
The apt download cache is kept between runs (CORRAL_CACHE_DIR, default /var/cache/corral) so a
second demo builds the image from a warm cache.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from corral.paths import runtime_dir_for

console = Console()
VMS = ("demo-1", "demo-2")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def corral(*args: str, capture: bool = False) -> str:
    """Run the real `corral` CLI, as a user would, and fail loudly if it fails."""
    cmd = [sys.executable, "-m", "corral.cli.main", *args]
    console.print(f"[bold cyan]$ corral {' '.join(args)}[/]")
    result = subprocess.run(cmd, text=True, capture_output=capture, check=False)
    if result.returncode != 0:
        if capture:
            sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"demo failed: `corral {' '.join(args)}` exited {result.returncode}")
    return result.stdout if capture else ""


def wait_healthy(url: str, server: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Wait until the server answers /healthz."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("demo failed: `corral serve` exited during startup")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("demo failed: the server did not answer /healthz in time")


def main() -> int:
    """Run the demo; return the process exit code."""
    data_dir = Path(tempfile.mkdtemp(prefix="corral-demo-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    os.environ.update(CORRAL_URL=url, CORRAL_DATA_DIR=str(data_dir))
    os.environ.setdefault("CORRAL_CACHE_DIR", "/var/cache/corral")
    timings: list[tuple[str, float]] = []
    log = (data_dir.parent / f"{data_dir.name}.server.log").open("wb")
    console.rule("[bold]Corral demo")
    console.print(f"data dir {data_dir}, server {url}")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral.cli.main",
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        started = time.monotonic()
        wait_healthy(url, server)
        timings.append(("server start → healthy", time.monotonic() - started))
        corral("hosts")

        started = time.monotonic()
        corral("image", "build", "tiny")
        timings.append(("image build tiny", time.monotonic() - started))

        for vm in VMS:
            started = time.monotonic()
            corral("create", vm, "--image", "tiny", "--memory", "256M")
            timings.append((f"create {vm} → ready (CLI wall clock)", time.monotonic() - started))
        for vm in VMS:
            shown = json.loads(corral("show", vm, "-o", "json", capture=True))
            ready_ms = shown["status"]["create_to_ready_ms"]
            timings.append((f"create {vm} → guest ready (server)", ready_ms / 1000))

        started = time.monotonic()
        corral("exec", VMS[0], "--", "uname", "-a")
        timings.append(("exec uname -a", time.monotonic() - started))
        corral("list")

        for vm in VMS:
            started = time.monotonic()
            corral("stop", vm)
            timings.append((f"stop {vm} (ACPI power-off)", time.monotonic() - started))
        for vm in VMS:
            started = time.monotonic()
            corral("delete", vm)
            timings.append((f"delete {vm}", time.monotonic() - started))
        corral("list")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        # Guests are deleted above; if the demo failed half-way, none may outlive it.
        runtime_dir = runtime_dir_for(data_dir)
        leftovers = subprocess.run(
            ["pgrep", "-f", f"qemu-system.*{runtime_dir}"], capture_output=True, text=True
        ).stdout.split()
        for pid in leftovers:
            os.kill(int(pid), signal.SIGKILL)
        shutil.rmtree(runtime_dir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        Path(log.name).unlink(missing_ok=True)

    table = Table(title="Corral demo timings")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for step, seconds in timings:
        table.add_row(step, f"{seconds:.2f}")
    console.print(table)
    console.print("[green]demo finished; everything it made is gone[/]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
