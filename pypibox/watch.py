"""Linux inotify through ctypes: which directory entries changed, without polling.

Works with glibc and musl (Alpine): the functions are looked up in the process's own libc.
``Inotify.open()`` returns None where the kernel or libc has no inotify; the caller then
polls directory mtimes instead.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
import typing as t
from dataclasses import dataclass

log = logging.getLogger("pypibox.watch")

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

#: What a watched directory reports: entries created, written, changed, moved or deleted.
DIR_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE
            | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW
            | IN_EXCL_UNLINK)
_HEADER = struct.Struct("iIII")


@dataclass(frozen=True, slots=True)
class Event:
    """One inotify event: the watch, what happened, and the entry's name (bytes) if any."""

    wd: int
    mask: int
    name: bytes


def _libc() -> t.Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for name in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch"):
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


class WatchLimit(OSError):
    """The kernel refused another watch (fs.inotify.max_user_watches)."""


class Inotify:
    """An inotify descriptor: add directory watches, read events."""

    def __init__(self, libc: t.Any, fd: int) -> None:
        self._libc = libc
        self.fd = fd

    @classmethod
    def open(cls) -> Inotify | None:
        """A new inotify instance, or None where there is none (logged once by the caller)."""
        libc = _libc()
        if libc is None:
            return None
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            log.debug("inotify_init1 failed: %s", os.strerror(ctypes.get_errno()))
            return None
        return cls(libc, fd)

    def add(self, path: str) -> int:
        """Watch a directory; its watch descriptor. WatchLimit when the kernel has no more."""
        wd = int(self._libc.inotify_add_watch(self.fd, os.fsencode(path), DIR_MASK))
        if wd < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:
                raise WatchLimit(err, "no more inotify watches (fs.inotify.max_user_watches)")
            raise OSError(err, os.strerror(err), path)
        return wd

    def remove(self, wd: int) -> None:
        """Stop watching (errors ignored: the directory may be gone already)."""
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self, timeout: float) -> list[Event]:
        """Events that arrive within ``timeout`` seconds (all that are queued, at once)."""
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if not ready:
            return []
        events = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            pos = 0
            while pos + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, pos)
                pos += _HEADER.size
                name = data[pos:pos + length].rstrip(b"\0")
                pos += length
                events.append(Event(wd, mask, name))
            if len(data) < (1 << 15):
                break
        return events

    def close(self) -> None:
        """Close the descriptor (every watch goes with it)."""
        try:
            os.close(self.fd)
        except OSError:
            pass
