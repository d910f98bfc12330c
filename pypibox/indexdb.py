"""The index's state: one SQLite database under ``<packages>/.pypibox/``, shared by processes.

The database is a cache of facts read from the files, never the truth: it is checked when it
is opened (SQLite's header, our schema and magic) and on every use (any sign of corruption
makes it be rebuilt), and the maintainer compares it with the tree at every start.

Each database instance has a unique file name, named by the pointer file ``index.current``:
a rebuild writes a new instance and then replaces the pointer, so no process ever reopens a
file name that another process may still be writing (SQLite's -wal and -shm files follow the
database's name). Every write transaction appends to ``changes``; readers learn what to
forget from it (``PRAGMA data_version`` says cheaply whether anything was committed).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import threading
import time
import typing as t
import zlib

from . import distmeta

log = logging.getLogger("pypibox.indexdb")

STATE_DIR = ".pypibox"
POINTER = "index.current"
SCHEMA_VERSION = 2
MAGIC = "pypibox-index"
_INSTANCE = re.compile(r"index-[0-9a-f]{16}\.sqlite3")
#: Changes kept for readers that are behind; older ones make a reader forget everything.
KEEP_CHANGES = 20_000
BUSY_TIMEOUT = 10.0

#: Columns of ``files`` in the order every query returns them.
COLUMNS = ("relpath", "kind", "project", "name", "version", "size", "mtime_ns", "ino", "state",
           "sha256", "requires_python", "metadata_sha256", "summary", "source")
SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM files"
Row = tuple[t.Any, ...]

_SCHEMA = f"""
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE files(
    relpath TEXT PRIMARY KEY,       -- relative to the packages directory, '/' separated
    dir TEXT NOT NULL,              -- its directory ('' for the top)
    kind TEXT NOT NULL,             -- wheel, sdist, signature, other
    project TEXT NOT NULL,          -- PEP 503 name (guessed from the file name while state=0)
    name TEXT NOT NULL,             -- as the metadata spells it
    version TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    state INTEGER NOT NULL,         -- 0: seen, not read yet; 1: read
    sha256 TEXT,
    requires_python TEXT,
    metadata_sha256 TEXT,           -- wheels: the hash of the METADATA announced (PEP 714)
    summary TEXT,
    source TEXT                     -- where project and version came from: metadata, filename
) WITHOUT ROWID;
CREATE INDEX files_by_project ON files(project);
CREATE INDEX files_by_dir ON files(dir);
CREATE INDEX files_pending ON files(relpath) WHERE state = 0;
CREATE TABLE metadata(relpath TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE projects(
    project TEXT PRIMARY KEY, name TEXT NOT NULL, latest_version TEXT,
    last_upload_ns INTEGER NOT NULL, summary TEXT, files INTEGER NOT NULL, gen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE changes(gen INTEGER PRIMARY KEY AUTOINCREMENT, project TEXT, relpath TEXT);
CREATE TABLE totals(one INTEGER PRIMARY KEY CHECK (one = 1), files INTEGER NOT NULL,
                    bytes INTEGER NOT NULL, projects INTEGER NOT NULL);
INSERT INTO totals VALUES (1, 0, 0, 0);
-- totals count the files stored (read, or seen and not read yet), not those of no project
CREATE TRIGGER files_ins AFTER INSERT ON files WHEN NEW.state = 0 OR NEW.project != ''
    BEGIN UPDATE totals SET files = files + 1, bytes = bytes + NEW.size; END;
CREATE TRIGGER files_del AFTER DELETE ON files WHEN OLD.state = 0 OR OLD.project != ''
    BEGIN UPDATE totals SET files = files - 1, bytes = bytes - OLD.size; END;
CREATE TRIGGER files_upd_old AFTER UPDATE ON files WHEN OLD.state = 0 OR OLD.project != ''
    BEGIN UPDATE totals SET files = files - 1, bytes = bytes - OLD.size; END;
CREATE TRIGGER files_upd_new AFTER UPDATE ON files WHEN NEW.state = 0 OR NEW.project != ''
    BEGIN UPDATE totals SET files = files + 1, bytes = bytes + NEW.size; END;
CREATE TRIGGER projects_ins AFTER INSERT ON projects
    BEGIN UPDATE totals SET projects = projects + 1; END;
CREATE TRIGGER projects_del AFTER DELETE ON projects
    BEGIN UPDATE totals SET projects = projects - 1; END;
INSERT INTO meta VALUES ('magic', '{MAGIC}'), ('ready', '0');
PRAGMA user_version = {SCHEMA_VERSION};
"""


class Unusable(Exception):
    """The database is missing or corrupt: it must be rebuilt (the message says why)."""


def is_corruption(exc: BaseException) -> bool:
    """True for SQLite errors that mean the file is damaged or gone, not merely busy or full."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError):
        return any(s in text for s in ("malformed", "no such table", "no such column",
                                       "disk i/o error", "unable to open", "not a database"))
    return not isinstance(exc, sqlite3.IntegrityError)


_SQLITE_MAGIC = b"SQLite format 3\0"
#: path -> [descriptor, users] of the database files this process checks (see IndexDB._fd).
_FDS: dict[str, list[int]] = {}
_FDS_LOCK = threading.Lock()


def _hold_fd(path: str) -> int | None:
    with _FDS_LOCK:
        held = _FDS.get(path)
        if held is None:
            try:
                held = _FDS[path] = [os.open(path, os.O_RDONLY), 0]
            except OSError:
                return None
        held[1] += 1
        return held[0]


def _release_fd(path: str) -> None:
    with _FDS_LOCK:
        held = _FDS.get(path)
        if held is not None:
            held[1] -= 1
            if held[1] <= 0:
                del _FDS[path]
                os.close(held[0])


def _dir_of(relpath: str) -> str:
    return relpath.rpartition("/")[0]


def compress(data: bytes) -> bytes:
    """Metadata blobs are stored compressed (a README compresses about 3x)."""
    return zlib.compress(data, 6)


class IndexDB:
    """Opens, checks and rebuilds the database; one connection per thread."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.pointer = os.path.join(state_dir, POINTER)
        self.instance = ""           # file name of the open instance
        self.epoch = 0               # bumped at every (re)open: threads reconnect
        self._pointer_key: tuple[int, int] | None = None
        #: Kept open for header checks. Never open and close the database file outside
        #: SQLite while connections to it exist: closing any descriptor of a file drops all
        #: of the process's POSIX locks on it, and another process may then take itself for
        #: the last user and delete the live WAL.
        self._fd: int | None = None
        self._held: list[str] = []   # paths whose descriptor this object holds
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    # -- instances -----------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The open instance's file."""
        return os.path.join(self.state_dir, self.instance)

    def _read_pointer(self) -> tuple[str, tuple[int, int] | None]:
        try:
            with open(self.pointer, "rb") as handle:
                st = os.fstat(handle.fileno())
                name = handle.read(200).decode("ascii", "replace").strip()
        except OSError:
            return "", None
        return (name if _INSTANCE.fullmatch(name) else ""), (st.st_ino, st.st_mtime_ns)

    def pointer_moved(self) -> bool:
        """The pointer names another instance than the open one, or the instance is gone."""
        try:
            st = os.stat(self.pointer)
        except OSError:
            return True
        if (st.st_ino, st.st_mtime_ns) != self._pointer_key:
            return True
        return not os.path.exists(self.path)

    def open(self) -> bool:
        """Open the instance the pointer names, checked; rebuild it if unusable.

        True if a new, empty instance was created (the tree must be read in full).
        """
        name, key = self._read_pointer()
        if name:
            try:
                self._check(os.path.join(self.state_dir, name))
                self._use(name, key)
                return False
            except Unusable as exc:
                log.warning("the index database %s is unusable (%s): rebuilding it from the "
                            "files", name, exc)
        return self.rebuild(name or None)

    def _check(self, path: str) -> None:
        if not os.path.exists(path):
            raise Unusable("missing")
        try:
            conn = self._connect(path)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                magic = conn.execute("SELECT value FROM meta WHERE key = 'magic'").fetchone()
                conn.execute("SELECT count(*) FROM totals").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise  # busy, or the disk is full: not a reason to throw the index away
            raise Unusable(str(exc)) from None
        if version != SCHEMA_VERSION or magic is None or magic[0] != MAGIC:
            raise Unusable(f"schema {version}, not {SCHEMA_VERSION}")

    def _use(self, name: str, key: tuple[int, int] | None) -> None:
        with self._lock:
            if name != self.instance:
                # The old instance's descriptor stays open until close(): threads may still
                # be finishing a query on it.
                path = os.path.join(self.state_dir, name)
                self._fd = _hold_fd(path)
                if self._fd is not None:
                    self._held.append(path)
            self.instance = name
            self._pointer_key = key
            self.epoch += 1

    def cut_short(self) -> bool:
        """The file is shorter than its own header says (SQLite writes page 1 first in a
        checkpoint, so one look can be wrong: the maintainer looks twice)."""
        if self._fd is None:
            return False
        try:
            head = os.pread(self._fd, 100, 0)
            size = os.fstat(self._fd).st_size
        except OSError:
            return False
        if len(head) < 100 or head[24:28] != head[92:96]:
            return False  # the in-header size is not valid
        page = int.from_bytes(head[16:18], "big")
        page = 65536 if page == 1 else page
        return size < int.from_bytes(head[28:32], "big") * page

    def intact(self) -> bool:
        """The open instance still starts like an SQLite database and was not deleted."""
        if self._fd is None:
            return False
        try:
            return (os.pread(self._fd, 16, 0) == _SQLITE_MAGIC
                    and os.fstat(self._fd).st_nlink > 0)
        except OSError:
            return False

    def rebuild(self, broken: str | None) -> bool:
        """Replace the instance ``broken`` (or a missing one) by a new, empty one.

        Under a lock, so that of several processes that find it broken one rebuilds and the
        others use the result. True if this call created the new instance.
        """
        os.makedirs(self.state_dir, exist_ok=True)
        lock_path = os.path.join(self.state_dir, "rebuild.lock")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            name, key = self._read_pointer()
            if name and name != broken:
                try:
                    self._check(os.path.join(self.state_dir, name))
                    self._use(name, key)
                    return False  # another process rebuilt it already
                except Unusable:
                    pass
            new = f"index-{os.urandom(8).hex()}.sqlite3"
            path = os.path.join(self.state_dir, new)
            conn = self._connect(path)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(_SCHEMA)
                conn.execute("INSERT INTO meta VALUES ('created', ?)", (str(time.time()),))
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            tmp = f"{self.pointer}.{os.getpid()}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(new.encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.pointer)
            _, key = self._read_pointer()
            self._use(new, key)
            for old in os.listdir(self.state_dir):
                if old.startswith("index-") and not old.startswith(new):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.state_dir, old))
        log.info("created the index database %s", new)
        return True

    # -- connections ---------------------------------------------------------------------------
    def _connect(self, path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA cache_size = -1024")          # 1 MiB of page cache per connection
        conn.execute("PRAGMA journal_size_limit = 67108864")
        return conn

    def conn(self) -> sqlite3.Connection:
        """This thread's connection to the open instance."""
        local = self._local
        if getattr(local, "epoch", -1) != self.epoch:
            old = getattr(local, "conn", None)
            if old is not None:
                self._forget(old)
            local.conn = self._connect(self.path)
            local.epoch = self.epoch
            local.data_version = -1
            with self._lock:
                self._conns.append(local.conn)
        conn: sqlite3.Connection = local.conn
        return conn

    def _forget(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def data_changed(self) -> bool:
        """Whether anything was committed by another connection since this thread last asked."""
        conn = self.conn()
        value = conn.execute("PRAGMA data_version").fetchone()[0]
        if value == self._local.data_version:
            return False
        self._local.data_version = value
        return True

    @contextlib.contextmanager
    def write(self) -> t.Iterator[sqlite3.Cursor]:
        """A write transaction (BEGIN IMMEDIATE: waits for other writers, up to 10 s)."""
        conn = self.conn()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def close(self) -> None:
        """Close every connection of every thread."""
        with self._lock:
            conns, self._conns = self._conns, []
            self.epoch += 1
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        with self._lock:
            held, self._held, self._fd = self._held, [], None
            self.instance = ""
        for path in held:
            _release_fd(path)

    # -- reading -------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        """A value of the meta table."""
        row = self.conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def changes_since(self, gen: int, limit: int) -> list[tuple[int, str | None, str | None]]:
        """(gen, project, relpath) of the changes after ``gen``, oldest first."""
        return self.conn().execute(
            "SELECT gen, project, relpath FROM changes WHERE gen > ? ORDER BY gen LIMIT ?",
            (gen, limit)).fetchall()

    def last_gen(self) -> int:
        """The newest change."""
        row = self.conn().execute("SELECT max(gen) FROM changes").fetchone()
        return int(row[0] or 0)

    def project_rows(self, project: str) -> list[Row]:
        """Every file row of a project (pending ones included)."""
        return self.conn().execute(SELECT + " WHERE project = ?", (project,)).fetchall()

    def project_gen(self, project: str) -> int:
        """The change that last touched a project (0 if unknown)."""
        row = self.conn().execute("SELECT gen FROM projects WHERE project = ?",
                                  (project,)).fetchone()
        return int(row[0]) if row else 0

    def file_row(self, relpath: str) -> Row | None:
        """The row of one file."""
        row: Row | None = self.conn().execute(SELECT + " WHERE relpath = ?",
                                              (relpath,)).fetchone()
        return row

    def metadata(self, relpath: str) -> bytes | None:
        """The stored core metadata of a file."""
        row = self.conn().execute("SELECT data FROM metadata WHERE relpath = ?",
                                  (relpath,)).fetchone()
        if row is None:
            return None
        try:
            return zlib.decompress(row[0])
        except zlib.error:
            return None

    def totals(self) -> tuple[int, int, int]:
        """(files, bytes, projects)."""
        row = self.conn().execute("SELECT files, bytes, projects FROM totals").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def pending(self, limit: int) -> list[Row]:
        """Rows not read yet."""
        return self.conn().execute(SELECT + " WHERE state = 0 LIMIT ?", (limit,)).fetchall()

    # -- writing (inside write()) --------------------------------------------------------------
    @staticmethod
    def change(cur: sqlite3.Cursor, project: str | None, relpath: str | None) -> int:
        """Record a change for readers; its generation."""
        cur.execute("INSERT INTO changes(project, relpath) VALUES (?, ?)", (project, relpath))
        return int(cur.lastrowid or 0)

    @staticmethod
    def put(cur: sqlite3.Cursor, relpath: str, facts: distmeta.Facts) -> None:
        """Store what was read of a file (state 1), with its metadata."""
        cur.execute(
            "INSERT INTO files VALUES (?,?,?,?,?,?,?,?,?,1,?,?,?,?,?) ON CONFLICT(relpath) DO "
            "UPDATE SET dir=excluded.dir, kind=excluded.kind, project=excluded.project, "
            "name=excluded.name, version=excluded.version, size=excluded.size, "
            "mtime_ns=excluded.mtime_ns, ino=excluded.ino, state=1, sha256=excluded.sha256, "
            "requires_python=excluded.requires_python, "
            "metadata_sha256=excluded.metadata_sha256, summary=excluded.summary, "
            "source=excluded.source",
            (relpath, _dir_of(relpath), facts.kind, facts.project, facts.name, facts.version,
             facts.size, facts.mtime_ns, facts.ino, facts.sha256, facts.requires_python,
             facts.metadata_sha256, facts.summary, facts.source))
        if facts.metadata is not None:
            cur.execute("INSERT INTO metadata VALUES (?, ?) ON CONFLICT(relpath) DO UPDATE "
                        "SET data = excluded.data", (relpath, compress(facts.metadata)))
        else:
            cur.execute("DELETE FROM metadata WHERE relpath = ?", (relpath,))

    @staticmethod
    def put_pending(cur: sqlite3.Cursor, rows: t.Iterable[tuple[t.Any, ...]]) -> None:
        """Store files seen but not read: (relpath, kind, project, version, size, mtime, ino)."""
        cur.executemany(
            "INSERT INTO files(relpath, dir, kind, project, name, version, size, mtime_ns, ino, "
            "state) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, 0) ON CONFLICT(relpath) DO "
            "UPDATE SET size=excluded.size, mtime_ns=excluded.mtime_ns, ino=excluded.ino, "
            "state=0",
            ((r[0], _dir_of(r[0]), r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows))

    @staticmethod
    def delete(cur: sqlite3.Cursor, relpath: str) -> str | None:
        """Forget a file; the project it was under (None if it was not known)."""
        row = cur.execute("SELECT project FROM files WHERE relpath = ?", (relpath,)).fetchone()
        if row is None:
            return None
        cur.execute("DELETE FROM files WHERE relpath = ?", (relpath,))
        cur.execute("DELETE FROM metadata WHERE relpath = ?", (relpath,))
        return str(row[0])

    @staticmethod
    def refresh_projects(cur: sqlite3.Cursor, names: t.Iterable[str], gen: int) -> None:
        """Recompute the summary rows of these projects from their files."""
        for name in set(names):
            rows = cur.execute(
                "SELECT name, version, mtime_ns, summary, state FROM files "
                "WHERE project = ? AND kind != 'signature'", (name,)).fetchall()
            if not rows:
                cur.execute("DELETE FROM projects WHERE project = ?", (name,))
                continue
            known = [r for r in rows if r[4] == 1] or rows
            final = [r for r in known if not _prerelease(r[1])] or known
            best = max(final, key=lambda r: distmeta.version_key(r[1]))
            cur.execute(
                "INSERT INTO projects VALUES (?,?,?,?,?,?,?) ON CONFLICT(project) DO UPDATE "
                "SET name=excluded.name, latest_version=excluded.latest_version, "
                "last_upload_ns=excluded.last_upload_ns, summary=excluded.summary, "
                "files=excluded.files, gen=excluded.gen",
                (name, best[0], best[1], max(r[2] for r in rows), best[3], len(rows), gen))

    @staticmethod
    def trim_changes(cur: sqlite3.Cursor) -> None:
        """Keep the newest KEEP_CHANGES changes."""
        cur.execute("DELETE FROM changes WHERE gen <= (SELECT max(gen) FROM changes) - ?",
                    (KEEP_CHANGES,))


def _prerelease(version: str) -> bool:
    key = distmeta.version_key(version)
    return bool(key[0] == 1 and key[1].is_prerelease)


class SyncState:
    """The maintainer's acknowledgements, in a page of shared memory in the state directory.

    A reader that must not miss a change made just before (an unknown name: is it really
    unknown?) touches ``sync-request``; the maintainer sees that through inotify (or polls
    it), takes in every change queued before, and writes the time it did so here.
    """

    FILE = "maintainer.state"
    REQUEST = "sync-request"
    SIZE = 4096

    def __init__(self, state_dir: str, create: bool) -> None:
        import mmap

        self.request_path = os.path.join(state_dir, self.REQUEST)
        path = os.path.join(state_dir, self.FILE)
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o644)
        try:
            if create:
                if os.fstat(fd).st_size < self.SIZE:
                    os.ftruncate(fd, self.SIZE)
                with open(self.request_path, "ab"):
                    pass
            elif os.fstat(fd).st_size < self.SIZE:
                raise OSError("the maintainer's state is not written yet")
            self.key = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
            self._map = mmap.mmap(fd, self.SIZE)
        finally:
            os.close(fd)
        self._path = path

    # The page: seq (odd while written), acknowledged CLOCK_MONOTONIC ns, the wall-clock ns
    # of that moment, and the packages directory's mtime then (0: not a flat tree, or no
    # inotify: readers must ask).
    def acked(self) -> int:
        """CLOCK_MONOTONIC ns up to which every change is in the database."""
        return int.from_bytes(self._map[8:16], "little")

    def snapshot(self) -> tuple[int, int, int] | None:
        """(acknowledged, wall-clock then, top directory mtime then), or None mid-write."""
        seq = self._map[0:8]
        data = self._map[8:32]
        if seq != self._map[0:8] or int.from_bytes(seq, "little") & 1:
            return None  # being written (the page is read twice around the data)
        return (int.from_bytes(data[0:8], "little"), int.from_bytes(data[8:16], "little"),
                int.from_bytes(data[16:24], "little"))

    def ack(self, ns: int, root_mtime: int = 0) -> None:
        """Say that every change made before ``ns`` is in the database; ``root_mtime`` is the
        top directory's mtime then, for a tree without subdirectories (0 otherwise)."""
        seq = int.from_bytes(self._map[0:8], "little") | 1
        self._map[0:8] = seq.to_bytes(8, "little")
        self._map[8:32] = (ns.to_bytes(8, "little") + time.time_ns().to_bytes(8, "little")
                           + root_mtime.to_bytes(8, "little"))
        self._map[0:8] = (seq + 1).to_bytes(8, "little")

    def walking(self) -> bool:
        """The maintainer is comparing the tree with the database (at its start, after an
        overflow): it cannot acknowledge until that is done, so readers do not wait."""
        return self._map[32:33] == b"\x01"

    def set_walking(self, walking: bool) -> None:
        """Say whether a walk of the whole tree is under way."""
        self._map[32:33] = b"\x01" if walking else b"\x00"

    def request(self) -> None:
        """Ask the maintainer for an acknowledgement."""
        try:
            os.utime(self.request_path)
        except FileNotFoundError:
            with open(self.request_path, "ab"):
                pass

    def request_mtime(self) -> int:
        """When a request was made last (polling maintainers compare it)."""
        try:
            return os.stat(self.request_path).st_mtime_ns
        except OSError:
            return 0

    def current(self) -> bool:
        """The shared page is still the file the state directory holds."""
        try:
            st = os.stat(self._path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.key

    def close(self) -> None:
        """Unmap."""
        with contextlib.suppress(ValueError, BufferError):
            self._map.close()
