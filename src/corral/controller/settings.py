"""Tunables of the controller, with the defaults the embedded server uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corral.controller.plan import DEFAULT_SHUTDOWN_TIMEOUT_S


@dataclass(frozen=True)
class ControllerSettings:
    """How often to resync, how long to wait for guests, how many objects at once."""

    host_name: str
    resync_s: float = 5.0
    ready_timeout_s: float = 120.0  # a full Debian guest's agent answers after ~52 s under TCG
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S
    workers: int = 32
    host_refresh_s: float = 60.0
    storage_refresh_s: float = 30.0  # re-read facts of steady pools and volumes this often
    # Where restore points go (`<backups_dir>/<volume>/<id>.qcow2`); None: no backups.
    backups_dir: Path | None = None
