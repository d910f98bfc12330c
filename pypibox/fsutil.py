"""File-system helpers shared by the modules that keep files: a directory's fsync, a file's
identity."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path | str) -> None:
    """Make a directory's entries durable (a new link, a rename); best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_stamp(path: Path | str) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of a file, which changes when it is replaced or written; None if
    it cannot be looked at."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
