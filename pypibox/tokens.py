"""API tokens (``PYPI_TOKENS``): a client sends one as the password of the user ``__token__``.

A token is ``pypibox-`` and 43 characters of 256 random bits. The file keeps, one token a
line, only its sha256 (so much entropy needs no slow hash), with a name, its user, the
projects it is limited to, its expiry and its creation time::

    # name   user  projects         expires               created               hash
    ci-web   bob   acme-web         2026-03-01T00:00:00Z  2025-12-01T14:00:00Z  sha256:9f86...

The server reads the file like the roles file (reloaded within half a second of a change,
a broken file keeps the last good tokens). When a token was last used is kept in the
packages volume (``.pypibox/tokens-used.json``), never in the read-only accounts volume.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

from . import hotfile
from .fsutil import replace_text
from .messages import Identity
from .roles import normalize

log = logging.getLogger("pypibox.tokens")

PREFIX = "pypibox-"
SECRET_RE = re.compile(r"^pypibox-[A-Za-z0-9_-]{43}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
USER_RE = re.compile(r"^[^:\s#]{1,255}$")
PROJECT_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
USED_NAME = "tokens-used.json"
#: A process writes a token's last use at most this often (seconds).
USE_INTERVAL = 60.0
HEADER = """\
# pypibox API tokens (PYPI_TOKENS), written by `python -m pypibox token create`.
# Only a hash of each token is kept here; the token itself was shown once, when made.
# name user projects(* = all) expires(or never) created hash
"""
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TokensError(hotfile.FileError):
    """A tokens file that cannot be used, or a token operation that cannot be done."""


def iso(moment: float) -> str:
    """A Unix time as ``2025-12-01T14:00:00Z``."""
    return datetime.datetime.fromtimestamp(int(moment), datetime.UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> float:
    """``2025-12-01T14:00:00Z`` (or a date, ``2025-12-01``) as a Unix time; ValueError."""
    for fmt in (TIME_FORMAT, "%Y-%m-%d"):
        try:
            moment = datetime.datetime.strptime(text, fmt)
        except ValueError:
            continue
        return moment.replace(tzinfo=datetime.UTC).timestamp()
    raise ValueError(f"{text!r} is not a time like 2026-03-01 or 2026-03-01T12:00:00Z")


def parse_expiry(text: str, now: float | None = None) -> float | None:
    """``90d``, ``12h``, ``2w``, ``30m``, ``never`` or a date; None means it never expires."""
    text = text.strip().lower()
    if text in ("never", "none", "0"):
        return None
    now = time.time() if now is None else now
    match = re.fullmatch(r"(\d{1,6})([smhdw])", text)
    if match:
        return now + int(match.group(1)) * UNITS[match.group(2)]
    try:
        when = parse_time(text.upper() if "t" in text else text)
    except ValueError:
        raise ValueError(f"--expires {text!r}: give a duration (90d, 12h, 2w, 30m), a date"
                         " (2026-03-01) or never") from None
    if when <= now:
        raise ValueError(f"--expires {text!r} is in the past")
    return when


def digest(secret: str) -> str:
    """How the file stores a token."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """A new token: the prefix and 256 random bits."""
    return PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Token:
    """One line of the tokens file (never the secret)."""

    name: str
    user: str
    scope: frozenset[str] | None     # None: every project of the user
    expires: float | None            # None: never
    created: str
    hash: str

    def expired(self, now: float | None = None) -> bool:
        """True once the expiry time has passed."""
        return self.expires is not None and (time.time() if now is None else now) >= self.expires

    @property
    def scope_text(self) -> str:
        """The projects column: ``*`` or comma-separated names."""
        return "*" if self.scope is None else ",".join(sorted(self.scope))

    @property
    def expires_text(self) -> str:
        """The expiry column."""
        return "never" if self.expires is None else iso(self.expires)

    def render(self) -> str:
        """The token as a line of the file."""
        return (f"{self.name} {self.user} {self.scope_text} {self.expires_text}"
                f" {self.created} {self.hash}")

    def identity(self) -> Identity:
        """Who acts when this token is used."""
        return Identity(user=self.user, token=self.name, scope=self.scope)


@dataclass(frozen=True)
class TokenTable:
    """Every token of one version of the file."""

    tokens: tuple[Token, ...] = ()
    _by_hash: dict[str, Token] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_hash", {tok.hash: tok for tok in self.tokens})

    def by_hash(self, hashed: str) -> Token | None:
        """The token with this hash, or None."""
        return self._by_hash.get(hashed)

    def by_name(self, name: str) -> Token | None:
        """The token of this name, or None."""
        return next((tok for tok in self.tokens if tok.name == name), None)


def parse(text: str, source: str = "tokens") -> TokenTable:
    """Parse a tokens file; raise TokensError naming the first line that is wrong."""
    tokens: list[Token] = []
    names: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}: line {number}"
        words = line.split()
        if len(words) != 6:
            raise TokensError(f"{where}: expected 6 fields (name user projects expires created"
                              f" hash), found {len(words)} (half-written file?)")
        name, user, projects, expires, created, hashed = words
        if not NAME_RE.match(name):
            raise TokensError(f"{where}: {name!r} is not a token name")
        if name in names:
            raise TokensError(f"{where}: a second token named {name}")
        if not USER_RE.match(user):
            raise TokensError(f"{where}: {user!r} is not a user name")
        scope: frozenset[str] | None = None
        if projects != "*":
            scope = frozenset(normalize(p) for p in projects.split(",") if p)
            if not scope or not all(PROJECT_RE.match(p) for p in scope):
                raise TokensError(f"{where}: {projects!r} is not * or a list of project names")
        try:
            until = None if expires == "never" else parse_time(expires)
            parse_time(created)
        except ValueError as exc:
            raise TokensError(f"{where}: {exc}") from None
        if not DIGEST_RE.match(hashed):
            raise TokensError(f"{where}: the hash is not sha256:<64 hex digits>")
        names.add(name)
        tokens.append(Token(name, user, scope, until, created, hashed))
    return TokenTable(tuple(tokens))


def read(path: Path) -> TokenTable:
    """Read a tokens file; a missing file has no tokens; TokensError if it cannot be used."""
    text = hotfile.read_text(path)
    return TokenTable() if text is None else parse(text, str(path))


# -- changing the file (the command line) ------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path) -> t.Iterator[None]:
    """One writer of the tokens file at a time (a lock file beside it)."""
    lock = path.with_name(f".{path.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, table: TokenTable) -> None:
    replace_text(path, HEADER + "".join(tok.render() + "\n" for tok in table.tokens))


def create(path: Path, user: str, projects: t.Iterable[str] = (), expires: float | None = None,
           name: str | None = None, now: float | None = None) -> tuple[Token, str]:
    """Add a token to the file; return it and its secret (shown once, never stored)."""
    if not USER_RE.match(user) or user == "__token__":
        raise TokensError(f"{user!r} is not a user name")
    scope = frozenset(normalize(p) for p in projects) or None
    if scope is not None:
        bad = sorted(p for p in scope if not PROJECT_RE.match(p))
        if bad:
            raise TokensError(f"{bad[0]!r} is not a project name")
    now = time.time() if now is None else now
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        table = read(path)
        if name is None:
            name = f"{user}-{secrets.token_hex(3)}"
        if not NAME_RE.match(name):
            raise TokensError(f"{name!r} is not a token name (letters, digits, . _ -;"
                              " at most 64)")
        if table.by_name(name) is not None:
            raise TokensError(f"{path}: there is a token named {name} already; revoke it or"
                              " choose another --name")
        secret = new_secret()
        token = Token(name, user, scope, expires, iso(now), digest(secret))
        _write(path, TokenTable(table.tokens + (token,)))
    return token, secret


def revoke(path: Path, name: str) -> Token:
    """Remove a token from the file; TokensError if there is none of that name."""
    with _locked(path):
        table = read(path)
        token = table.by_name(name)
        if token is None:
            known = ", ".join(tok.name for tok in table.tokens) or "none"
            raise TokensError(f"{path}: no token named {name} (tokens: {known})")
        _write(path, TokenTable(tuple(tok for tok in table.tokens if tok.name != name)))
    return token


# -- last use (packages volume) -----------------------------------------------------------
def _use_key(token: Token) -> str:
    return f"{token.name} {token.created}"


class TokenUse:
    """When each token was last used, in ``<packages>/.pypibox/tokens-used.json``.

    Written at most every ``interval`` seconds per token and process, merged under a lock
    with what other processes wrote. Losing the file loses only these times.
    """

    def __init__(self, state_dir: Path, interval: float = USE_INTERVAL) -> None:
        self.path = Path(state_dir) / USED_NAME
        self.interval = interval
        self._written: dict[str, float] = {}
        self._lock = threading.Lock()
        self._warned = False

    def note(self, token: Token) -> None:
        """Remember that the token was used now (cheap when it was noted recently)."""
        key = _use_key(token)
        now = time.monotonic()
        if now - self._written.get(key, -self.interval) < self.interval:
            return
        if not self._lock.acquire(blocking=False):
            return  # another thread is writing; this use falls in the same minute
        try:
            self._written[key] = now
            self._merge({key: iso(time.time())})
        finally:
            self._lock.release()

    def _merge(self, update: dict[str, str]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                         0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                data = self.read()
                data.update(update)
                tmp = self.path.with_name(f".{USED_NAME}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data, indent=0, sort_keys=True), encoding="utf-8")
                os.replace(tmp, self.path)
            finally:
                os.close(fd)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot record when tokens were used in %s: %s", self.path,
                            exc.strerror)

    def read(self) -> dict[str, str]:
        """``{"name created": last use}`` as stored (empty when missing or unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def last_used(self, token: Token) -> str | None:
        """When the token was last used, or None if never (or not known)."""
        return self.read().get(_use_key(token))


class Tokens(hotfile.HotFile[TokenTable]):
    """The tokens file of a running server, reloaded when it changes.

    ``user_exists`` (the accounts) makes the tokens of a deleted account useless at once;
    ``usage`` records last use in the packages volume.
    """

    def __init__(self, path: Path, recheck: float = 0.5,
                 user_exists: t.Callable[[str], bool] | None = None,
                 usage: TokenUse | None = None) -> None:
        super().__init__(path, parse, TokenTable(), "tokens", recheck)
        self.user_exists = user_exists
        self.usage = usage

    def find(self, secret: str) -> Token | None:
        """The token line of a secret, whatever its state (expired tokens too)."""
        if not isinstance(secret, str) or not SECRET_RE.match(secret):
            return None
        # A look at the file every time (a stat; read only if it changed): a token made or
        # revoked a moment ago counts at once, in every worker.
        return self.refresh(force=True).by_hash(digest(secret))

    def check(self, secret: str) -> Identity | None:
        """The identity a token stands for; None if it is unknown, revoked or expired.

        One sha256 and a dictionary look-up: no thread needed.
        """
        token = self.find(secret)
        if token is None or token.expired():
            return None
        if self.user_exists is not None and not self.user_exists(token.user):
            return None
        if self.usage is not None:
            self.usage.note(token)
        return token.identity()
