"""The package index: every file of the packages directory under the project its metadata names.

State lives in one SQLite database under ``<packages>/.pypibox/`` (indexdb), shared by every
worker process and kept current by one maintainer thread among them (indexer). Each process
keeps a small cache of what requests asked for, bounded in size; ``refresh()`` (call it per
request: one ``PRAGMA data_version``, about 3 µs) tells it what changed, so a change made by
any process is seen by every process at its next request. The walk of pypiserver is kept:
recursive, dot-files and dot-directories ignored, ``.asc`` signatures served but not listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import tempfile
import threading
import time
import typing as t
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from . import distmeta, validate
from .indexdb import SELECT, STATE_DIR, IndexDB, Row, SyncState, compress, is_corruption
from .indexer import Maintainer

log = logging.getLogger("pypibox.index")

#: Files kept in memory per process, over all cached projects (about 700 bytes each).
CACHE_FILES = 10_000
#: Single files (downloads) and names of unknown projects kept, each.
CACHE_NAMES = 4096
#: sync() trusts an unchanged directory mtime only this long after its change (timestamps
#: move in ticks of a few ms).
QUIET_DIR_NS = 50_000_000
#: Changes read at once; a reader further behind forgets everything instead.
CATCH_UP = 5000


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One distribution file of the packages directory, with everything known about it."""

    relpath: str                  # relative to the packages directory, '/' separated
    path: str                     # absolute path on disk
    project: str                  # PEP 503 normalised name (from the metadata)
    name: str                     # the project's name as the metadata spells it
    version: str                  # str(packaging Version) where it parses
    size: int
    mtime_ns: int                 # the upload time (PEP 700)
    sha256: str
    requires_python: str | None
    metadata_sha256: str | None   # wheels: the hash of the METADATA served (PEP 658/714)
    summary: str | None
    kind: str = "wheel"           # wheel, sdist, signature, other

    @property
    def filename(self) -> str:
        """The base name of the file."""
        return self.relpath.rsplit("/", 1)[-1]

    @property
    def is_wheel(self) -> bool:
        """True for a ``.whl`` file."""
        return self.kind == "wheel"

    @property
    def listed(self) -> bool:
        """Appears on its project's page (signatures are downloadable but not listed)."""
        return self.kind != "signature"

    def sort_key(self) -> tuple[t.Any, ...]:
        """Order on a project page: version, then path."""
        return (distmeta.version_key(self.version), self.relpath)


@dataclass(frozen=True, slots=True)
class ProjectSummary:
    """A project as a listing shows it."""

    project: str
    name: str
    latest_version: str | None
    last_upload_ns: int
    summary: str | None
    files: int


@dataclass(slots=True)
class _Cached:
    entries: tuple[FileEntry, ...]
    stamp: object
    checked: float


