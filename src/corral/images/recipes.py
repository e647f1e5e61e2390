"""Image recipes as data: which Debian packages, modules and guest files make an image.

Two kinds: a `Recipe` is a kernel + initramfs guest assembled file by file (`tiny`); a
`DiskRecipe` is a full Debian system made by mmdebstrap into a qcow2 root disk, booted
with the kernel and initramfs Debian built for it (`debian-12`).

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


@dataclass(frozen=True)
class DiskRecipe:
    """How to build a full Debian system on a qcow2 root disk with mmdebstrap."""

    name: str
    description: str
    suite: str  # Debian release for mmdebstrap (its default mirrors: main, updates, security)
    variant: str  # mmdebstrap --variant: "apt" is Essential:yes plus apt
    packages: tuple[str, ...]  # --include, with their dependencies (no Recommends)
    # dpkg options for the build and the guest (kept in /etc/dpkg/dpkg.cfg.d/99mmdebstrap)
    dpkg_options: tuple[str, ...]
    # Scripts in corral/images/guest, run as mmdebstrap hooks with the root directory as $1
    essential_hook: str
    customize_hook: str
    disk_size_bytes: int  # virtual size of the root disk; cloud-init grows the filesystem
    filesystem_label: str
    cmdline: str  # kernel arguments the image needs, without console=
    cloud_init: bool  # the guest configures itself from a NoCloud seed


DEBIAN_12 = DiskRecipe(
    name="debian-12",
    description=(
        "Debian 12 (bookworm) with systemd, cloud-init, qemu-guest-agent and OpenSSH on a "
        "2 GiB qcow2 root disk (whole-disk ext4, grown at boot); DHCP on every NIC"
    ),
    suite="bookworm",
    variant="apt",
    packages=(
        "linux-image-cloud-amd64",
        "systemd-sysv",
        "udev",
        "dbus",  # hostnamectl (cloud-init sets the hostname through it), logind
        "systemd-resolved",  # DNS from DHCP: systemd-networkd alone writes no resolv.conf
        "netplan.io",  # renders the seed's network-config (version 2) for systemd-networkd
        "cloud-init",
        "qemu-guest-agent",
        "openssh-server",
        "sudo",  # cloud-init's default user `debian` gets passwordless sudo
        "iproute2",
        "e2fsprogs",  # resize2fs: cloud-init grows the root filesystem with it
        "locales",  # cloud-init's locale module runs locale-gen without it
        "zstd",  # initramfs-tools compresses with zstd (gzip otherwise)
        "netbase",
        "procps",
    ),
    dpkg_options=(
        # No manuals, info pages or translations in a guest image; copyright files stay.
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/locale/*",
        "path-include=/usr/share/locale/locale.alias",
    ),
    essential_hook="debian-12-essential",
    customize_hook="debian-12-customize",
    disk_size_bytes=2 << 30,
    filesystem_label="corral-root",
    # root=/dev/vda: the root disk must be the guest's first virtio-blk device (see
    # docs/images.md). quiet/panic/nr_uarts as for tiny.
    cmdline="root=/dev/vda ro quiet panic=-1 8250.nr_uarts=1",
    cloud_init=True,
)

RECIPES: dict[str, Recipe | DiskRecipe] = {r.name: r for r in (TINY, DEBIAN_12)}


def list_recipes() -> list[str]:
    """Names of the images `build_image` can make, sorted."""
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe | DiskRecipe:
    """The recipe called `name`; ImageBuildError listing the known ones otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(list_recipes())
        raise ImageBuildError(
            f"unknown image recipe {name!r}; known recipes: {known}", code="unknown_recipe"
        ) from None
