"""from_env: --url > CORRAL_URL > default; CORRAL_TOKEN > <data-dir>/token."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.client import AsyncCorralClient, CorralClient, resolve_settings
from corral.errors import InvalidInput


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("CORRAL_URL", "CORRAL_TOKEN", "CORRAL_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no stray token from the real home


def write_token(data_dir: Path, token: str) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "token").write_text(token + "\n")
    return data_dir


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        ("http://flag:1", "http://env:2", "http://flag:1"),
        (None, "http://env:2", "http://env:2"),
        (None, None, "http://127.0.0.1:8470"),
        ("10.0.0.5:9000", None, "http://10.0.0.5:9000"),
        ("https://corral.example/", None, "https://corral.example"),
    ],
)
def test_url_precedence_flag_then_env_then_default(
    monkeypatch: pytest.MonkeyPatch, flag: str | None, env: str | None, expected: str
) -> None:
    if env:
        monkeypatch.setenv("CORRAL_URL", env)
    assert resolve_settings(url=flag).url == expected


def test_ftp_url_is_refused_with_the_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        resolve_settings(url="ftp://x")
    assert caught.value.field == "url"


def test_env_token_beats_the_token_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data_dir = write_token(tmp_path / "data", "from-file")
    monkeypatch.setenv("CORRAL_TOKEN", "from-env")
    settings = resolve_settings(data_dir=data_dir)
    assert settings.token == "from-env"
    assert settings.token_source == "$CORRAL_TOKEN"


def test_token_file_in_data_dir_flag(tmp_path: Path) -> None:
    data_dir = write_token(tmp_path / "data", "from-file")
    settings = resolve_settings(data_dir=data_dir)
    assert settings.token == "from-file"
    assert settings.token_source == str(data_dir / "token")


def test_data_dir_flag_beats_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    flag_dir = write_token(tmp_path / "flag", "flag-token")
    env_dir = write_token(tmp_path / "env", "env-token")
    monkeypatch.setenv("CORRAL_DATA_DIR", str(env_dir))
    assert resolve_settings(data_dir=flag_dir).token == "flag-token"
    assert resolve_settings().token == "env-token"


def test_no_token_anywhere_is_none_and_says_where_it_looked(tmp_path: Path) -> None:
    settings = resolve_settings(data_dir=tmp_path / "empty")
    assert settings.token is None
    assert str(tmp_path / "empty" / "token") in settings.token_source


def test_both_clients_from_env_send_the_resolved_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = write_token(tmp_path / "data", "file-token")
    monkeypatch.setenv("CORRAL_URL", "http://env-host:8470")
    sync = CorralClient.from_env(data_dir=data_dir)
    aio = AsyncCorralClient.from_env(url="http://flag-host:1", data_dir=data_dir)
    try:
        assert sync.url == "http://env-host:8470"
        assert sync.aio.token == "file-token"
        assert aio.url == "http://flag-host:1"
        assert aio.token == "file-token"
        assert "file-token" not in repr(sync) and "file-token" not in repr(aio)
    finally:
        sync.close()
