"""File-system helpers shared by the modules that keep files: a directory's fsync, a file's
identity, a file replaced in one step."""

from __future__ import annotations

import os
import tempfile
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


def replace_text(path: Path, text: str) -> None:
    """Replace a file in one step, keeping its mode (0640 for a new one): written beside it,
    synced, then renamed over it, so a reader never sees half a file."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o640
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
