"""Image recipes as data: which Debian packages, modules and guest files make an image.

A recipe names packages, never versions: the versions are whatever apt's candidate is at
build time, and the built image records them (BuiltImage.recipe["packages"]).
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import ImageBuildError


@dataclass(frozen=True)
class Recipe:
    """How to build one image kind from Debian packages."""

    name: str
    description: str
    # A metapackage that depends on the real, versioned kernel package; only that one is
    # fetched (its own dependencies, such as initramfs-tools, are for installing on a disk).
    kernel_metapackage: str
    kernel_package_pattern: str  # regex the metapackage's dependency must match
    # Fetched with their full dependency closure, so every library a binary needs is at hand.
    packages: tuple[str, ...]
    # Dynamic executables copied with the shared libraries they need (ELF NEEDED, recursively).
    executables: tuple[str, ...]
    # Loaded by init in dependency order; an unknown module is an error...
    modules: tuple[str, ...]
    # ...unless listed here (helpers some kernel versions split out, some build in).
    optional_modules: tuple[str, ...]
    cmdline: str  # kernel arguments the image needs, without console=


TINY = Recipe(
    name="tiny",
    description=(
        "busybox initramfs with qemu-guest-agent, virtio drivers, DHCP on every NIC and "
        "ACPI power-button shutdown; no disk"
    ),
    kernel_metapackage="linux-image-cloud-amd64",
    kernel_package_pattern=r"^linux-image-[0-9].*-cloud-amd64$",
    packages=("busybox-static", "qemu-guest-agent"),
    executables=("/usr/sbin/qemu-ga",),
    modules=(
        "virtio_ring",
        "virtio",
        "virtio_pci",
        "virtio_mmio",
        "virtio_console",
        "virtio_net",
        "virtio_blk",
        "button",  # ACPI power button: QMP system_powerdown arrives as a key press
        "evdev",  # ...which acpid reads from /dev/input/event*
    ),
    optional_modules=(
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "failover",
        "net_failover",
    ),
    # quiet: the serial console costs real time under TCG. panic=-1: reboot at once on a
    # panic, so a driver using -no-reboot sees QEMU exit instead of a hung guest.
    # 8250.nr_uarts=1: skip probing three absent legacy UARTs.
    cmdline="quiet panic=-1 8250.nr_uarts=1",
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (TINY,)}


def list_recipes() -> list[str]:
    """Names of the images `build_image` can make, sorted."""
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; ImageBuildError listing the known ones otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(list_recipes())
        raise ImageBuildError(
            f"unknown image recipe {name!r}; known recipes: {known}", code="unknown_recipe"
        ) from None
