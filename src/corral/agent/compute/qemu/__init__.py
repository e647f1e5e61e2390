"""The QEMU compute backend: guests as detached QEMU processes.

Rooms: accel (KVM or TCG, and why), cmdline (the argv, pure), blockdev (disks as block nodes and
virtio-blk devices, pure), runtime (per-guest files and the saved runtime), process (pid
identity, exit watching, daemonized start), qmp (monitor + events), hotplug (disk attach,
detach, resize through QMP), seed (the cloud-init seed disk), guest_agent (qemu-ga client),
snapshots (internal snapshots, memory save/load), backups (dirty-bitmap backup jobs),
block_jobs (node state and QEMU jobs, read and awaited), driver (QemuBackend, the
ComputeBackend implementation).
"""
