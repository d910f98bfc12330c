"""The cache area on disk: ``<packages>/.pypibox/cache/``, apart from uploaded packages.

Layout (every name checked before it becomes a path, so nothing lands outside the area)::

    pages/<project>.json         the checked upstream page, its ETag and when it was fetched
    files/<project>/<filename>   a distribution whose sha256 matched, stored atomically
    files/<project>/<filename>.metadata
    tmp/<project>/<filename>     a download in progress (one writer: the holder of its lock)
    locks/...                    flock files that make one fetch serve every process

The private index ignores the whole area (a dot-directory). Least recently used files go
first when the area passes ``PYPI_CACHE_MAX_SIZE``; their "use" time is the atime, set
explicitly when a file is served (mount options such as noatime do not matter).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

from .upstream_pages import valid_filename

log = logging.getLogger("pypibox.upstream")

CACHE_DIR = os.path.join(".pypibox", "cache")
RECORD_VERSION = 1
_PROJECT = re.compile(r"^[a-z0-9]([a-z0-9-]{0,200}[a-z0-9])?$")
#: Evict down to this share of the limit, so that one eviction scan serves many stores.
LOW_WATER = 0.9
#: Other processes store files too: their sizes are counted again at least this often.
RESCAN_SECONDS = 60.0
TOUCH_EVERY_NS = 60 * 1_000_000_000


def valid_project(name: str) -> bool:
    """A PEP 503 normalised project name."""
    return bool(_PROJECT.match(name)) and "--" not in name


@dataclass
class Usage:
    """What the cache holds."""

    projects: int
    files: int
    bytes: int
    max_bytes: int
    oldest_use: float | None
    newest_use: float | None


class Store:
    """Paths, atomic writes, page records and LRU eviction of the cache area."""

    def __init__(self, packages_dir: Path, max_size: int) -> None:
        self.root = os.path.join(str(Path(packages_dir).resolve()), CACHE_DIR)
        self.max_size = max_size
        self._lock = threading.Lock()
        self._usage: int | None = None
        self._counted_at = 0.0
        self._touched: dict[str, int] = {}
        self._write_warned = False

    # -- paths -------------------------------------------------------------------------
    def _checked(self, project: str, filename: str | None = None) -> None:
        if not valid_project(project):
            raise ValueError(f"not a project name: {project!r}")
        if filename is not None:
            base = filename.removesuffix(".metadata")
            if not valid_filename(base):
                raise ValueError(f"not a distribution file name: {filename!r}")

    def record_path(self, project: str) -> str:
        """The page record of a project."""
        self._checked(project)
        return os.path.join(self.root, "pages", project + ".json")

    def file_path(self, project: str, filename: str) -> str:
        """Where a verified file (or its ``.metadata``) is kept."""
        self._checked(project, filename)
        return os.path.join(self.root, "files", project, filename)

    def tmp_path(self, project: str, filename: str) -> str:
        """The one download in progress of a file (written by the holder of its lock)."""
        self._checked(project, filename)
        return os.path.join(self.root, "tmp", project, filename)

    def lock_path(self, kind: str, project: str, filename: str = "") -> str:
        """The flock file serialising fetches of a page (kind 'page') or a file."""
        self._checked(project, filename or None)
        leaf = f"{project}.lock" if not filename else os.path.join(project, filename + ".lock")
        return os.path.join(self.root, "locks", kind, leaf)

    # -- records -------------------------------------------------------------------------
    def read_record(self, project: str) -> tuple[tuple[int, int, int], dict[str, t.Any]] | None:
        """The stored page record and its stat key; None if missing, unreadable or corrupt."""
        path = self.record_path(project)
        try:
            with open(path, "rb") as handle:
                st = os.fstat(handle.fileno())
                data = json.loads(handle.read(64 << 20))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("cache: ignoring the unreadable record of %s (%s)", project,
                        getattr(exc, "strerror", None) or "corrupt")
            return None
        if not isinstance(data, dict) or data.get("v") != RECORD_VERSION or \
                data.get("name") != project or not isinstance(data.get("files"), list) or \
                not isinstance(data.get("fetched"), (int, float)):
            log.warning("cache: ignoring the record of %s (not a record of this version)",
                        project)
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size), data

    def record_key(self, project: str) -> tuple[int, int, int] | None:
        """The stat key of a project's record (changes when any process rewrites it)."""
        try:
            st = os.stat(self.record_path(project))
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def write_record(self, project: str, data: dict[str, t.Any]) -> None:
        """Replace a project's record atomically."""
        self.write_atomic(self.record_path(project),
                          json.dumps({"v": RECORD_VERSION, **data}).encode())

    def write_atomic(self, path: str, data: bytes, sync: bool = False) -> bool:
        """Write ``path`` through a temporary name; False (logged once) if it cannot."""
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.part"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
                if sync:
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
            return True
        except OSError as exc:
            if not self._write_warned:
                log.warning("cache: cannot write %s: %s", path, exc.strerror)
                self._write_warned = True
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False

    # -- files ---------------------------------------------------------------------------
    def cached(self, project: str, filename: str, size: int | None) -> str | None:
        """The path of a stored file if it is there with the expected size, else None.

        A file of the wrong size (truncated by a crash, changed by hand) is removed.
        """
        path = self.file_path(project, filename)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if size is not None and st.st_size != size:
            log.warning("cache: removing %s/%s: %d bytes, the page says %d", project, filename,
                        st.st_size, size)
            self.remove(path, st.st_size)
            return None
        self.touch(path, st)
        return path

    def touch(self, path: str, st: os.stat_result | None = None) -> None:
        """Record a use of a file (its atime), at most once a minute per file and process."""
        now = time.time_ns()
        if now - self._touched.get(path, 0) < TOUCH_EVERY_NS:
            return
        if len(self._touched) > 100_000:
            self._touched.clear()
        self._touched[path] = now
        try:
            mtime = st.st_mtime_ns if st is not None else os.stat(path).st_mtime_ns
            os.utime(path, ns=(now, mtime))  # mtime kept: it is part of the ETag
        except OSError:
            pass

    def added(self, size: int) -> None:
        """A file of ``size`` bytes was stored: evict least recently used ones if over."""
        with self._lock:
            now = time.monotonic()
            if self._usage is None or now - self._counted_at > RESCAN_SECONDS:
                self._usage = self._count()
                self._counted_at = now
            else:
                self._usage += size
            over = self._usage > self.max_size
        if over:
            self.evict(self.max_size)

    def remove(self, path: str, size: int = 0) -> None:
        """Remove a stored file (never raises)."""
        try:
            os.unlink(path)
        except OSError:
            return
        with self._lock:
            if self._usage is not None:
                self._usage = max(0, self._usage - size)

    def _files(self) -> t.Iterator[tuple[str, os.stat_result]]:
        top = os.path.join(self.root, "files")
        try:
            projects = list(os.scandir(top))
        except OSError:
            return
        for project in projects:
            if not project.is_dir(follow_symlinks=False):
                continue
            try:
                entries = list(os.scandir(project.path))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False) and not entry.name.endswith(".part"):
                        yield entry.path, entry.stat(follow_symlinks=False)
                except OSError:
                    continue

    def _count(self) -> int:
        return sum(st.st_size for _, st in self._files())

    def evict(self, limit: int) -> tuple[int, int]:
        """Remove least recently used files until at most ``LOW_WATER * limit`` remain (when
        over ``limit``); (files removed, bytes freed)."""
        items = sorted(self._files(), key=lambda item: item[1].st_atime_ns)
        total = sum(st.st_size for _, st in items)
        removed = freed = 0
        if total > limit:
            target = int(limit * LOW_WATER)
            for path, st in items:
                if total <= target:
                    break
                try:
                    os.unlink(path)
                except OSError:
                    continue
                total -= st.st_size
                freed += st.st_size
                removed += 1
            log.info("cache: evicted %d files (%d bytes) to stay within %d bytes", removed,
                     freed, limit)
        with self._lock:
            self._usage = total
            self._counted_at = time.monotonic()
        return removed, freed

    # -- maintenance --------------------------------------------------------------------
    def usage(self) -> Usage:
        """Counts for ``cache stats``."""
        files = list(self._files())
        uses = [st.st_atime for _, st in files]
        try:
            projects = sum(1 for n in os.listdir(os.path.join(self.root, "pages"))
                           if n.endswith(".json"))
        except OSError:
            projects = 0
        return Usage(projects, len(files), sum(st.st_size for _, st in files), self.max_size,
                     min(uses) if uses else None, max(uses) if uses else None)

    def clean_tmp(self) -> int:
        """Remove downloads left by dead processes (nobody holds their lock); how many."""
        removed = 0
        top = os.path.join(self.root, "tmp")
        for dirpath, _dirs, names in os.walk(top):
            for name in names:
                project = os.path.basename(dirpath)
                try:
                    lock = self.lock_path("file", project, name)
                except ValueError:
                    lock = ""
                if lock and not _free(lock):
                    continue
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except OSError:
                    pass
        for dirpath, _dirs, names in os.walk(os.path.join(self.root, "files")):
            for name in names:
                if name.endswith(".part"):  # an atomic write cut short
                    try:
                        os.unlink(os.path.join(dirpath, name))
                        removed += 1
                    except OSError:
                        pass
        return removed

    def unlink_quietly(self, path: str) -> None:
        """Remove a file of the cache area if it is there."""
        try:
            os.unlink(path)
        except OSError:
            pass

    def clean_locks(self) -> int:
        """Remove lock files nobody holds; how many."""
        removed = 0
        for dirpath, _dirs, names in os.walk(os.path.join(self.root, "locks")):
            for name in names:
                path = os.path.join(dirpath, name)
                if _free(path):
                    self.unlink_quietly(path)
                    removed += 1
        return removed

    def forget(self, project: str) -> tuple[int, int]:
        """Remove a project's record and files; (files removed, bytes freed)."""
        files = self.file_path(project, "x.whl").rsplit(os.sep, 1)[0]
        removed = freed = 0
        try:
            for entry in os.scandir(files):
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                    os.unlink(entry.path)
                except OSError:
                    continue
                removed += 1
                freed += size
            os.rmdir(files)
        except OSError:
            pass
        try:
            os.unlink(self.record_path(project))
        except OSError:
            pass
        with self._lock:
            self._usage = None
        return removed, freed


def _free(path: str) -> bool:
    """True if nobody holds the flock of ``path`` (or it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class FileLock:
    """An exclusive flock on a lock file (shared between processes and threads alike)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def acquire(self, wait: float = 0.0) -> bool:
        """Take the lock, waiting up to ``wait`` seconds; False if another holder keeps it."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race with a new holder)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def held_elsewhere(self) -> bool:
        """True while another process or thread holds the lock."""
        return not _free(self.path)


def remove_tree(path: str) -> None:
    """Remove a directory tree, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)
