"""Human sizes ("256M", "1G", "512MiB") to bytes and back; binary units, as QEMU means them."""

from __future__ import annotations

import re

from corral.errors import InvalidInput

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str, field: str = "size", default_unit: str = "") -> int:
    """Parse "256M" / "1.5G" / "1048576" into bytes; a bare number uses `default_unit`."""
    match = _SIZE_RE.match(text)
    if not match:
        raise InvalidInput(
            f"{field} {text!r} is not a size; use a number with an optional unit, like 256M or 2G",
            code="invalid_size",
            field=field,
        )
    number, unit = match.groups()
    unit = (unit or default_unit).upper()
    return int(float(number) * _UNITS[unit])


def format_size(n_bytes: int) -> str:
    """Render bytes compactly with a binary unit ("256M", "1.5G")."""
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit]
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n_bytes}B"
