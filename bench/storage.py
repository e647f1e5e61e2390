"""Storage benchmark: thin clone vs full copy, snapshot time vs disk size, incremental backups.

Everything goes through the REST API of a throwaway `corral serve` (QEMU compute, `dir` pool),
so the figures are what a user waits for, control plane included. Baselines are measured in the
same run: the full copy for thin clones, the 1 GiB disk for the 10 GiB one, the full backup for
the incremental one.

    .venv/bin/python bench/storage.py [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import BenchServer

GIB = 1024**3
MIB = 1024**2
console = Console()


def fill(path: str, data_bytes: int) -> None:
    """Write `data_bytes` of non-zero data into a detached qcow2 volume, in 64 MiB pieces."""
    step = 64 * MIB
    commands = []
    for offset in range(0, data_bytes, step):
        commands += ["-c", f"write -P {(offset // step) % 250 + 1} {offset} {step}"]
    subprocess.run(
        ["qemu-io", "-f", "qcow2", *commands, path], check=True, stdout=subprocess.DEVNULL
    )


def timed_op(server: BenchServer, method: str, url: str, body: dict[str, object]) -> float:
    """Seconds from request to the end of the operation it started."""
    started = time.monotonic()
    server.wait_op(server.http.request(method, url, json=body))
    return time.monotonic() - started


def volume(server: BenchServer, name: str) -> dict[str, object]:
    """The volume's JSON."""
    answer: dict[str, object] = server.http.get(f"/v1/volumes/{name}").json()
    return answer


def clone_vs_copy(server: BenchServer, size: int, data: int, label: str) -> tuple[float, float]:
    """(thin clone seconds, full copy seconds) of a volume of `size` with `data` written."""
    src = f"src-{label}"
    timed_op(server, "POST", "/v1/volumes", {"name": src, "spec": {"size_bytes": size}})
    fill(str(volume(server, src)["status"]["path"]), data)  # type: ignore[index]
    thin = timed_op(
        server,
        "POST",
        "/v1/volumes",
        {"name": f"thin-{label}", "spec": {"source": {"kind": "volume", "volume": src}}},
    )
    full = timed_op(
        server,
        "POST",
        "/v1/volumes",
        {"name": f"full-{label}", "spec": {"source": {"kind": "copy", "volume": src}}},
    )
    for name in (f"thin-{label}", f"full-{label}", src):
        server.wait_op(server.http.delete(f"/v1/volumes/{name}"))
    return thin, full


def exec_in(server: BenchServer, vm: str, script: str) -> str:
    """Run a shell script in the guest; its stdout."""
    answer = server.http.post(
        f"/v1/instances/{vm}/actions/exec", json={"command": ["sh", "-c", script], "timeout_s": 300}
    )
    answer.raise_for_status()
    result: dict[str, object] = answer.json()
    if result["exit_code"] != 0:
        raise RuntimeError(f"guest command failed: {result}")
    return str(result["stdout"])


