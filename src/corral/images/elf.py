"""Just enough of ELF to copy a dynamic binary into an initramfs and to vet a PVH kernel.

We read the program headers (the loader's view), not section headers, because that is what
the dynamic loader and QEMU's PVH loader themselves use: PT_INTERP, PT_DYNAMIC, PT_NOTE.
No dependency on binutils: `readelf` is not on every host.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from corral.errors import ImageBuildError

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE = 1, 2, 3, 4
DT_NULL, DT_NEEDED, DT_STRTAB, DT_RPATH, DT_RUNPATH = 0, 1, 5, 15, 29

# Xen's ELF note that carries the 32-bit PVH entry point; QEMU boots an ELF kernel only with it.
XEN_NOTE_NAME = "Xen"
XEN_ELFNOTE_PHYS32_ENTRY = 18

EM_386, EM_X86_64, EM_AARCH64 = 3, 62, 183
# Debian's multiarch directory for each machine (where its shared libraries live).
MULTIARCH_TRIPLETS = {
    EM_X86_64: "x86_64-linux-gnu",
    EM_386: "i386-linux-gnu",
    EM_AARCH64: "aarch64-linux-gnu",
}


@dataclass(frozen=True)
class ElfNote:
    """One entry of a PT_NOTE segment."""

    name: str
    type: int
    desc: bytes


@dataclass(frozen=True)
class ElfInfo:
    """What the loader needs from an ELF file: its kind, interpreter, libraries and notes."""

    elf_class: int  # ELFCLASS32 or ELFCLASS64
    little_endian: bool
    machine: int
    elf_type: int
    interpreter: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    notes: tuple[ElfNote, ...]

    @property
    def has_pvh_entry(self) -> bool:
        """True when QEMU can boot this file directly (`-kernel vmlinux`) via PVH."""
        return any(
            n.name == XEN_NOTE_NAME and n.type == XEN_ELFNOTE_PHYS32_ENTRY for n in self.notes
        )

    def compatible_with(self, other: ElfInfo) -> bool:
        """True when the loader could map both into one process (same class and machine)."""
        return (self.elf_class, self.machine, self.little_endian) == (
            other.elf_class,
            other.machine,
            other.little_endian,
        )


@dataclass(frozen=True)
class _Segment:
    type: int
    offset: int
    vaddr: int
    filesz: int
    align: int


def is_elf(data: bytes) -> bool:
    """True when `data` starts with the ELF magic."""
    return data[:4] == ELF_MAGIC


def read_elf(path: Path) -> ElfInfo:
    """Parse the ELF file at `path`; ImageBuildError when it is not one."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageBuildError(f"cannot read {path}: {err}") from err
    try:
        return parse_elf(data)
    except ImageBuildError as err:
        raise ImageBuildError(f"{path}: {err.message}") from err


def parse_elf(data: bytes) -> ElfInfo:
    """Parse an ELF image held in memory (32/64-bit, either byte order)."""
    if not is_elf(data) or len(data) < 52:
        raise ImageBuildError("not an ELF file")
    elf_class, byte_order = data[4], data[5]
    if elf_class not in (ELFCLASS32, ELFCLASS64) or byte_order not in (ELFDATA2LSB, ELFDATA2MSB):
        raise ImageBuildError("unsupported ELF class or byte order")
    end = "<" if byte_order == ELFDATA2LSB else ">"
    try:
        if elf_class == ELFCLASS64:
            e_type, machine, _v, _entry, phoff = struct.unpack_from(end + "HHIQQ", data, 16)
            phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
        else:
            e_type, machine, _v, _entry, phoff = struct.unpack_from(end + "HHIII", data, 16)
            phentsize, phnum = struct.unpack_from(end + "HH", data, 42)
        segments = [
            _read_segment(data, phoff + i * phentsize, elf_class, end) for i in range(phnum)
        ]
        interp = _read_interp(data, segments)
        needed, rpath, runpath = _read_dynamic(data, segments, elf_class, end)
        notes = tuple(n for s in segments if s.type == PT_NOTE for n in _read_notes(data, s, end))
    except struct.error as err:
        raise ImageBuildError(f"truncated ELF file ({err})") from err
    return ElfInfo(
        elf_class=elf_class,
        little_endian=byte_order == ELFDATA2LSB,
        machine=machine,
        elf_type=e_type,
        interpreter=interp,
        needed=needed,
        rpath=rpath,
        runpath=runpath,
        notes=notes,
    )


def _read_segment(data: bytes, at: int, elf_class: int, end: str) -> _Segment:
    if elf_class == ELFCLASS64:
        p_type, _flags, offset, vaddr, _paddr, filesz, _memsz, align = struct.unpack_from(
            end + "IIQQQQQQ", data, at
        )
    else:
        p_type, offset, vaddr, _paddr, filesz, _memsz, _flags, align = struct.unpack_from(
            end + "IIIIIIII", data, at
        )
    return _Segment(p_type, offset, vaddr, filesz, align)


def _cstring(data: bytes, at: int) -> str:
    stop = data.find(b"\0", at)
    return data[at : stop if stop >= 0 else len(data)].decode("utf-8", errors="replace")


def _read_interp(data: bytes, segments: list[_Segment]) -> str | None:
    for seg in segments:
        if seg.type == PT_INTERP:
            return _cstring(data[seg.offset : seg.offset + seg.filesz], 0)
    return None


def _vaddr_to_offset(segments: list[_Segment], vaddr: int) -> int:
    """Map a virtual address to a file offset through the PT_LOAD segment that holds it."""
    for seg in segments:
        if seg.type == PT_LOAD and seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
            return seg.offset + (vaddr - seg.vaddr)
    raise ImageBuildError(f"address {vaddr:#x} is outside every loadable segment")


def _read_dynamic(
    data: bytes, segments: list[_Segment], elf_class: int, end: str
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    dynamic = next((s for s in segments if s.type == PT_DYNAMIC), None)
    if dynamic is None:
        return (), (), ()  # a static binary
    fmt, size = (end + "qQ", 16) if elf_class == ELFCLASS64 else (end + "iI", 8)
    entries: list[tuple[int, int]] = []
    for at in range(dynamic.offset, dynamic.offset + dynamic.filesz, size):
        tag, value = struct.unpack_from(fmt, data, at)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    strtab_addr = next((v for t, v in entries if t == DT_STRTAB), None)
    if strtab_addr is None:
        return (), (), ()
    strtab = _vaddr_to_offset(segments, strtab_addr)

    def strings(tag: int) -> list[str]:
        return [_cstring(data, strtab + v) for t, v in entries if t == tag]

    def paths(tag: int) -> tuple[str, ...]:
        return tuple(p for s in strings(tag) for p in s.split(":") if p)

    return tuple(strings(DT_NEEDED)), paths(DT_RPATH), paths(DT_RUNPATH)


def _read_notes(data: bytes, seg: _Segment, end: str) -> list[ElfNote]:
    align = 8 if seg.align == 8 else 4
    notes: list[ElfNote] = []
    at, stop = seg.offset, seg.offset + seg.filesz
    while at + 12 <= stop:
        namesz, descsz, n_type = struct.unpack_from(end + "III", data, at)
        name_at = at + 12
        desc_at = name_at + _round_up(namesz, align)
        name = data[name_at : name_at + namesz].rstrip(b"\0").decode("ascii", errors="replace")
        notes.append(ElfNote(name, n_type, bytes(data[desc_at : desc_at + descsz])))
        at = desc_at + _round_up(descsz, align)
    return notes


def _round_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)
