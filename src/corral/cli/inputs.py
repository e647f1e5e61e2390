"""Option values that need more than Typer's parsing: sizes, SSH keys, user-data, disk lists.

Each function turns what the user typed into what the API wants, or raises typer.BadParameter
(exit status 2, the option named) saying what is wrong and what to type instead. Only syntax is
checked here; whether a pool, volume or image exists is the server's to say.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import typer

from corral.errors import InvalidInput
from corral.model import parse_size
from corral.model.instance import MAX_USER_DATA_BYTES
from corral.model.storage import InstanceDisk

# The key types OpenSSH writes into .pub files (including FIDO `sk-` keys and certificates).
_KEY_TYPE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)(@openssh\.com)?$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,3}$")
_MAX_KEY_FILE_BYTES = 1024 * 1024


def size(text: str, option: str) -> int:
    """`2G`, `512M`, `1.5T` (bytes when bare) as bytes, or a usage error naming `option`."""
    try:
        return parse_size(text, field="size")
    except InvalidInput as err:
        raise typer.BadParameter(err.message, param_hint=f"'{option}'") from None


class SizeChange(NamedTuple):
    """A resize request: an absolute size, or (`relative`) bytes to add to the current one."""

    size_bytes: int
    relative: bool


def size_change(text: str) -> SizeChange:
    """`4G` (grow to 4 GiB) or `+1G` (grow by 1 GiB); shrinking is refused by design."""
    stripped = text.strip()
    if stripped.startswith("-"):
        raise typer.BadParameter(
            f"{text!r} would shrink the volume; volumes only grow (give a larger size or +SIZE)",
            param_hint="'SIZE'",
        )
    relative = stripped.startswith("+")
    amount = size(stripped.removeprefix("+"), "SIZE")
    if amount <= 0:
        raise typer.BadParameter(
            f"{text!r} changes nothing; give e.g. 20G or +1G", param_hint="'SIZE'"
        )
    return SizeChange(amount, relative)


def ssh_keys(values: Iterable[str]) -> list[str]:
    """Public keys from `--ssh-key` values: a key itself, or `@PATH` of a .pub/authorized_keys
    file (`~` expanded; blank and `#` lines skipped). A private key is refused, never sent."""
    keys: list[str] = []
    for value in values:
        if value.startswith("@"):
            keys.extend(_keys_from_file(value[1:]))
            continue
        key = value.strip()
        if not _is_public_key(key):
            hint = ""
            if Path(key).expanduser().is_file():
                hint = f"; to read the file, write @{key}"
            raise typer.BadParameter(
                f"{_short(key)} is not an SSH public key (e.g. 'ssh-ed25519 AAAA... me@host')"
                f"{hint}",
                param_hint="'--ssh-key'",
            )
        keys.append(key)
    return keys


def _keys_from_file(raw_path: str) -> list[str]:
    path = Path(raw_path).expanduser()
    data = _read_bytes(path, "'--ssh-key'", limit=_MAX_KEY_FILE_BYTES)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise typer.BadParameter(f"{path} is too large for a key file", param_hint="'--ssh-key'")
    text = _utf8(data, str(path), "'--ssh-key'")
    if "PRIVATE KEY" in text:
        raise typer.BadParameter(
            f"{path} holds a private key; give the public one (e.g. @{path}.pub)",
            param_hint="'--ssh-key'",
        )
    lines = [line.strip() for line in text.splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    bad = next((line for line in keys if not _is_public_key(line)), None)
    if not keys or bad is not None:
        what = "no SSH public key" if not keys else f"a line that is not a key: {_short(bad)}"
        raise typer.BadParameter(f"{path} has {what}", param_hint="'--ssh-key'")
    return keys


def _is_public_key(line: str) -> bool:
    # authorized_keys lines may start with options (`from="..." ssh-ed25519 AAAA...`).
    fields = line.split()
    return any(
        _KEY_TYPE.match(kind) is not None and _BASE64.match(blob) is not None
        for kind, blob in pairwise(fields)
    )


def _short(text: str | None) -> str:
    text = text or ""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def user_data(raw_path: str) -> str:
    """The cloud-init user-data in file `raw_path` (`-`: stdin), at most 64 KiB of UTF-8."""
    option = "'--user-data'"
    if raw_path == "-":
        where, data = "stdin", sys.stdin.buffer.read(MAX_USER_DATA_BYTES + 1)
    else:
        path = Path(raw_path).expanduser()
        where, data = str(path), _read_bytes(path, option, limit=MAX_USER_DATA_BYTES)
    if len(data) > MAX_USER_DATA_BYTES:
        raise typer.BadParameter(
            f"{where} is larger than {MAX_USER_DATA_BYTES // 1024} KiB, the most Corral puts in "
            "a cloud-init seed; keep user-data small and fetch the rest from inside the guest",
            param_hint=option,
        )
    return _utf8(data, where, option)


def _read_bytes(path: Path, option: str, *, limit: int) -> bytes:
    """Up to `limit + 1` bytes of `path` (one more than allowed, so the caller sees "too big")."""
    try:
        with path.open("rb") as file:
            return file.read(limit + 1)
    except OSError as err:
        reason = err.strerror or str(err)
        raise typer.BadParameter(f"cannot read {path}: {reason}", param_hint=option) from None


def _utf8(data: bytes, where: str, option: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{where} is not UTF-8 text", param_hint=option) from None


def disks(values: Iterable[str]) -> list[InstanceDisk]:
    """`--attach VOL` or `--attach VOL:ro` values as `spec.disks` entries, in the given order."""
    found: list[InstanceDisk] = []
    for value in values:
        volume, sep, mode = value.partition(":")
        if not volume or (sep and mode not in ("ro", "rw")):
            raise typer.BadParameter(
                f"{value!r} is not VOLUME or VOLUME:ro", param_hint="'--attach'"
            )
        # Built unvalidated on purpose: the server checks names and answers with the field.
        found.append(InstanceDisk.model_construct(volume=volume, read_only=mode == "ro"))
    return found
