"""The server's configuration, read from ``PYPI_*`` environment variables in one place."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

ACTIONS = ("update", "download", "list")

#: Every variable, its default and what it means; README's table is made from this.
DEFAULTS: dict[str, tuple[str, str]] = {
    "PYPI_HOST": ("0.0.0.0", "address to listen on"),
    "PYPI_PORT": ("8080", "port to listen on"),
    "PYPI_PACKAGES_DIR": ("/data/packages", "directory holding the packages (read/write)"),
    "PYPI_HTPASSWD": ("/data/auth/htpasswd", "Apache htpasswd file with bcrypt hashes (read only)"),
    "PYPI_ROLES": ("/data/auth/roles", ("administrators and rights given in advance to"
                                        " name patterns (read only; missing: none)")),
    "PYPI_TOKENS": ("/data/auth/tokens", ("API tokens: only their hashes, with user, projects"
                                          " and expiry (read only; missing: none)")),
    "PYPI_AUTHENTICATE": ("update", "actions that need a password: any of update, download, list"),
    "PYPI_OVERWRITE": ("off", "let uploads replace files and reuse deleted names (on/off; unsafe)"),
    "PYPI_FALLBACK": ("on", ("projects this index does not hold: on (redirect), off (404) or"
                       " cache (served from a cache of PYPI_UPSTREAM)")),
    "PYPI_FALLBACK_URL": ("https://pypi.org/simple/", "where unknown projects are redirected"),
    "PYPI_UPSTREAM": ("https://pypi.org/simple/", ("the index PYPI_FALLBACK=cache caches (may"
                       " carry user:password@)")),
    "PYPI_UPSTREAM_NETRC": ("", ("netrc file with the upstream's credentials (default: $NETRC"
                             " or ~/.netrc when present)")),
    "PYPI_UPSTREAM_TTL": ("10m", "how long a cached upstream page is used before revalidation"),
    "PYPI_UPSTREAM_TIMEOUT": ("15s", ("longest wait for the upstream (a page in all; each read"
                               " of a file)")),
    "PYPI_UPSTREAM_MIN_AGE": ("off", "hide upstream files younger than this (e.g. 3d)"),
    "PYPI_UPSTREAM_MIN_AGE_EXEMPT": ("", ("file of project names exempt from the minimum age"
                                      " (default: min-age-exempt beside PYPI_HTPASSWD)")),
    "PYPI_UPSTREAM_OFFLINE": ("off", "serve only what is cached, never call the upstream"),
    "PYPI_CACHE_MAX_SIZE": ("10G", "most disk space for cached upstream files (LRU eviction)"),
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
    roles: Path
    tokens: Path
    authenticate: tuple[str, ...]
    overwrite: bool
    fallback: str                 # "on" (redirect), "off" (404) or "cache"
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
    upstream: str = field(default="https://pypi.org/simple/", repr=False)  # may hold a password
    upstream_netrc: Path | None = None
    upstream_ttl: float = 600.0
    upstream_timeout: float = 15.0
    upstream_min_age: float = 0.0     # seconds; 0 is off
    upstream_min_age_exempt: Path = Path("/data/auth/min-age-exempt")
    upstream_offline: bool = False
    cache_max_size: int = 10 * 1024**3

    @property
    def redirects(self) -> bool:
        """True when unknown projects are redirected to PYPI_FALLBACK_URL."""
        return self.fallback == "on"

    @property
    def caches(self) -> bool:
        """True when unknown projects are served from the cache of PYPI_UPSTREAM."""
        return self.fallback == "cache"

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
            roles=_path("PYPI_ROLES", get("PYPI_ROLES")),
            tokens=_path("PYPI_TOKENS", get("PYPI_TOKENS")),
            authenticate=_actions(get("PYPI_AUTHENTICATE")),
            overwrite=_bool("PYPI_OVERWRITE", get("PYPI_OVERWRITE")),
            fallback=_fallback(get("PYPI_FALLBACK")),
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
            upstream=_url("PYPI_UPSTREAM", get("PYPI_UPSTREAM")),
            upstream_netrc=_netrc(get("PYPI_UPSTREAM_NETRC"), env),
            upstream_ttl=_duration("PYPI_UPSTREAM_TTL", get("PYPI_UPSTREAM_TTL")),
            upstream_timeout=_duration("PYPI_UPSTREAM_TIMEOUT", get("PYPI_UPSTREAM_TIMEOUT"),
                                       positive=True),
            upstream_min_age=_duration("PYPI_UPSTREAM_MIN_AGE", get("PYPI_UPSTREAM_MIN_AGE")),
            upstream_min_age_exempt=Path(
                get("PYPI_UPSTREAM_MIN_AGE_EXEMPT")
                or Path(get("PYPI_HTPASSWD")).expanduser().parent / "min-age-exempt"
            ).expanduser(),
            upstream_offline=_bool("PYPI_UPSTREAM_OFFLINE", get("PYPI_UPSTREAM_OFFLINE")),
            cache_max_size=_size("PYPI_CACHE_MAX_SIZE", get("PYPI_CACHE_MAX_SIZE")),
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


def _path(name: str, raw: str) -> Path:
    if not raw:
        raise ConfigError(f"{name}={raw!r} is empty: give the path of a file (it need not exist)")
    return Path(raw).expanduser()


def _bool(name: str, raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} must be on or off")


def _fallback(raw: str) -> str:
    low = raw.lower()
    if low == "cache":
        return "cache"
    try:
        return "on" if _bool("PYPI_FALLBACK", low) else "off"
    except ConfigError:
        raise ConfigError(f"PYPI_FALLBACK={raw!r} must be on, off or cache") from None


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(name: str, raw: str, positive: bool = False) -> float:
    """Seconds of ``10m``, ``3d``, ``1.5h``, ``30`` (seconds); ``off`` or ``0`` is 0."""
    low = raw.lower()
    if low in _FALSE and not positive:
        return 0.0
    unit = low[-1:] if low[-1:] in _DURATION_UNITS and low[-1:] else ""
    try:
        value = float(low[: len(low) - len(unit)])
    except ValueError:
        value = -1.0
    if not (0 <= value < 1e9) or (positive and value == 0) or math.isnan(value):
        need = "a positive duration" if positive else "a duration or off"
        raise ConfigError(f"{name}={raw!r} must be {need}, such as 30s, 10m, 2h or 3d")
    return value * _DURATION_UNITS[unit]


def _netrc(raw: str, env: Mapping[str, str]) -> Path | None:
    """The netrc file to read: the variable, else $NETRC, else ~/.netrc if it exists."""
    if raw:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ConfigError(f"PYPI_UPSTREAM_NETRC={raw!r} is not a readable file")
        return path
    default = env.get("NETRC") or os.path.join(env.get("HOME") or "~", ".netrc")
    path = Path(default).expanduser()
    return path if path.is_file() else None


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


def _url(name: str, raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        shown = raw if "@" not in raw else "<hidden: it may hold a password>"
        raise ConfigError(f"{name}={shown!r} must be an http:// or https:// URL")
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
