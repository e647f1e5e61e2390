"""Make small, valid ELF files for tests: the headers the loader and QEMU read, nothing else."""

from __future__ import annotations

import struct
from collections.abc import Sequence

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE = 1, 2, 3, 4
DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 1, 5, 15, 29
BASE = 0x400000


def make_elf(
    *,
    needed: Sequence[str] = (),
    rpath: Sequence[str] = (),
    runpath: Sequence[str] = (),
    interpreter: str | None = None,
    notes: Sequence[tuple[str, int, bytes]] = (),
    elf_class: int = 64,
    machine: int = 62,
) -> bytes:
    """An ELF executable (little-endian) with the given dynamic entries and notes."""
    wide = elf_class == 64
    ehsize, phentsize = (64, 56) if wide else (52, 32)
    dynamic = bool(needed or rpath or runpath)
    n_ph = 1 + (interpreter is not None) + dynamic + bool(notes)
    body_at = ehsize + phentsize * n_ph

    body = bytearray()

    def place(blob: bytes, align: int = 8) -> int:
        body.extend(b"\0" * (-(body_at + len(body)) % align))
        offset = body_at + len(body)
        body.extend(blob)
        return offset

    segments: list[tuple[int, int, int]] = []  # (type, offset, size)
    if interpreter is not None:
        blob = interpreter.encode() + b"\0"
        segments.append((PT_INTERP, place(blob), len(blob)))
    if dynamic:
        strtab = bytearray(b"\0")
        entries: list[tuple[int, int]] = []
        for tag, values in ((DT_NEEDED, needed), (DT_RPATH, rpath), (DT_RUNPATH, runpath)):
            for value in values if tag == DT_NEEDED else ([":".join(values)] if values else []):
                entries.append((tag, len(strtab)))
                strtab.extend(value.encode() + b"\0")
        strtab_at = place(bytes(strtab))
        entries.append((DT_STRTAB, BASE + strtab_at))
        entries.append((0, 0))
        fmt = "<qQ" if wide else "<iI"
        blob = b"".join(struct.pack(fmt, tag, value) for tag, value in entries)
        segments.append((PT_DYNAMIC, place(blob), len(blob)))
    if notes:
        blob = b""
        for name, n_type, desc in notes:
            raw_name = name.encode() + b"\0"
            blob += struct.pack("<III", len(raw_name), len(desc), n_type)
            blob += raw_name + b"\0" * (-len(raw_name) % 4) + desc + b"\0" * (-len(desc) % 4)
        segments.append((PT_NOTE, place(blob, 4), len(blob)))

    total = body_at + len(body)
    phdrs = b""
    for p_type, offset, size in [(PT_LOAD, 0, total), *segments]:
        if wide:
            phdrs += struct.pack(
                "<IIQQQQQQ", p_type, 5, offset, BASE + offset, BASE + offset, size, size, 4
            )
        else:
            phdrs += struct.pack(
                "<IIIIIIII", p_type, offset, BASE + offset, BASE + offset, size, size, 5, 4
            )
    ident = b"\x7fELF" + bytes([2 if wide else 1, 1, 1, 0]) + b"\0" * 8
    if wide:
        header = ident + struct.pack(
            "<HHIQQQIHHHHHH", 2, machine, 1, BASE, ehsize, 0, 0, ehsize, phentsize, n_ph, 0, 0, 0
        )
    else:
        header = ident + struct.pack(
            "<HHIIIIIHHHHHH", 2, machine, 1, BASE, ehsize, 0, 0, ehsize, phentsize, n_ph, 0, 0, 0
        )
    return header + phdrs + bytes(body)
