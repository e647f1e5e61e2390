"""Recognise and undo the compressions that Debian kernels and modules use.

Kernels are packed with xz (older Debian kernels), LZ4 (bookworm's cloud kernel) or zstd;
modules may be .ko.xz / .ko.zst / .ko.gz. Python's stdlib covers xz, lzma, gzip and bzip2.
LZ4 goes through liblz4 via ctypes: the library is on every Debian host because apt links it,
and a pure-Python LZ4 loop over a 50 MB kernel would take seconds. zstd goes through the
`zstd` command, which only a zstd-packed kernel or module needs.
"""

from __future__ import annotations

import bz2
import ctypes
import ctypes.util
import enum
import gzip
import lzma
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable

from corral.errors import ImageBuildError


class Codec(enum.Enum):
    """A compression format, recognised by its leading magic bytes."""

    XZ = "xz"
    LZMA = "lzma"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    LZ4_LEGACY = "lz4-legacy"
    ZSTD = "zstd"


# Order matters only for readability: no magic is a prefix of another.
MAGICS: tuple[tuple[Codec, bytes], ...] = (
    (Codec.XZ, b"\xfd7zXZ\x00"),
    (Codec.GZIP, b"\x1f\x8b"),
    (Codec.BZIP2, b"BZh"),
    (Codec.LZ4_LEGACY, b"\x02\x21\x4c\x18"),
    (Codec.ZSTD, b"\x28\xb5\x2f\xfd"),
    # The kernel's "lzma" (lzma-alone) stream: properties byte 0x5d, dictionary size 8 MiB.
    (Codec.LZMA, b"\x5d\x00\x00\x80\x00"),
)

LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_BLOCK = 8 << 20  # the legacy format's fixed maximum uncompressed block size


def detect_codec(data: bytes) -> Codec | None:
    """Return the codec whose magic `data` starts with, or None."""
    for codec, magic in MAGICS:
        if data.startswith(magic):
            return codec
    return None


def find_compressed_stream(data: bytes) -> tuple[int, Codec] | None:
    """Return the offset and codec of the earliest known magic in `data` (a last resort)."""
    best: tuple[int, Codec] | None = None
    for codec, magic in MAGICS:
        offset = data.find(magic)
        if offset >= 0 and (best is None or offset < best[0]):
            best = (offset, codec)
    return best


def decompress(data: bytes, codec: Codec | None = None) -> bytes:
    """Decompress one stream of `codec` (detected when None); trailing bytes are ignored.

    The kernel appends the uncompressed size after the stream, so stopping at the end of the
    first stream (and not insisting on EOF) is what makes a bzImage payload decode.
    """
    codec = codec or detect_codec(data)
    if codec is None:
        raise ImageBuildError(f"unknown compression (leading bytes {data[:6].hex()})")
    try:
        if codec is Codec.XZ:
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
        if codec is Codec.LZMA:
            return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)
        if codec is Codec.GZIP:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        if codec is Codec.BZIP2:
            return bz2.BZ2Decompressor().decompress(data)
        if codec is Codec.LZ4_LEGACY:
            return decompress_lz4_legacy(data)
        return decompress_with_command(["zstd", "-dcq"], data, "zstd")
    except (lzma.LZMAError, zlib.error, OSError, EOFError) as err:
        raise ImageBuildError(f"corrupt {codec.value} stream: {err}") from err


def decompress_lz4_legacy(data: bytes) -> bytes:
    """Decode LZ4's legacy frame (magic, then size-prefixed blocks), as the kernel writes it.

    Stops at a block size that would run past the end: that is the kernel's appended length.
    """
    if struct.unpack_from("<I", data, 0)[0] != LZ4_LEGACY_MAGIC:
        raise ImageBuildError("not an LZ4 legacy stream")
    decode = _lz4_block_decoder()
    out: list[bytes] = []
    pos = 4
    while pos + 4 <= len(data):
        (size,) = struct.unpack_from("<I", data, pos)
        if size == LZ4_LEGACY_MAGIC:  # concatenated frames
            pos += 4
            continue
        if size == 0 or pos + 4 + size > len(data):
            break
        out.append(decode(data[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    if not out:
        raise ImageBuildError("LZ4 stream holds no block")
    return b"".join(out)


def _lz4_block_decoder() -> Callable[[bytes], bytes]:
    """Bind liblz4's LZ4_decompress_safe, or say which package provides it."""
    name = ctypes.util.find_library("lz4")
    if name is None:
        raise ImageBuildError(
            "the kernel is LZ4-compressed and liblz4 is missing: apt-get install liblz4-1"
        )
    lib = ctypes.CDLL(name)
    func = lib.LZ4_decompress_safe
    func.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    func.restype = ctypes.c_int
    buffer = ctypes.create_string_buffer(LZ4_LEGACY_BLOCK)

    def decode(block: bytes) -> bytes:
        produced = int(func(block, buffer, len(block), LZ4_LEGACY_BLOCK))
        if produced < 0:
            raise ImageBuildError(f"corrupt LZ4 block (liblz4 error {produced})")
        return buffer.raw[:produced]

    return decode


def decompress_with_command(argv: list[str], data: bytes, package: str) -> bytes:
    """Pipe `data` through an external decompressor; name the package when it is missing."""
    if shutil.which(argv[0]) is None:
        raise ImageBuildError(f"{argv[0]} is needed to unpack this file: apt-get install {package}")
    result = subprocess.run(argv, input=data, capture_output=True, check=False)
    # zstd -d complains about trailing garbage but has written the first frame in full.
    if not result.stdout:
        stderr = result.stderr.decode(errors="replace").strip()
        raise ImageBuildError(f"{argv[0]} could not decompress: {stderr}")
    return result.stdout


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    """Gzip with a zero timestamp, so the same input gives the same bytes (stable digests)."""
    return gzip.compress(data, compresslevel=level, mtime=0)
