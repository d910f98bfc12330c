"""The server's configuration, read from ``PYPI_*`` environment variables in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
    "PYPI_THREADS": ("8", "threads per worker for slow work: password checks, pages to render"),
    "PYPI_MAX_UPLOAD_SIZE": ("100M", "largest accepted upload (bytes, or with K/M/G)"),
    "PYPI_MAX_UPLOADS": ("8", "uploads received at once per worker; more get 503"),
    "PYPI_MAX_CONNECTIONS": ("1000", "open connections per worker; more wait to be accepted"),
    "PYPI_HEADER_TIMEOUT": ("20", "seconds a request's line and headers may take"),
    "PYPI_KEEPALIVE_TIMEOUT": ("15", "seconds an idle connection is kept open"),
    "PYPI_BODY_TIMEOUT": ("10", "seconds in which a request body must bring 16 KiB (or the rest)"),
    "PYPI_AUTH_RATE": ("2", "failed password checks per second per address and per user name"),
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
    max_uploads: int
    max_connections: int
    header_timeout: float
    keepalive_timeout: float
    body_timeout: float
    auth_rate: float
    bcrypt_cost: int
    log_level: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
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
            max_uploads=_int("PYPI_MAX_UPLOADS", get("PYPI_MAX_UPLOADS"), 1, 1024),
            max_connections=_int("PYPI_MAX_CONNECTIONS", get("PYPI_MAX_CONNECTIONS"), 8, 1 << 20),
            header_timeout=_seconds("PYPI_HEADER_TIMEOUT", get("PYPI_HEADER_TIMEOUT")),
            keepalive_timeout=_seconds("PYPI_KEEPALIVE_TIMEOUT", get("PYPI_KEEPALIVE_TIMEOUT")),
            body_timeout=_seconds("PYPI_BODY_TIMEOUT", get("PYPI_BODY_TIMEOUT")),
            auth_rate=_number("PYPI_AUTH_RATE", get("PYPI_AUTH_RATE"), 0.01, 1000.0),
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


def _number(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r} is out of range ({low:g} to {high:g})")
    return value


def _seconds(name: str, raw: str) -> float:
    """A duration in seconds (a plain or decimal number, 0.1 to one day)."""
    return _number(name, raw.lower().removesuffix("s"), 0.1, 86400.0)


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
        raise ConfigError(f"PYPI_AUTHENTICATE={raw!r} must include update: uploads always "
                          "need a password")
    return tuple(a for a in ACTIONS if a in parts)
