"""End-to-end tests of pools, volumes and disks against real QEMU guests (issue 3)."""
