"""Modules load dependencies first (virtio_ring before virtio), as modprobe would order them."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import ImageBuildError
from corral.images.modules import (
    ensure_modules_dep,
    load_order,
    module_name,
    parse_modules_builtin,
    parse_modules_dep,
    render_modules_dep,
    uncompressed_path,
)

V = "kernel/drivers/virtio"
# The virtio part of Debian 12's cloud kernel modules.dep, as depmod writes it.
MODULES_DEP = f"""\
{V}/virtio.ko: {V}/virtio_ring.ko
{V}/virtio_ring.ko:
{V}/virtio_pci_modern_dev.ko:
{V}/virtio_pci_legacy_dev.ko:
{V}/virtio_mmio.ko: {V}/virtio.ko {V}/virtio_ring.ko
{V}/virtio_pci.ko: {V}/virtio_pci_legacy_dev.ko {V}/virtio_pci_modern_dev.ko \
{V}/virtio.ko {V}/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: {V}/virtio.ko {V}/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: {V}/virtio.ko {V}/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko \
kernel/net/core/failover.ko {V}/virtio.ko {V}/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/acpi/button.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz: {V}/virtio.ko {V}/virtio_ring.ko
"""
AVAILABLE = parse_modules_dep(MODULES_DEP)


@pytest.mark.parametrize(
    ("wanted", "builtin", "optional", "expected"),
    [
        (["virtio"], [], [], ["virtio_ring", "virtio"]),
        (["virtio", "virtio_ring"], [], [], ["virtio_ring", "virtio"]),
        (
            ["virtio_pci"],
            [],
            [],
            [
                "virtio_ring",
                "virtio",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
            ],
        ),
        (
            ["virtio_net", "virtio_console"],
            [],
            [],
            ["virtio_ring", "virtio", "failover", "net_failover", "virtio_net", "virtio_console"],
        ),
        # Asked order is kept between unrelated modules.
        (["button", "virtio_blk"], [], [], ["button", "virtio_ring", "virtio", "virtio_blk"]),
        # Built-in modules are not loaded, and not an error.
        (["virtio_ring", "button"], ["kernel/drivers/acpi/button.ko"], [], ["virtio_ring"]),
        # Optional helpers are skipped when the kernel has no such module.
        (["virtio_ring"], [], ["virtio_pci_nonexistent"], ["virtio_ring"]),
        # Dashes and underscores name the same module.
        (["virtio-rng"], [], [], ["virtio_ring", "virtio", "virtio_rng"]),
    ],
)
def test_load_order(
    wanted: list[str], builtin: list[str], optional: list[str], expected: list[str]
) -> None:
    order = load_order(wanted, AVAILABLE, builtin, optional)
    assert [m.name for m in order] == expected


def test_unknown_required_module_is_an_error() -> None:
    with pytest.raises(ImageBuildError, match="virtio_gpu"):
        load_order(["virtio_gpu"], AVAILABLE)


def test_dependency_cycle_is_an_error() -> None:
    cyclic = parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(ImageBuildError, match="cycle"):
        load_order(["a"], cyclic)


@pytest.mark.parametrize(
    ("path", "name", "stored"),
    [
        (
            "kernel/drivers/virtio/virtio_ring.ko",
            "virtio_ring",
            "kernel/drivers/virtio/virtio_ring.ko",
        ),
        (
            "kernel/drivers/char/hw_random/virtio-rng.ko.xz",
            "virtio_rng",
            "kernel/drivers/char/hw_random/virtio-rng.ko",
        ),
        ("kernel/fs/fuse/virtiofs.ko.zst", "virtiofs", "kernel/fs/fuse/virtiofs.ko"),
    ],
)
def test_module_names_and_stored_paths(path: str, name: str, stored: str) -> None:
    assert (module_name(path), uncompressed_path(path)) == (name, stored)


def test_trimmed_modules_dep_mentions_only_included_modules() -> None:
    order = load_order(["virtio_console", "virtio-rng"], AVAILABLE)
    text = render_modules_dep(order)
    assert parse_modules_dep(text).keys() == {
        "virtio_ring",
        "virtio",
        "virtio_console",
        "virtio_rng",
    }
    assert f"kernel/drivers/char/hw_random/virtio-rng.ko: {V}/virtio.ko {V}/virtio_ring.ko" in text


def test_builtin_list_is_parsed() -> None:
    assert parse_modules_builtin(
        "kernel/drivers/tty/serial/8250/8250.ko\nkernel/fs/ext4/ext4.ko\n"
    ) == {
        "8250",
        "ext4",
    }


def test_existing_modules_dep_is_used_without_depmod(tmp_path: Path) -> None:
    modules_dir = tmp_path / "lib" / "modules" / "6.1.0-9-cloud-amd64"
    modules_dir.mkdir(parents=True)
    (modules_dir / "modules.dep").write_text(MODULES_DEP)
    assert ensure_modules_dep(modules_dir, "6.1.0-9-cloud-amd64") == MODULES_DEP
