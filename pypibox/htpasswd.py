"""Reading, checking and writing Apache htpasswd files whose entries are bcrypt hashes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from passlib.hash import bcrypt as passlib_bcrypt

from .fsutil import replace_text

BCRYPT_RE = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
USER_RE = re.compile(r"^[^:\s]{1,255}$")
#: bcrypt reads at most 72 bytes of a password; Apache's htpasswd cuts there too.
BCRYPT_MAX_BYTES = 72


class HtpasswdError(ValueError):
    """An htpasswd file that cannot be used as it is; the message says what to do."""


@dataclass(frozen=True)
class Entry:
    """One ``user:hash`` line."""

    user: str
    hash: str

    @property
    def kind(self) -> str:
        """The hash scheme, as a person would name it."""
        return hash_kind(self.hash)

    @property
    def is_bcrypt(self) -> bool:
        """True for a well-formed ``$2y$``, ``$2b$`` or ``$2a$`` hash."""
        return BCRYPT_RE.match(self.hash) is not None


def hash_kind(value: str) -> str:
    """Name the scheme of an htpasswd hash (never returns the hash itself)."""
    if BCRYPT_RE.match(value):
        return "bcrypt"
    if value.startswith("$2"):
        return "malformed bcrypt"
    if value.startswith("$apr1$"):
        return "MD5 ($apr1$)"
    if value.startswith("{SHA}"):
        return "SHA-1 ({SHA})"
    if value.startswith(("$1$", "$5$", "$6$")):
        return "crypt " + value[:3]
    if re.match(r"^[./A-Za-z0-9]{13}$", value):
        return "DES crypt"
    return "plain text"


def parse(text: str, source: str = "htpasswd") -> list[Entry]:
    """Parse htpasswd text; raise HtpasswdError naming the first malformed line."""
    entries: list[Entry] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not USER_RE.match(user) or not hashed:
            raise HtpasswdError(f"{source}: line {number} is not of the form user:hash")
        if user in seen:
            continue  # Apache uses the first entry of a user; so do we.
        seen.add(user)
        entries.append(Entry(user, hashed))
    return entries


def read(path: Path) -> list[Entry]:
    """Read and parse an htpasswd file; raise HtpasswdError for every way it can be unusable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HtpasswdError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise HtpasswdError(f"{path}: is a directory, not an htpasswd file") from None
    except PermissionError:
        raise HtpasswdError(f"{path}: permission denied (the server cannot read it)") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HtpasswdError(f"{path}: not a text file") from None
    return parse(text, str(path))


def weak_entries(entries: list[Entry]) -> list[Entry]:
    """The entries that are not bcrypt hashes."""
    return [e for e in entries if not e.is_bcrypt]


def fix_command(path: Path | str, user: str) -> str:
    """The command that replaces a user's hash with a bcrypt one."""
    return f"htpasswd -B {path} {user}"


def validate(path: Path) -> list[Entry]:
    """Read a file and require at least one user and bcrypt everywhere; raise HtpasswdError."""
    entries = read(path)
    if not entries:
        raise HtpasswdError(
            f"{path}: has no users. Add one with: htpasswd -B {path} <username>"
            " (or: make -C auth adduser USER=<username>)"
        )
    weak = weak_entries(entries)
    if weak:
        lines = "\n".join(f"  {e.user}: {e.kind}; fix with: {fix_command(path, e.user)}"
                          for e in weak)
        raise HtpasswdError(f"{path}: these users do not have bcrypt hashes:\n{lines}")
    return entries


def password_bytes(password: str) -> bytes:
    """A password as bcrypt sees it: UTF-8, cut at 72 bytes as Apache's htpasswd does."""
    return password.encode("utf-8")[:BCRYPT_MAX_BYTES]


def make_hash(password: str, cost: int) -> str:
    """A ``$2y$`` bcrypt hash, the form Apache's ``htpasswd -B`` writes."""
    hashed: str = passlib_bcrypt.using(rounds=cost, ident="2y").hash(password_bytes(password))
    return hashed


def _render(entries: list[Entry]) -> str:
    return "".join(f"{e.user}:{e.hash}\n" for e in entries)


def write_atomic(path: Path, entries: list[Entry]) -> None:
    """Replace the file in one step, keeping its mode; a reader never sees half a file."""
    replace_text(path, _render(entries))


def set_user(path: Path, user: str, password: str, cost: int) -> bool:
    """Add or change a user; return True when the user is new. Creates the file if missing."""
    if not USER_RE.match(user):
        raise HtpasswdError(f"{user!r} is not a valid user name (no ':' or spaces)")
    entries = read(path) if path.exists() else []
    new = Entry(user, make_hash(password, cost))
    created = all(e.user != user for e in entries)
    entries = [new if e.user == user else e for e in entries]
    if created:
        entries.append(new)
    write_atomic(path, entries)
    return created


def delete_user(path: Path, user: str) -> None:
    """Remove a user; raise HtpasswdError if there is no such user."""
    entries = read(path)
    kept = [e for e in entries if e.user != user]
    if len(kept) == len(entries):
        raise HtpasswdError(f"{path}: no user named {user!r}")
    write_atomic(path, kept)
