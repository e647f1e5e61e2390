"""Volumes as guest disks: stable device ids and serials, and who is attached to what. Pure.

A volume keeps the same QEMU id in every guest it is attached to, so a running guest's
observation (`GuestObservation.disks`, the ids attached now) can be diffed against the spec.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

DISK_ID_PREFIX = "disk-"
# QEMU ids take letters, digits, '-', '.', '_' and must start with a letter. Block node names
# are limited to 31 characters, and the agent may add a suffix to the id for its nodes
# ("-fmt", "-file"): 20 leaves room for that.
MAX_DISK_ID_LENGTH = 20
# virtio-blk serials are at most 20 bytes; the guest sees /dev/disk/by-id/virtio-<serial>.
MAX_SERIAL_LENGTH = 20
_HASH_LENGTH = 8


def _shortened(text: str, limit: int) -> str:
    """`text` if it fits in `limit`, else its start, '-', and 8 hex digits of its hash: two
    long names that start alike still differ (a guest refuses two disks with one serial)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]
    keep = limit - _HASH_LENGTH - 1
    return f"{text[:keep].rstrip('-')}-{digest}"


def disk_id(volume: str) -> str:
    """The QEMU device id of `volume` in any guest: `disk-<name>`, with long names shortened
    (start + hash) to at most 20 characters."""
    return DISK_ID_PREFIX + _shortened(volume, MAX_DISK_ID_LENGTH - len(DISK_ID_PREFIX))


def disk_serial(volume: str) -> str:
    """The serial the guest sees for `volume`: its name, or for names longer than
    virtio-blk's 20 bytes their first 11 characters, '-' and 8 hex digits of a hash."""
    return _shortened(volume, MAX_SERIAL_LENGTH)


def is_volume_disk(device_id: str) -> bool:
    """True for ids Corral gave a volume (not, e.g., the agent's cloud-init seed disk)."""
    return device_id.startswith(DISK_ID_PREFIX)


def attachment_changes(
    instance: str,
    claimed: Iterable[str],
    recorded: Mapping[str, str | None],
    guest_disks: set[str] | None,
) -> dict[str, str | None]:
    """The `attached_to` each volume should get after a reconcile of `instance`.

    `claimed`: the volumes in the instance's spec; `recorded`: what volumes (claimed or
    attached to it) say now; `guest_disks`: the disk ids of the running guest, None when it
    does not run. A running guest's volumes are attached exactly when the guest has their
    disk; a stopped instance's volumes are attached when its spec lists them. Only changes
    are returned.
    """
    wanted = set(claimed)
    changes: dict[str, str | None] = {}
    for volume in sorted(wanted | set(recorded)):
        current = recorded.get(volume)
        if current is not None and current != instance:
            continue  # attached elsewhere: that instance's reconcile owns the record
        attached = disk_id(volume) in guest_disks if guest_disks is not None else volume in wanted
        target = instance if attached else None
        if target != current:
            changes[volume] = target
    return changes
