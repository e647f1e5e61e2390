"""Boot benchmark: Corral's create→guest-ready through the API vs bare QEMU, same command line.

Also: GET /v1/instances latency with 1,000 instances (fake compute), and the server's RSS with
10 running VMs. Prints tables; with --json the last line is one JSON object of the figures.

    .venv/bin/python bench/boot.py [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from _server import BenchServer

console = Console(stderr=False)


def _read_json_line(sock: socket.socket, buffer: bytearray) -> dict[str, object]:
    while b"\n" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError("guest agent closed the connection")
        buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    parsed: dict[str, object] = json.loads(line.replace(b"\xff", b"") or b"{}")
    return parsed


def guest_ping_once(path: Path, timeout_s: float = 0.5) -> bool:
    """One guest-sync-delimited + guest-ping round on a qemu-ga socket."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            token = int(time.monotonic_ns() % 1_000_000_000)
            request = {"execute": "guest-sync-delimited", "arguments": {"id": token}}
            sock.sendall(json.dumps(request).encode() + b"\n")
            buffer = bytearray()
            while _read_json_line(sock, buffer).get("return") != token:
                pass
            sock.sendall(b'{"execute": "guest-ping"}\n')
            return "return" in _read_json_line(sock, buffer)
    except (OSError, ValueError):
        return False


def bare_boot(argv: list[str], runtime_root: Path) -> float:
    """Run QEMU with Corral's exact argv (paths moved to a scratch dir); seconds to guest-ping."""
    scratch = Path(tempfile.mkdtemp(prefix="bare-", dir="/tmp"))
    old_dir = str(runtime_root)
    moved = [arg.replace(old_dir, str(scratch)) for arg in argv]
    qga = next(
        Path(part.split("=", 1)[1])
        for arg in moved
        for part in arg.split(",")
        if part.startswith("path=") and "qga" in part
    )
    qga.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run(moved, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not guest_ping_once(qga):
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    pidfile = next((Path(moved[i + 1]) for i, a in enumerate(moved) if a == "-pidfile"), None)
    if pidfile and pidfile.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
    time.sleep(0.2)
    shutil.rmtree(scratch, ignore_errors=True)
    return elapsed


def corral_boot(server: BenchServer, name: str) -> tuple[float, list[str]]:
    """Create through the API and wait for guest-ready; seconds, and the argv QEMU ran with."""
    started = time.monotonic()
    server.wait_op(
        server.http.post("/v1/instances", json={"name": name, "spec": {"image": "tiny"}})
    )
    elapsed = time.monotonic() - started
    runtime = json.loads((server.runtime_dir / name / "runtime.json").read_text())
    server.wait_op(server.http.delete(f"/v1/instances/{name}"))
    return elapsed, list(runtime["argv"])


def list_latency(instances: int = 1000, requests: int = 200) -> tuple[float, float]:
    """p50/p99 ms of GET /v1/instances with `instances` objects on the fake backend."""
    with BenchServer(compute="fake") as server:
        server.wait_op(server.http.post("/v1/images", json={"recipe": "tiny"}))
        for i in range(instances):
            server.http.post(
                "/v1/instances",
                json={"name": f"vm-{i:04d}", "spec": {"image": "tiny", "power": "stopped"}},
            )
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            answer = server.http.get("/v1/instances")
            samples.append((time.perf_counter() - started) * 1000)
            assert len(answer.json()["items"]) == instances
        samples.sort()
        return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def rss_with_vms(server: BenchServer, count: int = 10) -> float:
    """Server RSS (MiB) with `count` running VMs."""
    answers = [
        server.http.post(
            "/v1/instances", json={"name": f"rss-{i}", "spec": {"image": "tiny", "memory_mib": 128}}
        )
        for i in range(count)
    ]
    for answer in answers:
        server.wait_op(answer)
    rss = server.rss_mb()
    for i in range(count):
        server.http.delete(f"/v1/instances/rss-{i}")
    return rss


def main() -> int:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    corral_s: list[float] = []
    bare_s: list[float] = []
    with BenchServer(compute="qemu") as server:
        server.wait_op(server.http.post("/v1/images", json={"recipe": "tiny"}))
        # One warm-up boot each so page cache and QEMU's first-run costs hit neither side.
        _, argv = corral_boot(server, "warmup")
        bare_boot(argv, server.runtime_dir)
        for run in range(args.runs):  # interleaved, so drift hits both sides alike
            seconds, argv = corral_boot(server, f"boot-{run}")
            corral_s.append(seconds)
            bare_s.append(bare_boot(argv, server.runtime_dir))
        rss = rss_with_vms(server)
    p50, p99 = list_latency()

    corral_ms = statistics.median(corral_s) * 1000
    bare_ms = statistics.median(bare_s) * 1000
    table = Table(title=f"Boot to guest-ready, TCG, median of {args.runs}")
    table.add_column("path")
    table.add_column("median ms", justify="right")
    table.add_column("runs (ms)")
    table.add_row(
        "corral create → ready (API)",
        f"{corral_ms:.0f}",
        " ".join(f"{s * 1000:.0f}" for s in corral_s),
    )
    table.add_row(
        "bare qemu, same argv → guest-ping",
        f"{bare_ms:.0f}",
        " ".join(f"{s * 1000:.0f}" for s in bare_s),
    )
    table.add_row("ratio corral / bare", f"{corral_ms / bare_ms:.3f}", "goal ≤ 1.05")
    console.print(table)
    other = Table(title="Control plane")
    other.add_column("figure")
    other.add_column("value", justify="right")
    other.add_row("GET /v1/instances, 1,000 instances, p50 ms", f"{p50:.1f}")
    other.add_row("GET /v1/instances, 1,000 instances, p99 ms (goal < 50)", f"{p99:.1f}")
    other.add_row("server RSS with 10 running VMs, MiB", f"{rss:.0f}")
    console.print(other)
    figures = {
        "boot_ratio": round(corral_ms / bare_ms, 4),
        "create_ready_ms": round(corral_ms, 1),
        "bare_ready_ms": round(bare_ms, 1),
        "list_p50_ms": round(p50, 2),
        "list_p99_ms": round(p99, 2),
        "rss_mb_10vms": round(rss, 1),
    }
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
