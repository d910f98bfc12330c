"""The server's configuration, read from ``PYPI_*`` environment variables in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

ACTIONS = ("update", "download", "list")

#: Every variable, its default and what it means; README's table is made from this.
DEFAULTS: dict[str, tuple[str, str]] = {
    "PYPI_HOST": ("0.0.0.0", "address to listen on"),
    "PYPI_PORT": ("8080", "port to listen on"),
    "PYPI_PACKAGES_DIR": ("/data/packages", "directory holding the packages (read/write)"),
    "PYPI_HTPASSWD": ("/data/auth/htpasswd", "Apache htpasswd file with bcrypt hashes (read only)"),
    "PYPI_AUTHENTICATE": ("update", "actions that need a password: any of update, download, list"),
    "PYPI_OVERWRITE": ("off", "allow an upload to replace an existing file (on/off)"),
    "PYPI_FALLBACK": ("on", "redirect unknown projects to the public index (on/off)"),
    "PYPI_FALLBACK_URL": ("https://pypi.org/simple/", "where unknown projects are redirected"),
    "PYPI_WORKERS": ("2", "gunicorn worker processes"),
    "PYPI_THREADS": ("8", "threads per worker for requests that may wait (password checks, uploads)"),
    "PYPI_MAX_UPLOAD_SIZE": ("100M", "largest accepted upload (bytes, or with K/M/G)"),
    "PYPI_BCRYPT_COST": ("12", "bcrypt cost for passwords set by `python -m pypibox adduser`"),
    "PYPI_LOG_LEVEL": ("info", "debug, info, warning or error"),
}

_TRUE = {"1", "on", "yes", "true"}
_FALSE = {"0", "off", "no", "false", ""}


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one server process."""

    host: str
    port: int
    packages_dir: Path
    htpasswd: Path
    authenticate: tuple[str, ...]
    overwrite: bool
    fallback: bool
    fallback_url: str
    workers: int
    threads: int
    max_upload_size: int
    bcrypt_cost: int
    log_level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read and validate every ``PYPI_*`` variable; raise ConfigError on a bad value."""
        env = os.environ if env is None else env

        def get(name: str) -> str:
            return env.get(name, DEFAULTS[name][0]).strip()

        return cls(
            host=get("PYPI_HOST") or "0.0.0.0",
            port=_int("PYPI_PORT", get("PYPI_PORT"), 1, 65535),
            packages_dir=Path(get("PYPI_PACKAGES_DIR")).expanduser(),
            htpasswd=Path(get("PYPI_HTPASSWD")).expanduser(),
            authenticate=_actions(get("PYPI_AUTHENTICATE")),
            overwrite=_bool("PYPI_OVERWRITE", get("PYPI_OVERWRITE")),
            fallback=_bool("PYPI_FALLBACK", get("PYPI_FALLBACK")),
            fallback_url=_url("PYPI_FALLBACK_URL", get("PYPI_FALLBACK_URL")),
            workers=_int("PYPI_WORKERS", get("PYPI_WORKERS"), 1, 64),
            threads=_int("PYPI_THREADS", get("PYPI_THREADS"), 1, 256),
            max_upload_size=_size("PYPI_MAX_UPLOAD_SIZE", get("PYPI_MAX_UPLOAD_SIZE")),
            bcrypt_cost=_int("PYPI_BCRYPT_COST", get("PYPI_BCRYPT_COST"), 4, 31),
            log_level=_choice("PYPI_LOG_LEVEL", get("PYPI_LOG_LEVEL").lower(),
                              ("debug", "info", "warning", "error")),
        )


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} is out of range ({low} to {high})")
    return value


def _bool(name: str, raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} must be on or off")


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


def _url(name: str, raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name}={raw!r} must be an http:// or https:// URL")
    return raw


def _size(name: str, raw: str) -> int:
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    text = raw.upper().removesuffix("B")
    unit = text[-1:] if text[-1:] in ("K", "M", "G") else ""
    number = text[: len(text) - len(unit)]
    if not number.isdigit() or int(number) == 0:
        raise ConfigError(f"{name}={raw!r} must be a positive size such as 100M")
    return int(number) * units[unit]


def _actions(raw: str) -> tuple[str, ...]:
    parts = [p.strip().lower() for p in raw.replace(" ", ",").split(",") if p.strip()]
    bad = [p for p in parts if p not in ACTIONS]
    if bad or not parts:
        raise ConfigError(
            f"PYPI_AUTHENTICATE={raw!r} must list one or more of {', '.join(ACTIONS)} "
            "(comma separated)"
        )
    if "update" not in parts:
        raise ConfigError(f"PYPI_AUTHENTICATE={raw!r} must include update: uploads always need a password")
    return tuple(a for a in ACTIONS if a in parts)
