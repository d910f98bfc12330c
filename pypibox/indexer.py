"""The index's maintainer: one thread, in one process of all that share a packages directory.

Every PackageIndex runs a small thread that tries to take ``.pypibox/maintainer.lock``
(``flock``: it dies with its process, so another takes over within ``recheck`` seconds). The
holder compares the tree with the database when it starts (a walk, diffed in SQLite), then
follows changes: with inotify, the events of every directory; without, the mtime of every
directory every ``recheck`` seconds. Files seen but not read yet are read in the
background in small batches (readers read the ones they need themselves). Uploads and
removals made through the index's API write the database directly; the maintainer then
only confirms them.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import logging
import os
import sqlite3
import threading
import time
import typing as t

from . import distmeta, watch
from .indexdb import IndexDB, Row, SyncState, is_corruption

if t.TYPE_CHECKING:
    from .index import PackageIndex

log = logging.getLogger("pypibox.indexer")

#: A file whose last event is this old is read (a copy still writing keeps sending events).
QUIET = 0.25
#: After a final event (close after writing, rename into place, deletion).
SETTLE = 0.05
#: More paths waiting than this: forget them and compare the whole tree instead.
MAX_DIRTY = 10_000
#: A directory listed less than this after its last change is listed again (timestamps are
#: coarse; a copy may still be writing).
RACY_NS = 1_000_000_000
#: Background reading: files per batch, and the time one batch may take.
BATCH = 200
BATCH_SECONDS = 0.05
#: Without inotify: how often sync requests are looked for.
SYNC_POLL = 0.02
_STATE_WD = "\0state"  # the watch of the state directory (sync requests)
#: After a rebuild failed (a full or read-only disk), the next try.
REBUILD_RETRY = 30.0
#: Rows written per transaction when a walk found many changes.
WRITE_CHUNK = 20_000
#: More changed projects than this: their summaries are recomputed in SQL (the background
#: reading then completes them) and readers are told to forget everything.
BULK = 1000


class _Restart(Exception):
    """The database was replaced or rebuilt: start the session over (after an election if
    ``release``)."""

    def __init__(self, release: bool = False) -> None:
        super().__init__()
        self.release = release


def utf8_name(name: str) -> bool:
    """A directory entry name that is valid UTF-8 (os.scandir gives surrogates otherwise)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Maintainer:
    """The maintainer thread of one PackageIndex (idle unless it holds the lock)."""

    def __init__(self, index: PackageIndex) -> None:
        self.index = index
        self.root = index.root
        self.db: IndexDB = index.db
        self.recheck = index.recheck
        self.mode = index.watch
        self.stop = threading.Event()
        self.holding = False
        self.thread = threading.Thread(target=self._run, name="pypibox-index", daemon=True)
        self._lock_file: t.BinaryIO | None = None
        self._lock_key: tuple[int, int] | None = None
        self._instance = ""
        self._short = 0
        self._notify: watch.Inotify | None = None
        self._wds: dict[int, str] = {}
        self._dirs: dict[str, tuple[int, bool]] = {}   # dir -> (mtime_ns, racy)
        self._dirty: dict[str, float] = {}             # relpath -> when to look at it
        self._urgent: dict[str, None] = {}             # pending files events named: read first
        self._subtrees: set[str] = set()
        self._full = False
        self._cursor = ""
        self._skip: dict[str, float] = {}
        self._db_size = 0
        self._warned_names: set[str] = set()
        self._sync: SyncState | None = None
        self._sync_wanted = False
        self._sync_seen = 0
        self._poll_logged = False
        self.sessions = 0
        self.walks = 0     # tree walks (a test counts them: the API's changes walk nothing)

    def start(self) -> None:
        """Start the thread."""
        self.thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and give up the lock."""
        self.stop.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        self._release()

    # -- election ------------------------------------------------------------------------------
    def _acquire(self) -> bool:
        path = os.path.join(self.db.state_dir, "maintainer.lock")
        try:
            os.makedirs(self.db.state_dir, exist_ok=True)
            handle = open(path, "a+b")  # noqa: SIM115 - held for the whole session
        except OSError:
            return False
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        st = os.fstat(handle.fileno())
        self._lock_file, self._lock_key = handle, (st.st_dev, st.st_ino)
        return True

    def _still_holding(self) -> bool:
        """The lock file we hold is still the one others would lock (not deleted by hand)."""
        try:
            st = os.stat(os.path.join(self.db.state_dir, "maintainer.lock"))
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._lock_key

    def _release(self) -> None:
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self._lock_file.close()
            self._lock_file = None
        self.holding = False
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    def _run(self) -> None:
        while not self.stop.is_set():
            if not self.holding:
                if not self._acquire():
                    self.stop.wait(self.recheck)
                    continue
                self.holding = True
            try:
                self._session()
            except _Restart as restart:
                if not restart.release:
                    continue  # keep the lock: a new session on the new database
            except Exception:  # the thread must live on; the log says why
                log.exception("the index maintainer failed; it starts over in a second")
                self.stop.wait(1.0)
            self._release()

    # -- a session -----------------------------------------------------------------------------
    def _session(self) -> None:
        self.sessions += 1
        if self.db.pointer_moved() or not self.db.intact():
            self.db.open()
        self.index.forget_all()
        self._instance = self.db.instance
        self._remove_old_instances()
        self._db_size = self._size()
        self._wds.clear()
        self._dirs.clear()
        self._dirty.clear()
        self._subtrees.clear()
        self._skip.clear()
        self._urgent.clear()
        self._cursor = ""
        if self._notify is not None:
            self._notify.close()
        self._notify = watch.Inotify.open() if self.mode != "poll" else None
        if self._notify is None and self.mode != "poll" and not self._poll_logged:
            log.warning("inotify is not available: the index polls its directories every "
                        "%g s", self.recheck)
            self._poll_logged = True
        if self._sync is not None:
            self._sync.close()
        self._sync = SyncState(self.db.state_dir, create=True)
        self._sync_seen = self._sync.request_mtime()
        self._watch_dir(_STATE_WD)
        started = time.monotonic()
        self._guard(functools.partial(self._reconcile, "", recursive=True))
        self._ack(time.monotonic_ns())
        log.info("the index compared %d files with the tree in %.2f s (%s)",
                 self.db.totals()[0], time.monotonic() - started,
                 "inotify" if self._notify else "polling")
        next_health = next_poll = time.monotonic() + self.recheck
        next_trim = time.monotonic() + 60
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= next_health:
                next_health = now + self.recheck
                self._guard(self._health)
            # With inotify there is no polling: its deadline must not end every wait at once.
            due = next_health if self._notify is not None else min(next_health, next_poll)
            wait = max(0.0, due - now)
            if self._dirty:
                wait = min(wait, max(0.0, min(self._dirty.values()) - now))
            busy = self._guard(self._examine_some)
            if busy:
                wait = 0.0
            if self._notify is not None:
                before = time.monotonic_ns()
                events = self._notify.read(wait)
                self._guard(functools.partial(self._events, events))
                if not events and not self._dirty and not self._subtrees and not self._full:
                    self._ack(before)  # nothing happened: everything is in
            else:
                if wait:
                    self.stop.wait(min(wait, SYNC_POLL))
                seen = self._sync.request_mtime()
                if seen != self._sync_seen:
                    self._sync_seen, self._sync_wanted = seen, True
            if self._sync_wanted:
                self._guard(self._synchronise)
            if self._notify is None and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.recheck
                self._guard(self._poll)
            if self._full:
                self._full = False
                self._subtrees.clear()
                self._dirty.clear()
                self._guard(functools.partial(self._reconcile, "", recursive=True))
            for top in sorted(self._subtrees):
                self._subtrees.discard(top)
                self._guard(functools.partial(self._reconcile, top, recursive=True))
            self._guard(self._settle)
            if time.monotonic() >= next_trim:
                next_trim = time.monotonic() + 60
                self._guard(self._trim)

    def _synchronise(self) -> None:
        """A reader asked: take in every change queued until now, then acknowledge."""
        self._sync_wanted = False
        now = time.monotonic_ns()
        if self._notify is not None:
            while events := self._notify.read(0):
                self._events(events)
        else:
            self._poll()
        if self._full:
            self._full = False
            self._reconcile("", recursive=True)
        for top in sorted(self._subtrees):
            self._subtrees.discard(top)
            self._reconcile(top, recursive=True)
        self._settle(force=True)
        self._ack(now)

    def _ack(self, ns: int) -> None:
        """Acknowledge; with inotify and a flat tree, with the top directory's mtime, which
        lets readers skip asking while it stays put."""
        if self._sync is None:
            return
        root_mtime = 0
        if self._notify is not None and list(self._dirs) == [""]:
            try:
                root_mtime = os.stat(self.root).st_mtime_ns
            except OSError:
                root_mtime = 0
        self._sync.ack(ns, root_mtime)

    def _remove_old_instances(self) -> None:
        """Databases the pointer no longer names (left by a restore over a volume, or by a
        rebuild another process was still using) go once they have been quiet 10 minutes."""
        keep = self.db.instance
        try:
            names = os.listdir(self.db.state_dir)
        except OSError:
            return
        for name in names:
            if not name.startswith("index-") or name.startswith(keep):
                continue
            path = os.path.join(self.db.state_dir, name)
            with contextlib.suppress(OSError):
                if time.time() - os.stat(path).st_mtime > 600:
                    os.unlink(path)
                    log.info("removed the old index database file %s", name)

    def _guard(self, work: t.Callable[[], t.Any]) -> t.Any:
        """Run a step; a corrupt database is rebuilt (and the session restarted)."""
        try:
            return work()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                log.warning("the index database is busy or full (%s); retrying", exc)
                self.stop.wait(1.0)
                return None
            log.warning("the index database is damaged (%s): rebuilding it from the files", exc)
            try:
                self.db.rebuild(self.db.instance)
            except (OSError, sqlite3.Error) as again:  # a full or read-only disk
                log.warning("cannot rebuild the index database (%s); trying again in %g s",
                            again, REBUILD_RETRY)
                self.stop.wait(REBUILD_RETRY)
            raise _Restart() from None

    def _size(self) -> int:
        try:
            return os.path.getsize(self.db.path)
        except OSError:
            return 0

    def _health(self) -> None:
        """The database is still the one we use, and whole (SQLite never shrinks it)."""
        if not self._still_holding():
            log.warning("the index maintainer's lock file was removed; electing again")
            raise _Restart(release=True)
        if self.db.pointer_moved() or self.db.instance != self._instance:
            raise _Restart()
        size = self._size()
        self._short = self._short + 1 if self.db.cut_short() else 0
        if not self.db.intact() or size < self._db_size or self._short >= 2:
            log.warning("the index database %s was damaged or cut short: rebuilding it from "
                        "the files", self.db.instance)
            raise sqlite3.DatabaseError("database disk image is malformed (cut short)")
        self._db_size = size

    # -- walking -------------------------------------------------------------------------------
    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _warn_name(self, rel: str, name: str) -> None:
        shown = os.path.join(rel, name).encode("utf-8", "surrogateescape")
        key = repr(shown)
        if key in self._warned_names or len(self._warned_names) > 1000:
            return
        self._warned_names.add(key)
        log.warning("skipping %r in the packages directory: its name is not valid UTF-8 "
                    "(rename it to list it)", shown)

    def _watch_dir(self, rel: str) -> None:
        if self._notify is None:
            return
        try:
            wd = self._notify.add(self.db.state_dir if rel == _STATE_WD else self._abs(rel))
        except watch.WatchLimit:
            log.warning("the kernel allows no more inotify watches "
                        "(fs.inotify.max_user_watches): the index polls its directories "
                        "every %g s instead", self.recheck)
            self._notify.close()
            self._notify = None
            self._wds.clear()
            return
        except OSError:
            return
        self._wds[wd] = rel

    def _walk(self, top: str, recursive: bool, listed: list[str]
              ) -> t.Iterator[tuple[str, str, int, int, int]]:
        """(relpath, kind, size, mtime_ns, ino) of each distribution file under ``top``.

        Watches every directory before listing it (no event is missed in between). Without
        ``recursive``, subdirectories already known are left to their own checks.
        """
        stack = [top]
        while stack:
            rel = stack.pop()
            path = self._abs(rel)
            self._watch_dir(rel)
            try:
                mtime = os.stat(path).st_mtime_ns
                entries = os.scandir(path)
            except OSError:
                self._dirs.pop(rel, None)
                continue
            listed_at = time.time_ns()
            racy = listed_at - mtime < RACY_NS
            listed.append(rel)
            subdirs = set()
            with entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    if not utf8_name(name):
                        self._warn_name(rel, name)
                        continue
                    child = f"{rel}/{name}" if rel else name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.add(child)
                            if recursive or child not in self._dirs:
                                stack.append(child)
                            continue
                        if not distmeta.is_distribution(name) or not entry.is_file():
                            continue
                        st = entry.stat()
                    except OSError:
                        continue
                    if listed_at - st.st_mtime_ns < RACY_NS:
                        racy = True
                    yield (child, distmeta.kind_of(name), st.st_size, st.st_mtime_ns,
                           st.st_ino)
            if not recursive:
                for known in [d for d in self._dirs if d != rel and
                              d.rpartition("/")[0] == rel and d not in subdirs]:
                    self._forget_dir(known)
            self._dirs[rel] = (mtime, racy)

    def _forget_dir(self, rel: str) -> None:
        """A directory went away: its files go in the next reconcile of that subtree."""
        for d in [d for d in self._dirs if d == rel or d.startswith(rel + "/")]:
            self._dirs.pop(d, None)
        self._subtrees.add(rel)

    def _reconcile(self, top: str, recursive: bool) -> None:
        """Compare the files under ``top`` with the database and write the differences."""
        self.walks += 1
        conn = self.db.conn()
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS scan(relpath TEXT PRIMARY KEY, "
                     "kind TEXT, size INT, mtime_ns INT, ino INT) WITHOUT ROWID")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS scan_dirs(dir TEXT PRIMARY KEY) "
                     "WITHOUT ROWID")
        conn.execute("DELETE FROM temp.scan")
        conn.execute("DELETE FROM temp.scan_dirs")
        if recursive:
            for wd in [wd for wd, d in self._wds.items() if d != _STATE_WD and
                       (top == "" or d == top or d.startswith(top + "/"))]:
                if self._notify is not None:
                    self._notify.remove(wd)
                self._wds.pop(wd, None)
        listed: list[str] = []
        found = self._walk(top, recursive, listed)
        whole = recursive and top == ""
        if whole and self._sync is not None:
            self._sync.set_walking(True)
        try:
            while True:
                chunk = list(itertools.islice(found, 10_000))
                if not chunk:
                    break
                conn.execute("BEGIN")
                conn.executemany("INSERT OR REPLACE INTO temp.scan VALUES (?,?,?,?,?)", chunk)
                conn.execute("COMMIT")
                self._meanwhile()
            self._finish_reconcile(conn, top, recursive, listed)
        finally:
            if whole and self._sync is not None:
                self._sync.set_walking(False)

    def _meanwhile(self) -> None:
        """During a long walk: take in the events queued meanwhile (the kernel's queue is
        bounded), and write what settled; the walk's own result comes later."""
        if self._notify is not None:
            while events := self._notify.read(0):
                self._events(events)
        self._settle()

    def _finish_reconcile(self, conn: sqlite3.Connection, top: str, recursive: bool,
                          listed: list[str]) -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT OR IGNORE INTO temp.scan_dirs VALUES (?)",
                         ((d,) for d in listed))
        conn.execute("COMMIT")
        conn.execute("DROP TABLE IF EXISTS temp.diff")
        conn.execute("DROP TABLE IF EXISTS temp.gone")
        conn.execute(
            "CREATE TEMP TABLE diff AS SELECT s.relpath, s.kind, s.size, s.mtime_ns, s.ino, "
            "f.project FROM temp.scan s LEFT JOIN files f ON f.relpath = s.relpath "
            "WHERE f.relpath IS NULL OR f.size != s.size OR f.mtime_ns != s.mtime_ns "
            "OR f.ino != s.ino")
        if recursive and top:
            conn.execute(
                "CREATE TEMP TABLE gone AS SELECT relpath, project FROM files WHERE "
                "relpath >= ? AND relpath < ? AND relpath NOT IN (SELECT relpath FROM temp.scan)",
                (top + "/", top + "0"))
        elif recursive:
            conn.execute("CREATE TEMP TABLE gone AS SELECT relpath, project FROM files WHERE "
                         "relpath NOT IN (SELECT relpath FROM temp.scan)")
        else:
            conn.execute(
                "CREATE TEMP TABLE gone AS SELECT relpath, project FROM files WHERE dir IN "
                "(SELECT dir FROM temp.scan_dirs) AND relpath NOT IN "
                "(SELECT relpath FROM temp.scan)")
        conn.execute("DELETE FROM temp.scan")
        ready = self.db.meta("ready") == "1"
        try:
            self._apply(conn, finish=not ready and top == "" and recursive)
        finally:
            conn.execute("DROP TABLE IF EXISTS temp.diff")
            conn.execute("DROP TABLE IF EXISTS temp.gone")

    def _apply(self, conn: sqlite3.Connection, finish: bool) -> None:
        """Write what a walk found (temp.diff, temp.gone): gone files deleted, new and changed
        ones pending. Chunked transactions; with ``finish``, the index is then ready."""
        n_new = conn.execute("SELECT count(*) FROM temp.diff").fetchone()[0]
        n_gone = conn.execute("SELECT count(*) FROM temp.gone").fetchone()[0]
        bulk = n_new + n_gone > BULK
        for table, count in (("gone", n_gone), ("diff", n_new)):
            after = 0
            while count:
                rows = conn.execute(f"SELECT rowid, * FROM temp.{table} WHERE rowid > ? "
                                    f"ORDER BY rowid LIMIT ?", (after, WRITE_CHUNK)).fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                with self.db.write() as cur:
                    touched = self._write_walk(cur, table, rows, bulk)
                    gen = self.db.change(cur, None, None) if bulk else self._last(cur)
                    self._projects(cur, touched, gen, bulk)
        if finish:
            with self.db.write() as cur:
                cur.execute("UPDATE meta SET value = '1' WHERE key = 'ready'")
                self.db.change(cur, None, None)
        if n_new or n_gone or finish:
            self.index.changed_here()
        if n_new or n_gone:
            log.info("the index found %d new or changed and %d removed files", n_new, n_gone)

    def _write_walk(self, cur: sqlite3.Cursor, table: str, rows: list[Row], bulk: bool
                    ) -> set[str]:
        touched: set[str] = set()
        if table == "gone":
            for _rowid, relpath, project in rows:
                if distmeta.stat_key(self._abs(relpath)) is not None:
                    continue  # put in place after the walk (an upload): it stays
                self.db.delete(cur, relpath)
                touched.add(project)
                if not bulk:
                    self.db.change(cur, project, relpath)
            return touched
        pending = []
        for _rowid, relpath, kind, size, mtime, ino, project in rows:
            version = ""
            if project is None:
                guessed = distmeta.quick_guess(relpath.rsplit("/", 1)[-1])
                project, version = guessed if guessed else ("", "")
            pending.append((relpath, kind, project, version, size, mtime, ino))
            touched.add(project)
            if not bulk:
                self.db.change(cur, project, relpath)
        self.db.put_pending(cur, pending)
        return touched

    @staticmethod
    def _last(cur: sqlite3.Cursor) -> int:
        row = cur.execute("SELECT max(gen) FROM changes").fetchone()
        return int(row[0] or 0)

    def _projects(self, cur: sqlite3.Cursor, names: set[str], gen: int, bulk: bool) -> None:
        names.discard("")
        if not names:
            return
        if not bulk or len(names) <= BULK:
            self.db.refresh_projects(cur, names, gen)
            return
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS touched(project TEXT PRIMARY KEY) "
                    "WITHOUT ROWID")
        cur.execute("DELETE FROM temp.touched")
        cur.executemany("INSERT OR IGNORE INTO temp.touched VALUES (?)", ((n,) for n in names))
        cur.execute(
            "INSERT INTO projects SELECT project, min(name), NULL, max(mtime_ns), NULL, "
            "count(*), ? FROM files WHERE kind != 'signature' AND project IN "
            "(SELECT project FROM temp.touched) GROUP BY project ON CONFLICT(project) DO "
            "UPDATE SET files = excluded.files, last_upload_ns = excluded.last_upload_ns, "
            "gen = excluded.gen", (gen,))
        cur.execute(
            "DELETE FROM projects WHERE project IN (SELECT project FROM temp.touched) AND NOT "
            "EXISTS (SELECT 1 FROM files f WHERE f.project = projects.project AND "
            "f.kind != 'signature')")
        cur.execute("DELETE FROM temp.touched")

    # -- events and polling --------------------------------------------------------------------
    def _events(self, events: list[watch.Event]) -> None:
        now = time.monotonic()
        for ev in events:
            if ev.mask & watch.IN_Q_OVERFLOW:
                log.warning("the inotify queue overflowed: the index compares the whole tree")
                self._full = True
                continue
            rel = self._wds.get(ev.wd)
            if rel is None:
                continue
            if rel == _STATE_WD:
                if ev.name == SyncState.REQUEST.encode():
                    self._sync_wanted = True
                continue
            if ev.mask & watch.IN_IGNORED:
                self._wds.pop(ev.wd, None)
                continue
            if ev.mask & (watch.IN_DELETE_SELF | watch.IN_MOVE_SELF):
                if rel == "":
                    log.warning("the packages directory itself was moved or deleted")
                    self._full = True
                continue
            name = os.fsdecode(ev.name)
            if not name or name.startswith("."):
                continue
            if not utf8_name(name):
                self._warn_name(rel, name)
                continue
            child = f"{rel}/{name}" if rel else name
            if ev.mask & watch.IN_ISDIR:
                if ev.mask & (watch.IN_CREATE | watch.IN_MOVED_TO | watch.IN_DELETE
                              | watch.IN_MOVED_FROM):
                    self._subtrees.add(child)
                continue
            if not distmeta.is_distribution(name):
                continue
            final = ev.mask & (watch.IN_CLOSE_WRITE | watch.IN_MOVED_TO | watch.IN_DELETE
                               | watch.IN_MOVED_FROM | watch.IN_ATTRIB)
            self._dirty[child] = now + (SETTLE if final else QUIET)
        if len(self._dirty) > MAX_DIRTY:
            log.warning("more than %d files changed at once: the index compares the whole tree",
                        MAX_DIRTY)
            self._dirty.clear()
            self._full = True

    def _settle(self, force: bool = False) -> None:
        """Write what happened to the files whose events have settled (all, with ``force``):
        gone ones are forgotten, new and changed ones stored as seen, to be read next (by the
        background reading, first in line, or by a reader that needs them sooner)."""
        now = time.monotonic()
        due = [p for p, when in self._dirty.items() if force or when <= now]
        if not due:
            return
        for relpath in due:
            self._dirty.pop(relpath, None)
        with self.db.write() as cur:
            touched = set()
            for relpath in due:
                key = distmeta.stat_key(self._abs(relpath))
                row = cur.execute("SELECT project, state, size, mtime_ns, ino FROM files "
                                  "WHERE relpath = ?", (relpath,)).fetchone()
                if key is None:
                    if row is not None:
                        self.db.delete(cur, relpath)
                        self.db.change(cur, row[0], relpath)
                        touched.add(row[0])
                    continue
                if row is not None and row[1] != 0 and tuple(row[2:5]) == tuple(key):
                    continue  # known as it is (an upload through the API, or a touch)
                if row is not None:
                    project, version = row[0], ""
                else:
                    guessed = distmeta.quick_guess(relpath.rsplit("/", 1)[-1])
                    project, version = guessed if guessed else ("", "")
                name = relpath.rsplit("/", 1)[-1]
                self.db.put_pending(cur, [(relpath, distmeta.kind_of(name), project, version,
                                           key.size, key.mtime_ns, key.ino)])
                self.db.change(cur, project, relpath)
                touched.add(project)
                if len(self._urgent) < MAX_DIRTY:
                    self._urgent[relpath] = None
            if touched:
                self.db.refresh_projects(cur, touched - {""}, self._last(cur))
        if touched:
            self.index.changed_here()

    def _poll(self) -> None:
        """Without inotify: list again every directory whose mtime moved (or was too recent)."""
        for rel, (mtime, racy) in list(self._dirs.items()):
            if rel not in self._dirs:
                continue
            try:
                now_mtime = os.stat(self._abs(rel)).st_mtime_ns
            except OSError:
                self._forget_dir(rel)
                continue
            if now_mtime != mtime or racy:
                self._reconcile(rel, recursive=False)

    # -- reading in the background -------------------------------------------------------------
    def _examine_some(self) -> bool:
        """Read pending files for at most BATCH_SECONDS: those events named first, then the
        rest in path order. True if there may be more to do."""
        conn = self.db.conn()
        urgent = list(itertools.islice(self._urgent, BATCH))
        for relpath in urgent:
            self._urgent.pop(relpath, None)
        rows = [r[0] for r in conn.execute(
            "SELECT relpath FROM files WHERE state = 0 AND relpath > ? ORDER BY relpath "
            "LIMIT ?", (self._cursor, BATCH)).fetchall()]
        if not rows and not urgent:
            if self._cursor:
                self._cursor = ""
                return True
            return False
        deadline = time.monotonic() + BATCH_SECONDS
        now = time.monotonic()
        results: list[tuple[str, distmeta.Facts | None, bool]] = []
        worked = False
        for position, relpath in enumerate(urgent + rows):
            if position >= len(urgent):
                self._cursor = relpath
            if self._skip.get(relpath, 0.0) > now:
                continue
            worked = True
            facts = self.index.read_pending(relpath, write=False)
            if facts is None:
                if distmeta.stat_key(self._abs(relpath)) is None:
                    results.append((relpath, None, True))
                elif len(self._skip) < MAX_DIRTY:
                    self._skip[relpath] = now + 1.0  # changing: again in a second
            else:
                results.append((relpath, facts, False))
            if time.monotonic() > deadline:
                for rest in urgent[position + 1:]:
                    self._urgent[rest] = None
                break
        if results:
            self.index.store_read(results)
        # Only files skipped for now (still changing): nothing to do until they settle, and
        # no reason to spin.
        return worked

    def _trim(self) -> None:
        with self.db.write() as cur:
            self.db.trim_changes(cur)
        self._skip = {k: v for k, v in self._skip.items() if v > time.monotonic()}
