"""The QEMU compute backend: guests as detached QEMU processes.

Rooms: accel (KVM or TCG, and why), cmdline (the argv, pure), runtime (per-guest files and the
saved runtime), process (pid identity, exit watching), qmp (monitor + events), guest_agent
(qemu-ga client), driver (QemuBackend, the ComputeBackend implementation).
"""
