"""A small text file of the accounts volume, parsed again whenever it changes on disk.

Used for the roles and tokens files: a missing file means "nothing in it"; a file that
cannot be read or parsed keeps the last good content and logs why, once per change.
"""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from pathlib import Path

from .fsutil import file_stamp

log = logging.getLogger("pypibox.hotfile")

T = t.TypeVar("T")
#: Largest file read (the files are a few lines a person or a tool writes).
MAX_BYTES = 4 << 20


class FileError(ValueError):
    """A file that cannot be used as it is; the message names the file and the line."""


def read_text(path: Path) -> str | None:
    """The file's text; None if it does not exist; FileError for every other problem."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise FileError(f"{path}: is a directory, not a file") from None
    except PermissionError:
        raise FileError(f"{path}: permission denied (the server cannot read it)") from None
    except OSError as exc:
        raise FileError(f"{path}: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise FileError(f"{path}: larger than {MAX_BYTES >> 20} MiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FileError(f"{path}: not a UTF-8 text file") from None


class HotFile(t.Generic[T]):
    """The parsed content of ``path``, looked at (one ``stat``) at most every ``recheck`` s."""

    def __init__(self, path: Path, parse: t.Callable[[str, str], T], empty: T, what: str,
                 recheck: float = 0.5) -> None:
        self.path = Path(path)
        self.what = what
        self.recheck = recheck
        self._parse = parse
        self._empty = empty
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None | str = "unread"
        self._next_check = 0.0
        self.value: T = empty
        self.generation = 0
        self.error: str | None = None
        #: Called with the new value after each successful (re)load, under no lock of ours.
        self.listeners: list[t.Callable[[T], None]] = []
        self.refresh(force=True)

    def after_fork(self) -> None:
        """In a new worker process: a fresh lock (the parent's may have been held)."""
        self._lock = threading.Lock()
        self._next_check = 0.0

    def refresh(self, force: bool = False) -> T:
        """Reload the file if it changed since the last look; return the current value."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return self.value
        changed = False
        with self._lock:
            if force or now >= self._next_check:
                changed = self._load()
                self._next_check = time.monotonic() + self.recheck
        if changed:
            for listener in list(self.listeners):
                listener(self.value)
        return self.value

    def get(self) -> T:
        """The current content (rate-limited look at the file first)."""
        return self.refresh()

    def _load(self) -> bool:
        stamp = file_stamp(self.path)
        if stamp is not None and stamp == self._stamp:
            return False
        try:
            text = read_text(self.path)
            value = self._empty if text is None else self._parse(text, str(self.path))
        except FileError as exc:
            if stamp != self._stamp:
                log.error("%s: keeping the last good %s: %s", self.what, self.what, exc)
            self._stamp = stamp
            self.error = str(exc)
            return False
        first = self._stamp == "unread"
        self.value = value
        self._stamp = stamp
        self.error = None
        self.generation += 1
        if not first:
            log.info("%s reloaded from %s", self.what, self.path)
        return True
