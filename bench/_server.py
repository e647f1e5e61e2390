"""Start and drive a throwaway `corral serve` for benchmarks (not tests: nothing here asserts)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from corral.paths import read_token, runtime_dir_for


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchServer:
    """`corral serve` in a temp data dir; `compute` is "qemu" or "fake"."""

    def __init__(self, compute: str = "qemu", cache_dir: str = "/var/cache/corral") -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="corral-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.compute = compute
        self.env = dict(
            os.environ,
            CORRAL_CACHE_DIR=cache_dir,
            CORRAL_URL=self.url,
            CORRAL_DATA_DIR=str(self.data_dir),
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def runtime_dir(self) -> Path:
        """Runtime dir of this server's guests."""
        return runtime_dir_for(self.data_dir)

    def __enter__(self) -> BenchServer:
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
                "--compute",
                self.compute,
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not start")
        token = read_token(self.data_dir)
        self.http = httpx.Client(
            base_url=self.url, timeout=600, headers={"Authorization": f"Bearer {token}"}
        )
        return self

    def wait_op(self, answer: httpx.Response) -> dict[str, object]:
        """Follow a 202 answer's operation to its end."""
        answer.raise_for_status()
        op_id = answer.json()["id"]
        while True:
            op: dict[str, object] = self.http.get(
                f"/v1/operations/{op_id}", params={"wait": 30}
            ).json()
            if op["state"] != "running":
                if op["state"] != "succeeded":
                    raise RuntimeError(f"operation failed: {op}")
                return op

    def rss_mb(self) -> float:
        """Resident memory of the server process in MiB."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def __exit__(self, *exc: object) -> None:
        try:
            for item in self.http.get("/v1/instances").json()["items"]:
                self.http.delete(f"/v1/instances/{item['name']}")
            deadline = time.monotonic() + 60
            while self.http.get("/v1/instances").json()["items"] and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            if self.process is not None:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            subprocess.run(["rm", "-rf", str(self.data_dir), str(self.runtime_dir)], check=False)
