"""Turn Debian's vmlinuz (a bzImage) into the uncompressed vmlinux QEMU boots via PVH.

Under TCG the guest spends seconds decompressing its own kernel; unpacking it once here
and booting the ELF through its PVH entry note saves ~1.5 s per boot. The payload is
located through the x86 boot protocol header (payload_offset/payload_length, protocol
2.08+), falling back to scanning for a compression magic on anything older or odd.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from corral.errors import ImageBuildError
from corral.images.compression import Codec, decompress, detect_codec, find_compressed_stream
from corral.images.elf import is_elf, parse_elf

SETUP_SECTS_AT = 0x1F1
HEADER_MAGIC_AT = 0x202
HEADER_MAGIC = b"HdrS"
PROTOCOL_VERSION_AT = 0x206
PAYLOAD_AT = 0x248  # u32 payload_offset, u32 payload_length (boot protocol >= 2.08)
PAYLOAD_PROTOCOL = 0x0208


@dataclass(frozen=True)
class KernelPayload:
    """Where a bzImage keeps its compressed kernel, and how it is compressed."""

    offset: int
    length: int
    codec: Codec


def locate_payload(bzimage: bytes) -> KernelPayload:
    """Find the compressed vmlinux inside a bzImage (or any blob holding one stream)."""
    if bzimage[HEADER_MAGIC_AT : HEADER_MAGIC_AT + 4] == HEADER_MAGIC:
        (version,) = struct.unpack_from("<H", bzimage, PROTOCOL_VERSION_AT)
        if version >= PAYLOAD_PROTOCOL:
            setup_sects = bzimage[SETUP_SECTS_AT] or 4  # 0 means 4, per the boot protocol
            offset, length = struct.unpack_from("<II", bzimage, PAYLOAD_AT)
            start = (setup_sects + 1) * 512 + offset
            codec = detect_codec(bzimage[start : start + 8])
            if codec is not None and start + length <= len(bzimage):
                return KernelPayload(start, length, codec)
    found = find_compressed_stream(bzimage)
    if found is None:
        raise ImageBuildError("no compressed kernel found in the bzImage (unknown format)")
    offset, codec = found
    return KernelPayload(offset, len(bzimage) - offset, codec)


def extract_vmlinux(bzimage: bytes) -> bytes:
    """Return the uncompressed vmlinux ELF held in a bzImage, checking it is PVH-bootable."""
    payload = locate_payload(bzimage)
    vmlinux = decompress(bzimage[payload.offset : payload.offset + payload.length], payload.codec)
    if not is_elf(vmlinux):
        raise ImageBuildError(
            f"the kernel's {payload.codec.value} payload is not an ELF file (got {vmlinux[:4]!r})"
        )
    if not parse_elf(vmlinux).has_pvh_entry:
        raise ImageBuildError(
            "the kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), so QEMU cannot boot "
            "its vmlinux directly; use a kernel built with CONFIG_PVH=y"
        )
    return vmlinux


def find_kernel(root: Path) -> tuple[Path, str]:
    """The single /boot/vmlinuz-<release> in an unpacked kernel package, and its release."""
    candidates = sorted((root / "boot").glob("vmlinuz-*"))
    if len(candidates) != 1:
        raise ImageBuildError(
            f"expected one /boot/vmlinuz-* in the kernel package, found {len(candidates)}"
        )
    release = candidates[0].name.removeprefix("vmlinuz-")
    return candidates[0], release


def kernel_config(root: Path, release: str) -> dict[str, str]:
    """The kernel's build options from /boot/config-<release> (empty when not shipped)."""
    path = root / "boot" / f"config-{release}"
    if not path.exists():
        return {}
    options: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            options[key] = value
    return options