def _entry(root: str, row: Row) -> FileEntry:
    (relpath, kind, project, name, version, size, mtime_ns, _ino, _state, sha256,
     requires_python, metadata_sha256, summary, _source) = row
    return FileEntry(relpath, os.path.join(root, relpath), project, name, version, size,
                     mtime_ns, sha256 or "", requires_python, metadata_sha256, summary, kind)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class PackageIndex:
    """The packages directory as projects and files (see the module docstring)."""

    def __init__(self, root: Path | str, *, recheck: float = 0.5, watch: str = "auto",
                 cache_files: int = CACHE_FILES, cache_names: int = CACHE_NAMES,
                 wait: float = 5.0) -> None:
        self.root = str(Path(root).resolve())
        self.recheck = recheck
        self.watch = watch                       # auto (inotify if there is), poll
        self.cache_files = cache_files
        self.cache_names = cache_names
        self._lock = threading.Lock()
        self._projects: OrderedDict[str, _Cached] = OrderedDict()
        self._cached_files = 0
        self._missing: OrderedDict[str, None] = OrderedDict()
        self._files: OrderedDict[str, tuple[FileEntry, float]] = OrderedDict()
        self._version = 0          # bumped at every invalidation (guards cache fills)
        self.generation = 0        # changes whenever anything changes (this process)
        self._gen = 0              # the last change of the database applied here
        self._ready = False
        self._next_pointer_check = 0.0
        self._pid = os.getpid()
        self._sync: SyncState | None = None
        self.db = IndexDB(self._state_dir())
        self._open()
        self.maintainer = Maintainer(self)
        self.maintainer.start()
        # A new index lists the tree first (a small one in milliseconds): wait for that a
        # while rather than answer 503 at once, and for the reading of a small tree too; a
        # large one is read in the background.
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (not self._ready or self._few_pending()):
            time.sleep(0.01)
            self.refresh()

    def _few_pending(self) -> bool:
        """Some files are not read yet, but few (a small tree, read in a second or so)."""
        try:
            count = self.db.conn().execute(
                "SELECT count(*) FROM (SELECT 1 FROM files WHERE state = 0 LIMIT 3001)"
            ).fetchone()[0]
        except sqlite3.DatabaseError:
            return False
        return 0 < int(count) <= 3000

    def _state_dir(self) -> str:
        state = os.path.join(self.root, STATE_DIR)
        try:
            os.makedirs(state, exist_ok=True)
            if os.access(state, os.W_OK):
                return state
        except OSError:
            pass
        private = tempfile.mkdtemp(prefix="pypibox-index-")
        log.warning("cannot write %s: the index keeps its state in %s, for this process only",
                    state, private)
        return private

    def _open(self) -> None:
        try:
            self.db.open()
        except sqlite3.DatabaseError as exc:
            log.warning("cannot open the index database (%s): rebuilding it", exc)
            self.db.rebuild(self.db.instance or None)
        self.forget_all()

    # -- keeping current -----------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """Learn what changed since the last call (cheap: call it at every request).

        ``force``: also wait for changes made to the tree a moment ago (``sync()``).
        """
        if force:
            self.sync()
            return
        if os.getpid() != self._pid:
            self._after_fork()
        try:
            now = time.monotonic()
            if now >= self._next_pointer_check:
                self._next_pointer_check = now + self.recheck
                if self.db.pointer_moved():
                    self._open()
                    return
            if self.db.data_changed():
                self._catch_up()
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)

    def _catch_up(self) -> None:
        rows = self.db.changes_since(self._gen, CATCH_UP + 1)
        if not rows:
            return
        everything = (len(rows) > CATCH_UP or rows[0][0] != self._gen + 1
                      or any(project is None for _g, project, _r in rows))
        if everything:
            self.forget_all()
            return
        with self._lock:
            for _gen, project, relpath in rows:
                if project is not None:
                    self._drop_project(project)
                    self._missing.pop(project, None)
                if relpath:
                    self._files.pop(relpath, None)
            self._gen = rows[-1][0]
            self._version += 1
            self.generation += 1

    def _drop_project(self, name: str) -> None:
        old = self._projects.pop(name, None)
        if old is not None:
            self._cached_files -= len(old.entries)

    def forget_all(self) -> None:
        """Drop every cached fact (after a rebuild, a bulk change or a long absence)."""
        try:
            gen = self.db.last_gen()
            ready = self.db.meta("ready") == "1"
        except sqlite3.DatabaseError:
            gen, ready = 0, False
        with self._lock:
            self._projects.clear()
            self._cached_files = 0
            self._missing.clear()
            self._files.clear()
            self._gen = gen
            self._ready = ready
            self._version += 1
            self.generation += 1

    def changed_here(self) -> None:
        """This process wrote the database: apply its changes at once."""
        try:
            self._catch_up()
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)

    def _db_error(self, exc: sqlite3.DatabaseError) -> None:
        if not is_corruption(exc):
            log.warning("the index database is busy or cannot be written (%s)", exc)
            return
        log.warning("the index database is damaged (%s): rebuilding it from the files", exc)
        try:
            self.db.rebuild(self.db.instance or None)
        except (OSError, sqlite3.Error) as again:  # a full or read-only disk
            log.warning("cannot rebuild the index database (%s); answering from what it "
                        "holds", again)
        self.forget_all()

    def _after_fork(self) -> None:
        """A forked child must not share the parent's connections or thread."""
        self._pid = os.getpid()
        self.db = IndexDB(self.db.state_dir)
        self._open()
        self.maintainer = Maintainer(self)
        self.maintainer.start()

    def sync(self, timeout: float = 0.5) -> bool:
        """Wait until every change made to the tree before this call is in the index (files
        copied in by hand a moment ago): call it before answering "not found" for a project.

        Concurrent calls share one round trip to the maintainer (a few ms). False if it did
        not answer within ``timeout`` (then the index is as current as it can say).
        """
        start = time.monotonic_ns()
        state = self._sync_state()
        if state is None:
            return False
        if self._quiet(state):
            self.refresh()
            return True
        if state.walking():
            self.refresh()
            return False  # the maintainer compares the tree with the index: answer as is
        if state.acked() < start:
            state.request()
            deadline = start + int(timeout * 1e9)
            while state.acked() < start:
                if time.monotonic_ns() > deadline:
                    if not state.current():
                        self._sync = None
                    return False
                time.sleep(0.0001)
        self.refresh()
        return True

    def settled(self) -> bool:
        """True if sync() would return at once, without waiting (cheap: a stat and a read
        of shared memory); call sync() from a worker thread when it is False."""
        state = self._sync_state()
        return state is not None and self._quiet(state)

    def _quiet(self, state: SyncState) -> bool:
        """A flat tree whose directory has not changed since an acknowledgement that came
        well after its last change (mtimes move in coarse ticks): nothing new to wait for."""
        seen = state.snapshot()
        if seen is None or not seen[2] or seen[1] - seen[2] <= QUIET_DIR_NS:
            return False
        try:
            return os.stat(self.root).st_mtime_ns == seen[2]
        except OSError:
            return False

    def _sync_state(self) -> SyncState | None:
        if self._sync is None:
            try:
                self._sync = SyncState(self.db.state_dir, create=False)
            except OSError:
                return None
        return self._sync

    @property
    def ready(self) -> bool:
        """The tree has been listed completely at least once. Until then an unknown name may
        be a project not seen yet: answer 503, never "not found" or a fallback redirect."""
        return self._ready

    # -- lookups (the hot path) ----------------------------------------------------------------
    def project(self, name: str) -> tuple[FileEntry, ...] | None:
        """The listed files of a project (PEP 503 normalised name), in version order, every
        fact known; None if there are none."""
        with self._lock:
            hit = self._projects.get(name)
            if hit is not None:
                self._projects.move_to_end(name)
                if time.monotonic() < hit.checked + self.recheck:
                    return hit.entries
            elif name in self._missing:
                self._missing.move_to_end(name)
                return None
        try:
            if hit is not None and self._unchanged(hit.entries):
                hit.checked = time.monotonic()
                return hit.entries
            return self._load_project(name)[0]
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)
            return None

    def files_of(self, name: str) -> tuple[FileEntry, ...]:
        """Every stored file of a project, signatures included, in version order (for the
        actions on a project's files: yank, delete...). Not cached."""
        try:
            rows = self.db.project_rows(name)
            if any(r[8] == 0 for r in rows):
                self._read_now([r[0] for r in rows if r[8] == 0])
                rows = self.db.project_rows(name)
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)
            return ()
        return tuple(sorted((_entry(self.root, r) for r in rows if r[8] == 1),
                            key=FileEntry.sort_key))

    def project_stamp(self, name: str) -> object:
        """Changes when the project's files change (a key for rendered pages); None for a
        project with no files."""
        with self._lock:
            hit = self._projects.get(name)
            if hit is not None:
                return hit.stamp
        try:
            return self._load_project(name)[1]
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)
            return None

    def _unchanged(self, entries: t.Iterable[FileEntry]) -> bool:
        """Each file still has the size and mtime we know (a rewrite in place moves no
        directory mtime); if not, it is marked to be read again."""
        stale = []
        for entry in entries:
            key = distmeta.stat_key(entry.path)
            if key is None or (key.size, key.mtime_ns) != (entry.size, entry.mtime_ns):
                stale.append(entry.relpath)
        if stale:
            self._mark_stale(stale)
        return not stale

    def _mark_stale(self, relpaths: list[str]) -> None:
        with self.db.write() as cur:
            touched = set()
            for relpath in relpaths:
                row = cur.execute("SELECT project FROM files WHERE relpath = ?",
                                  (relpath,)).fetchone()
                if row is None:
                    continue
                touched.add(row[0])
                key = distmeta.stat_key(os.path.join(self.root, relpath))
                if key is None:
                    self.db.delete(cur, relpath)
                else:
                    cur.execute("UPDATE files SET state = 0, size = ?, mtime_ns = ?, ino = ? "
                                "WHERE relpath = ?", (key.size, key.mtime_ns, key.ino, relpath))
                self.db.change(cur, row[0], relpath)
            gen = int(cur.execute("SELECT max(gen) FROM changes").fetchone()[0] or 0)
            self.db.refresh_projects(cur, touched, gen)
        self.changed_here()

    def _load_project(self, name: str) -> tuple[tuple[FileEntry, ...] | None, object]:
        version = self._version
        if not self._ready:
            return None, None
        rows = self.db.project_rows(name)
        # Each file as it is now (a rewrite or a touch in place moves no directory mtime
        # and its event may still be on its way): what changed is read again first.
        stale = [r[0] for r in rows if r[8] == 1 and (
            (key := distmeta.stat_key(os.path.join(self.root, r[0]))) is None
            or (key.size, key.mtime_ns, key.ino) != (r[5], r[6], r[7]))]
        if stale:
            self._mark_stale(stale)
            rows = self.db.project_rows(name)
        if any(r[8] == 0 for r in rows):
            self._read_now([r[0] for r in rows if r[8] == 0])
            rows = self.db.project_rows(name)
        entries = tuple(sorted((_entry(self.root, r) for r in rows
                                if r[8] == 1 and r[1] != "signature"),
                               key=FileEntry.sort_key))
        stamp = (self.db.instance, self.db.project_gen(name)) if entries else None
        with self._lock:
            if self._version == version:
                if entries:
                    self._remember(name, _Cached(entries, stamp, time.monotonic()))
                else:
                    self._missing[name] = None
                    while len(self._missing) > self.cache_names:
                        self._missing.popitem(last=False)
        return (entries or None), stamp

    def _remember(self, name: str, item: _Cached) -> None:
        if len(item.entries) > self.cache_files:
            return  # larger than the whole cache: asked of the database each time
        self._drop_project(name)
        self._projects[name] = item
        self._cached_files += len(item.entries)
        while self._cached_files > self.cache_files:
            _old, dropped = self._projects.popitem(last=False)
            self._cached_files -= len(dropped.entries)

    def file(self, relpath: str) -> FileEntry | None:
        """Any stored file (signatures included) by its path relative to the root, or None.

        A path not in the index is looked for on disk (one stat): a file copied in a moment
        ago is found at once. Unknown paths are not cached.
        """
        with self._lock:
            entry = self._files.get(relpath)
            if entry is not None:
                self._files.move_to_end(relpath)
                if time.monotonic() < entry[1] + self.recheck:
                    return entry[0]
        try:
            if entry is not None and self._unchanged([entry[0]]):
                with self._lock:
                    self._files[relpath] = (entry[0], time.monotonic())
                return entry[0]
            version = self._version
            row = self.db.file_row(relpath)
            if row is None:
                row = self._discover(relpath)
            elif row[8] == 0:
                self._read_now([relpath])
                row = self.db.file_row(relpath)
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)
            return None
        if row is None or row[8] != 1 or not row[2]:
            return None
        found = _entry(self.root, row)
        with self._lock:
            if self._version == version:
                self._files[relpath] = (found, time.monotonic())
                while len(self._files) > self.cache_names:
                    self._files.popitem(last=False)
        return found

    def _discover(self, relpath: str) -> Row | None:
        """A file not in the index yet but on disk (copied in a moment ago): read it now.

        One stat for an unknown path; what it finds is what the maintainer would write.
        """
        parts = relpath.split("/")
        if any(not p or p.startswith(".") for p in parts) or "\0" in relpath:
            return None
        if not distmeta.is_distribution(parts[-1]):
            return None
        path = os.path.join(self.root, relpath)
        if distmeta.stat_key(path) is None:
            return None
        facts = self.read_pending(relpath, write=False)
        if facts is None:
            return None
        with self.db.write() as cur:
            old = cur.execute("SELECT project FROM files WHERE relpath = ?",
                              (relpath,)).fetchone()
            self.db.put(cur, relpath, facts)
            gen = self.db.change(cur, facts.project, relpath)
            names = {facts.project} | ({old[0]} if old else set())
            self.db.refresh_projects(cur, names - {""}, gen)
        self.changed_here()
        return self.db.file_row(relpath)

    def pending(self, name: str) -> bool:
        """True if ``project(name)`` would first read files (only while the index is being
        built, or just after files were put in by hand): call it from a worker thread then."""
        with self._lock:
            if name in self._projects or name in self._missing:
                return False
        try:
            row = self.db.conn().execute(
                "SELECT 1 FROM files WHERE project = ? AND state = 0 LIMIT 1", (name,)).fetchone()
        except sqlite3.DatabaseError:
            return False
        return row is not None

    # -- reading files (on demand, and the maintainer's background reading) -------------------
    def read_pending(self, relpath: str, write: bool = True) -> distmeta.Facts | None:
        """Read one file's facts (None if it is gone or changing)."""
        signed = None
        if relpath.endswith(".asc"):
            row = self.db.file_row(relpath[:-4])
            if row is not None and row[8] == 1:
                signed = (row[2], row[3], row[4])
        facts = distmeta.examine(os.path.join(self.root, relpath), relpath, signed)
        if write and facts is not None:
            self.store_read([(relpath, facts, False)])
        return facts

    def _read_now(self, relpaths: list[str]) -> None:
        results: list[tuple[str, distmeta.Facts | None, bool]] = []
        for relpath in relpaths:
            facts = self.read_pending(relpath, write=False)
            gone = facts is None and distmeta.stat_key(os.path.join(self.root, relpath)) is None
            if facts is not None or gone:
                results.append((relpath, facts, gone))
        if results:
            self.store_read(results)

    def store_read(self, results: list[tuple[str, distmeta.Facts | None, bool]]) -> None:
        """Write facts read of files (or that they are gone), if they still describe the
        file as it is: it is looked at again inside the transaction."""
        with self.db.write() as cur:
            touched = set()
            for relpath, facts, gone in results:
                row = cur.execute("SELECT project, state, size, mtime_ns, ino FROM files "
                                  "WHERE relpath = ?", (relpath,)).fetchone()
                if row is None:
                    continue  # forgotten meanwhile; an event brings it back if it is there
                now = distmeta.stat_key(os.path.join(self.root, relpath))
                if now is None:
                    self.db.delete(cur, relpath)
                elif gone or facts is None or \
                        tuple(now) != (facts.size, facts.mtime_ns, facts.ino):
                    continue  # changed again: its event follows
                elif row[1] == 1 and tuple(row[2:5]) == tuple(now):
                    continue  # read by someone else already
                else:
                    self.db.put(cur, relpath, facts)
                    touched.add(facts.project)
                    self.db.change(cur, facts.project, relpath)
                touched.add(row[0])
                self.db.change(cur, row[0], relpath)
            if touched:
                gen = int(cur.execute("SELECT max(gen) FROM changes").fetchone()[0] or 0)
                self.db.refresh_projects(cur, touched - {""}, gen)
        self.changed_here()

    # -- listings ------------------------------------------------------------------------------
    def project_names(self) -> list[str]:
        """Every project (normalised names, sorted)."""
        try:
            return [r[0] for r in self.db.conn().execute(
                "SELECT project FROM projects ORDER BY project")]
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)
            return []

    def projects(self, query: str | None = None, offset: int = 0, limit: int = 50
                 ) -> tuple[list[ProjectSummary], int]:
        """Projects whose name or summary contains ``query`` (all without one), ordered by
        name, from ``offset``; and how many there are in all."""
        cols = "project, name, latest_version, last_upload_ns, summary, files"
        try:
            conn = self.db.conn()
            if query and query.strip():
                text = query.strip()[:200]
                where = ("project LIKE ?1 ESCAPE '\\' OR project LIKE ?2 ESCAPE '\\' OR "
                         "name LIKE ?1 ESCAPE '\\' OR summary LIKE ?1 ESCAPE '\\'")
                args = (_like(text), _like(canonicalize_name(text)))
                rows = conn.execute(f"SELECT {cols} FROM projects WHERE {where} ORDER BY "
                                    "project LIMIT ?3 OFFSET ?4",
                                    (*args, limit, offset)).fetchall()
                total = int(conn.execute(f"SELECT count(*) FROM projects WHERE {where}",
                                         args).fetchone()[0])
            else:
                rows = conn.execute(f"SELECT {cols} FROM projects ORDER BY project LIMIT ? "
                                    "OFFSET ?", (limit, offset)).fetchall()
                total = self.db.totals()[2]
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)
            return [], 0
        return [ProjectSummary(*r) for r in rows], total

    def files_page(self, offset: int, limit: int) -> tuple[list[FileEntry], int]:
        """Stored files ordered by path, from ``offset``; and how many there are in all.

        Files seen but not read yet are included (their sha256 is "" until read).
        """
        try:
            rows = self.db.conn().execute(
                SELECT + " WHERE state = 0 OR project != '' ORDER BY relpath LIMIT ? OFFSET ?",
                (limit, offset)).fetchall()
            total = self.db.totals()[0]
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)
            return [], 0
        return [_entry(self.root, r) for r in rows], total

    def stats(self) -> tuple[int, int]:
        """(files, bytes) stored."""
        try:
            files, size, _projects = self.db.totals()
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)
            return 0, 0
        return files, size

    # -- the write path ------------------------------------------------------------------------
    def add(self, relpath: str, sha256: str, dist: validate.Distribution) -> FileEntry:
        """Record a file the write path has just put in place (validated as ``dist``, hashed
        while it was received). Every process sees it at its next request."""
        path = os.path.join(self.root, relpath)
        st = os.stat(path)
        project, name, version = dist.project, dist.name, dist.version
        if dist.kind == "signature":
            with contextlib.suppress(sqlite3.DatabaseError):
                row = self.db.file_row(relpath[:-4])
                if row is not None and row[8] == 1 and row[2]:
                    project, name, version = row[2], row[3], row[4]
        meta_sha = (hashlib.sha256(dist.metadata).hexdigest()
                    if dist.kind == "wheel" and dist.metadata is not None else None)
        facts = distmeta.Facts(
            dist.kind, project, name, version, st.st_size, st.st_mtime_ns, st.st_ino, sha256,
            dist.requires_python, dist.summary, dist.metadata, meta_sha,
            "metadata" if dist.metadata is not None else "filename")
        try:
            with self.db.write() as cur:
                old = cur.execute("SELECT project FROM files WHERE relpath = ?",
                                  (relpath,)).fetchone()
                if old is not None and old[0] != project:
                    self.db.change(cur, old[0], relpath)
                self.db.put(cur, relpath, facts)
                gen = self.db.change(cur, project, relpath)
                self.db.refresh_projects(cur, {project} | ({old[0]} if old else set()), gen)
            self.changed_here()
        except sqlite3.DatabaseError as exc:
            # The file is in place: the maintainer lists it from its event.
            log.warning("could not record %s in the index (%s)", relpath, exc)
            self._db_error(exc)
        return FileEntry(relpath, path, project, name, version, st.st_size, st.st_mtime_ns,
                         sha256, dist.requires_python, meta_sha, dist.summary, dist.kind)

    def remove(self, relpath: str) -> None:
        """Forget a file the write path has just deleted."""
        try:
            with self.db.write() as cur:
                project = self.db.delete(cur, relpath)
                if project is None:
                    return
                gen = self.db.change(cur, project, relpath)
                self.db.refresh_projects(cur, {project}, gen)
            self.changed_here()
        except sqlite3.DatabaseError as exc:
            log.warning("could not remove %s from the index (%s)", relpath, exc)
            self._db_error(exc)

    def metadata(self, entry: FileEntry) -> bytes | None:
        """The core metadata bytes: for a wheel exactly those its ``metadata_sha256``
        announces (None if they cannot be had); an sdist's PKG-INFO."""
        try:
            data = self.db.metadata(entry.relpath)
        except sqlite3.DatabaseError as exc:
            self._db_error(exc)
            data = None
        if not entry.is_wheel:
            return data
        if entry.metadata_sha256 is None:
            return None
        if data is not None and hashlib.sha256(data).hexdigest() == entry.metadata_sha256:
            return data
        try:  # the stored copy went missing: take it from the wheel again
            raw = validate.wheel_metadata(Path(entry.path), entry.filename, entry.project)
        except validate.InvalidUpload:
            return None
        if raw is None or hashlib.sha256(raw).hexdigest() != entry.metadata_sha256:
            return None
        with contextlib.suppress(sqlite3.DatabaseError), self.db.write() as cur:
            cur.execute("INSERT OR REPLACE INTO metadata VALUES (?, ?)",
                        (entry.relpath, compress(raw)))
        return raw

    def close(self) -> None:
        """Stop the maintainer and close the database."""
        self.maintainer.close()
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        self.db.close()
