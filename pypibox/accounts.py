"""The server's view of the accounts: hot reload of the htpasswd file and password checks."""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path

import bcrypt

from . import htpasswd
from .fsutil import file_stamp

log = logging.getLogger("pypibox.accounts")


class Accounts:
    """Checks user/password pairs against an htpasswd file that may change while we run.

    The file is looked at (one ``stat``) at most every ``recheck`` seconds. A file that is
    missing, unreadable, unparsable or empty keeps the last good accounts; entries that
    are not bcrypt can never log in. Verified credentials are remembered under an HMAC
    with a per-process random key, never as plain text, and forgotten when the file changes.
    """

    def __init__(self, path: Path, recheck: float = 0.5, cache_size: int = 1024,
                 cache_ttl: float = 600.0) -> None:
        self.path = path
        self.recheck = recheck
        self.cache_size = cache_size
        self.cache_ttl = cache_ttl
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self._hashes: dict[str, bytes] = {}
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(12))
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self.generation = 0
        self._load(initial=True)

    def after_fork(self) -> None:
        """In a new worker: its own lock, key and cache, and a fresh look at the file.

        The worker starts from the accounts its parent loaded, so a file that is broken
        when a worker (re)starts still leaves the last good accounts in force.
        """
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)
        self._cache = OrderedDict()
        self._next_check = 0.0

    # -- loading -----------------------------------------------------------------------
    def _load(self, initial: bool = False) -> None:
        stamp = file_stamp(self.path)
        if stamp is not None and stamp == self._stamp:
            return
        try:
            entries = htpasswd.read(self.path)
            if not any(e.is_bcrypt for e in entries):
                raise htpasswd.HtpasswdError(f"{self.path}: has no users with a bcrypt hash")
            cut = [e.user for e in entries if e.kind == "malformed bcrypt"]
            if cut:
                raise htpasswd.HtpasswdError(
                    f"{self.path}: the hash of {', '.join(cut)} is cut short (half-written file?)")
        except htpasswd.HtpasswdError as exc:
            if initial:
                raise
            if stamp != self._stamp:
                log.error("keeping the last good accounts: %s", exc)
            self._stamp = stamp
            return
        weak = htpasswd.weak_entries(entries)
        if weak:
            log.error(
                "%s: users without a bcrypt hash cannot log in: %s",
                self.path, ", ".join(e.user for e in weak),
            )
        good = [e for e in entries if e.is_bcrypt]
        self._hashes = {e.user: e.hash.encode("ascii") for e in good}
        if good:
            # Unknown users are checked against a dummy of the same cost, so that the
            # time of a refusal does not tell which user names exist.
            cost = max(int(e.hash[4:6]) for e in good)
            self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        self._cache.clear()
        self._stamp = stamp
        self.generation += 1
        if not initial:
            log.info("accounts reloaded from %s: %d users", self.path, len(self._hashes))

    def refresh(self) -> None:
        """Reload the file if it changed since the last look (rate limited)."""
        now = time.monotonic()
        if now < self._next_check:
            return
        with self._lock:
            if now < self._next_check:
                return
            self._load()
            self._next_check = time.monotonic() + self.recheck

    def has_user(self, user: str) -> bool:
        """True if the user can log in now (no password is checked)."""
        self.refresh()
        return user in self._hashes

    # -- checking ----------------------------------------------------------------------
    def key(self, user: str, password: str) -> bytes:
        """The HMAC under which verified credentials are remembered (never the password)."""
        msg = (user.encode("utf-8", "surrogatepass") + b"\0"
               + password.encode("utf-8", "surrogatepass"))
        return hmac.digest(self._key, msg, "sha256")

    def is_cached(self, user: str, password: str) -> bool:
        """True if check() would say yes from its cache, with no bcrypt to run."""
        if not isinstance(user, str) or not isinstance(password, str):
            return False
        self.refresh()
        key = self.key(user, password)
        seen = self._cache.get(key)
        return seen is not None and time.monotonic() - seen < self.cache_ttl

    def check(self, user: str, password: str) -> bool:
        """True if the password is right for the user; never raises for odd input."""
        if not isinstance(user, str) or not isinstance(password, str):
            return False
        self.refresh()
        key = self.key(user, password)
        now = time.monotonic()
        generation = self.generation
        with self._lock:
            seen = self._cache.get(key)
            if seen is not None and now - seen < self.cache_ttl:
                self._cache.move_to_end(key)
                return True
        stored = self._hashes.get(user)
        try:
            secret = htpasswd.password_bytes(password)
        except UnicodeEncodeError:
            secret = b""
        try:
            ok = bcrypt.checkpw(secret, stored if stored is not None else self._dummy)
        except ValueError:
            ok = False
        ok = ok and stored is not None
        if ok:
            with self._lock:
                if generation == self.generation:
                    self._cache[key] = now
                    self._cache.move_to_end(key)
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return ok

    __call__ = check
