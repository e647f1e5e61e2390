"""The cloud-init NoCloud seed of a guest: a small disk labelled `cidata`, written at launch.

The images module knows the seed's format (corral.images.seed.write_nocloud_seed, the default
SeedWriter); this backend only decides where it lives (the guest's runtime dir, so it goes with
it) and how a failure reads. blockdev.py
attaches it read-only with serial `cidata`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from corral.errors import CorralError, LaunchError
from corral.model.rpc import CloudInitSeed

SeedWriter = Callable[[CloudInitSeed, Path], Path]


async def write_seed(writer: SeedWriter, guest: str, seed: CloudInitSeed, dest: Path) -> None:
    """Write guest `guest`'s seed to `dest` off the event loop; any failure is a LaunchError."""
    try:
        await asyncio.to_thread(writer, seed, dest)
    except Exception as err:
        detail = err.message if isinstance(err, CorralError) else f"{type(err).__name__}: {err}"
        raise LaunchError(
            f"guest {guest!r} did not start: cannot write its cloud-init seed {dest}: {detail}"
        ) from err
