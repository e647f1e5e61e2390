"""Where Corral keeps things on a host: the data dir, the API token, the runtime dir.

Shared by the server (which creates them) and the CLI (which finds the token), so it sits at the
bottom of the layers next to errors.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

DATA_DIR_ENV = "CORRAL_DATA_DIR"
TOKEN_ENV = "CORRAL_TOKEN"
URL_ENV = "CORRAL_URL"
DEFAULT_LISTEN = "127.0.0.1:8470"
DEFAULT_URL = f"http://{DEFAULT_LISTEN}"
# Unix socket paths must fit in sun_path (108 bytes); keep room for "<name>/console.sock".
_MAX_RUNTIME_DIR_LEN = 30


def default_data_dir() -> Path:
    """`$CORRAL_DATA_DIR`, else /var/lib/corral as root, else ~/.local/share/corral."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/corral")
    return Path.home() / ".local" / "share" / "corral"


def token_path(data_dir: Path) -> Path:
    """The API token file inside a data dir."""
    return data_dir / "token"


def ensure_token(data_dir: Path) -> str:
    """Read the API token, creating it (mode 0600) on first start."""
    path = token_path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def read_token(data_dir: Path) -> str | None:
    """The token in a data dir, or None when there is none (or it is unreadable)."""
    try:
        return token_path(data_dir).read_text().strip() or None
    except OSError:
        return None


def runtime_dir_for(data_dir: Path) -> Path:
    """Where sockets and pid files of running guests live for this data dir.

    `<data-dir>/run` when that path is short enough for unix sockets; otherwise a short dir under
    /run/corral (root) or $XDG_RUNTIME_DIR named by a hash of the data dir, so two servers with
    different data dirs never share one.
    """
    resolved = data_dir.resolve()
    candidate = resolved / "run"
    if len(str(candidate)) <= _MAX_RUNTIME_DIR_LEN:
        return candidate
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    if os.geteuid() == 0:
        base = Path("/run/corral")
    else:
        base = Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / "corral"
    return base / digest
