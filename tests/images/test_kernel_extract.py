"""vmlinux comes out of a bzImage whatever Debian compressed it with, and only if PVH-bootable."""

from __future__ import annotations

import bz2
import ctypes
import ctypes.util
import gzip
import lzma
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.errors import ImageBuildError
from corral.images.compression import Codec, decompress, detect_codec
from corral.images.kernel import extract_vmlinux, find_kernel, kernel_config, locate_payload
from tests.images.elf_factory import make_elf

PVH_NOTE = ("Xen", 18, struct.pack("<I", 0x1000000))
VMLINUX = make_elf(notes=[PVH_NOTE]) + b"\0" * 4096  # padding: compressible like a kernel


def lz4_legacy(data: bytes) -> bytes:
    """LZ4 legacy frame as the kernel's build writes it (one block here)."""
    name = ctypes.util.find_library("lz4")
    assert name is not None, "liblz4 is missing: `make apt` installs what the tests need"
    lib = ctypes.CDLL(name)
    bound = lib.LZ4_compressBound(len(data))
    out = ctypes.create_string_buffer(bound)
    size = lib.LZ4_compress_default(data, out, len(data), bound)
    return struct.pack("<II", 0x184C2102, size) + out.raw[:size]


def zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


COMPRESSORS: dict[Codec, Callable[[bytes], bytes]] = {
    Codec.XZ: lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
    Codec.LZMA: lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    Codec.GZIP: lambda d: gzip.compress(d, mtime=0),
    Codec.BZIP2: bz2.compress,
    Codec.LZ4_LEGACY: lz4_legacy,
    Codec.ZSTD: zstd,
}


def make_bzimage(payload: bytes, *, setup_sects: int = 4, gap: int = 300) -> bytes:
    """A bzImage-shaped blob: boot sector + setup header, then the payload `gap` bytes in.

    The kernel appends the uncompressed length (4 bytes) right after the stream; so do we.
    """
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    stream = payload + struct.pack("<I", len(VMLINUX))
    struct.pack_into("<II", setup, 0x248, gap, len(stream))
    # Bytes before the payload that look like nothing we know (the decompressor's code).
    return bytes(setup) + b"\x90" * gap + stream + b"\0" * 64


@pytest.mark.parametrize("codec", list(COMPRESSORS), ids=lambda c: c.value)
def test_vmlinux_is_extracted_from_every_kernel_compression(codec: Codec) -> None:
    packed = COMPRESSORS[codec](VMLINUX)
    assert detect_codec(packed) is codec
    bzimage = make_bzimage(packed)
    assert locate_payload(bzimage).codec is codec
    assert extract_vmlinux(bzimage) == VMLINUX


def test_payload_is_found_by_magic_without_a_boot_header() -> None:
    packed = COMPRESSORS[Codec.XZ](VMLINUX)
    blob = b"\x00not a bzImage\x00" * 40 + packed + b"\x00" * 8
    payload = locate_payload(blob)
    assert (payload.offset, payload.codec) == (blob.index(packed), Codec.XZ)
    assert extract_vmlinux(blob) == VMLINUX


@pytest.mark.parametrize(
    ("inner", "message"),
    [
        (b"MZ this is a PE file, not ELF" * 10, "not an ELF"),
        (make_elf(needed=["libc.so.6"]), "no PVH entry"),
    ],
    ids=["not-elf", "elf-without-pvh-note"],
)
def test_unbootable_payloads_are_refused(inner: bytes, message: str) -> None:
    with pytest.raises(ImageBuildError, match=message):
        extract_vmlinux(make_bzimage(COMPRESSORS[Codec.XZ](inner)))


def test_blob_without_any_compressed_stream_is_refused() -> None:
    with pytest.raises(ImageBuildError, match="no compressed kernel"):
        extract_vmlinux(b"\x00" * 8192)


def test_corrupt_stream_is_an_image_build_error() -> None:
    packed = bytearray(COMPRESSORS[Codec.XZ](VMLINUX))
    packed[40:60] = b"\xff" * 20
    with pytest.raises(ImageBuildError, match="corrupt xz"):
        decompress(bytes(packed))


def test_find_kernel_and_config_read_an_unpacked_package(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "vmlinuz-6.1.0-9-cloud-amd64").write_bytes(b"kernel")
    (tmp_path / "boot" / "config-6.1.0-9-cloud-amd64").write_text(
        "# comment\nCONFIG_RD_ZSTD=y\nCONFIG_VIRTIO=m\n# CONFIG_FOO is not set\n"
    )
    path, release = find_kernel(tmp_path)
    assert (path.name, release) == ("vmlinuz-6.1.0-9-cloud-amd64", "6.1.0-9-cloud-amd64")
    assert kernel_config(tmp_path, release) == {"CONFIG_RD_ZSTD": "y", "CONFIG_VIRTIO": "m"}


def test_find_kernel_refuses_an_ambiguous_package(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    for release in ("6.1.0-1-cloud-amd64", "6.1.0-2-cloud-amd64"):
        (tmp_path / "boot" / f"vmlinuz-{release}").write_bytes(b"kernel")
    with pytest.raises(ImageBuildError, match="found 2"):
        find_kernel(tmp_path)