def device_of(server: BenchServer, vm: str, volume_name: str) -> str:
    """/dev/vdX of the disk whose serial is the volume's name (the tiny guest has no udev).

    The attach operation ends when QEMU has the device; the guest sees it a moment later.
    """
    script = (
        "for d in /sys/block/vd*; do [ -e $d/serial ] && "
        f'[ "$(cat $d/serial)" = {volume_name} ] && echo /dev/${{d##*/}}; done; true'
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = exec_in(server, vm, script).strip()
        if found:
            return found
        time.sleep(0.2)
    raise RuntimeError(f"the guest never saw volume {volume_name}")


def snapshot_ms(server: BenchServer, vm: str, size: int, label: str, runs: int = 3) -> float:
    """Median ms of a disk-only snapshot of a running guest with a `size` data disk."""
    vol = f"snapdisk-{label}"
    timed_op(server, "POST", "/v1/volumes", {"name": vol, "spec": {"size_bytes": size}})
    timed_op(server, "POST", f"/v1/volumes/{vol}/actions/attach", {"instance": vm})
    dev = device_of(server, vm, vol)
    exec_in(server, vm, f"dd if=/dev/urandom of={dev} bs=1M count=100 conv=fsync 2>/dev/null")
    samples = []
    for run in range(runs):
        samples.append(
            timed_op(
                server,
                "POST",
                f"/v1/instances/{vm}/snapshots",
                {"name": f"{label}-{run}", "quiesce": False},
            )
            * 1000
        )
    for run in range(runs):
        server.wait_op(server.http.delete(f"/v1/instances/{vm}/snapshots/{label}-{run}"))
    timed_op(server, "POST", f"/v1/volumes/{vol}/actions/detach", {})
    server.wait_op(server.http.delete(f"/v1/volumes/{vol}"))
    samples.sort()
    return samples[len(samples) // 2]


def backups(server: BenchServer, vm: str) -> dict[str, float]:
    """Full backup of a 1 GiB disk with 512 MiB written, then an incremental after a 1 % change."""
    vol = "backed"
    timed_op(server, "POST", "/v1/volumes", {"name": vol, "spec": {"size_bytes": GIB}})
    timed_op(server, "POST", f"/v1/volumes/{vol}/actions/attach", {"instance": vm})
    dev = device_of(server, vm, vol)
    exec_in(server, vm, f"dd if=/dev/urandom of={dev} bs=1M count=512 conv=fsync 2>/dev/null")
    full_s = timed_op(server, "POST", f"/v1/volumes/{vol}/backups", {"full": True})
    exec_in(
        server, vm, f"dd if=/dev/urandom of={dev} bs=1M count=10 seek=100 conv=fsync 2>/dev/null"
    )  # ~1 % of the disk
    inc_s = timed_op(server, "POST", f"/v1/volumes/{vol}/backups", {})
    points = server.http.get(f"/v1/volumes/{vol}/backups").json()["items"]
    full = next(p for p in points if p["kind"] == "full")
    inc = next(p for p in points if p["kind"] == "incremental")
    return {
        "full_s": full_s,
        "inc_s": inc_s,
        "full_bytes": full["size_bytes"],
        "inc_bytes": inc["size_bytes"],
    }


def main() -> int:
    """Run every part and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with BenchServer(compute="qemu") as server:
        thin_1g, full_1g = clone_vs_copy(server, GIB, 512 * MIB, "1g")
        thin_10g, full_10g = clone_vs_copy(server, 10 * GIB, 5 * GIB, "10g")
        server.wait_op(server.http.post("/v1/images", json={"recipe": "tiny"}))
        server.wait_op(
            server.http.post(
                "/v1/instances",
                json={"name": "bench", "spec": {"image": "tiny", "memory_mib": 256}},
            )
        )
        snap_1g = snapshot_ms(server, "bench", GIB, "s1g")
        snap_10g = snapshot_ms(server, "bench", 10 * GIB, "s10g")
        backup = backups(server, "bench")

    table = Table(title="Thin clone vs full copy (dir pool, qcow2; half of each disk written)")
    for column in ("disk", "thin clone ms", "full copy ms", "full / thin"):
        table.add_column(column, justify="right")
    table.add_row(
        "1 GiB", f"{thin_1g * 1000:.0f}", f"{full_1g * 1000:.0f}", f"{full_1g / thin_1g:.0f}x"
    )
    table.add_row(
        "10 GiB", f"{thin_10g * 1000:.0f}", f"{full_10g * 1000:.0f}", f"{full_10g / thin_10g:.0f}x"
    )
    console.print(table)
    snaps = Table(title="Disk snapshot of a running guest (100 MiB written), median of 3")
    for column in ("disk", "snapshot ms", "vs 1 GiB"):
        snaps.add_column(column, justify="right")
    snaps.add_row("1 GiB", f"{snap_1g:.0f}", "1.00")
    snaps.add_row("10 GiB", f"{snap_10g:.0f}", f"{snap_10g / snap_1g:.2f}")
    console.print(snaps)
    back = Table(title="Backup of a 1 GiB disk with 512 MiB written, then 1 % changed")
    for column in ("backup", "seconds", "bytes", "vs full"):
        back.add_column(column, justify="right")
    back.add_row("full", f"{backup['full_s']:.2f}", f"{backup['full_bytes']:.0f}", "1.000")
    back.add_row(
        "incremental",
        f"{backup['inc_s']:.2f}",
        f"{backup['inc_bytes']:.0f}",
        f"{backup['inc_bytes'] / backup['full_bytes']:.3f}",
    )
    console.print(back)
    figures = {
        "thin_vs_full_ratio_10g": round(full_10g / thin_10g, 1),
        "thin_vs_full_ratio_1g": round(full_1g / thin_1g, 1),
        "snapshot_ms_1g": round(snap_1g, 1),
        "snapshot_ms_10g": round(snap_10g, 1),
        "incremental_vs_full_bytes_ratio": round(backup["inc_bytes"] / backup["full_bytes"], 4),
        "incremental_backup_s": round(backup["inc_s"], 3),
        "full_backup_s": round(backup["full_s"], 3),
    }
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
