"""Where the client finds its server and token: flags first, then the environment, then files.

URL: `--url` > `CORRAL_URL` > http://127.0.0.1:8470. Token: `CORRAL_TOKEN` > `<data-dir>/token`,
where the data dir is `--data-dir` > `CORRAL_DATA_DIR` > the platform default. The source of the
token is remembered so a 401 can say which token was rejected and where else to look.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corral import paths
from corral.errors import InvalidInput


@dataclass(frozen=True)
class ConnectionSettings:
    """A resolved server URL and token, plus where the token came from (never the token)."""

    url: str
    token: str | None
    token_source: str


def normalize_url(url: str) -> str:
    """`host:port` gets http://; a trailing slash goes. Anything but http(s) is refused."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https") or url.endswith("://"):
        raise InvalidInput(
            f"server URL {url!r} is not an http(s) URL; use e.g. --url http://127.0.0.1:8470",
            code="invalid_url",
            field="url",
        )
    return url


def resolve_settings(
    url: str | None = None,
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ConnectionSettings:
    """Apply the precedence rules above; `environ` defaults to os.environ (a seam for tests)."""
    env = os.environ if environ is None else environ
    chosen_url = normalize_url(url or env.get(paths.URL_ENV) or paths.DEFAULT_URL)
    env_token = env.get(paths.TOKEN_ENV, "").strip()
    if env_token:
        return ConnectionSettings(chosen_url, env_token, f"${paths.TOKEN_ENV}")
    if data_dir is None:
        env_dir = env.get(paths.DATA_DIR_ENV)
        data_dir = Path(env_dir) if env_dir else paths.default_data_dir()
    token_file = paths.token_path(data_dir)
    token = paths.read_token(data_dir)
    if token is not None:
        return ConnectionSettings(chosen_url, token, str(token_file))
    return ConnectionSettings(
        chosen_url, None, f"${paths.TOKEN_ENV} is unset and {token_file} is unreadable"
    )
