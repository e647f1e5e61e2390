"""Object names: one rule for instances, images, hosts, and whatever comes next.

Names end up in file paths, socket paths, tap names and DNS, so the rule is strict: lowercase
letters, digits and '-', starting with a letter, at most 63 characters (a DNS label).
"""

from __future__ import annotations

import re

from corral.errors import InvalidInput

MAX_NAME_LENGTH = 63
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]*$")


def name_problem(name: str) -> str | None:
    """Say what is wrong with `name`, or None when it is a valid object name."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "must not contain control characters"
    if any(c.isspace() for c in name):
        return "must not contain whitespace"
    if "/" in name or ".." in name or "\\" in name:
        return "must not contain '/', '\\' or '..'"
    if not _NAME_RE.match(name):
        return "may use only lowercase letters, digits and '-', and must start with a letter"
    if name.endswith("-"):
        return "must not end with '-'"
    return None


def validate_name(name: str, field: str = "name") -> str:
    """Return `name` unchanged, or raise InvalidInput naming `field` and the rule it breaks."""
    problem = name_problem(name)
    if problem is not None:
        shown = repr(name) if len(name) <= 80 else repr(name[:80] + "...")
        raise InvalidInput(f"{field} {shown} {problem}", code="invalid_name", field=field)
    return name


def some_names(names: list[str], limit: int = 10) -> str:
    """`a, b, c` for an error message, cut after `limit` names with ` ...`."""
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")
