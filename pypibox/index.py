"""An in-memory index of the packages directory, kept current by cheap change checks.

The tree is walked like pypiserver walks it (recursive, dot-files and dot-directories
ignored). Each request costs two ``stat`` calls (the root directory and a stamp file that
uploads and removals touch); every ``recheck`` seconds every known directory is stat-ed
and only the directories whose mtime moved are listed again. A file's sha256 and core
metadata are computed once, when a page that lists it is first rendered, and kept in
sidecar files under ``<packages>/.pypibox/`` so that a restart does not hash again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

from pypiserver.pkg_helpers import guess_pkgname_and_version, normalize_pkgname, parse_version

from . import distmeta

log = logging.getLogger("pypibox.index")

STATE_DIR = ".pypibox"
#: A directory whose mtime (or one of whose files' mtime) is this close to the time we
#: listed it may still change unseen (timestamp granularity, a copy in progress): it is
#: listed again at each periodic check until it has been quiet that long.
RACY_NS = 1_000_000_000
SIDECAR_VERSION = 1
#: The media types a page is cached in (see simple_api).
PAGE_KINDS = ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.v1+html",
              "text/html")


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What is known about a file's content: computed once per (size, mtime)."""

    sha256: str
    requires_python: str | None
    metadata_sha256: str | None


@dataclass(eq=False, slots=True)
class FileEntry:
    """One distribution file of the packages directory."""

    relpath: str          # relative to the root, with '/' separators
    path: str             # absolute path on disk
    project: str          # PEP 503 normalised name
    version: str
    size: int
    mtime_ns: int
    info: FileInfo | None = None

    @property
    def filename(self) -> str:
        """The base name of the file."""
        return self.relpath.rsplit("/", 1)[-1]

    @property
    def is_wheel(self) -> bool:
        """True for a ``.whl`` file."""
        return self.relpath.endswith(".whl")

    @property
    def listed(self) -> bool:
        """Appears on its project's page (signatures are downloadable but not listed)."""
        return not self.relpath.endswith(".asc")

    @property
    def sha256(self) -> str:
        """The file's sha256 (its info must be loaded)."""
        assert self.info is not None
        return self.info.sha256

    @property
    def requires_python(self) -> str | None:
        """Requires-Python of its metadata."""
        return self.info.requires_python if self.info else None

    @property
    def metadata_sha256(self) -> str | None:
        """sha256 of the wheel's extracted METADATA."""
        return self.info.metadata_sha256 if self.info else None

    def sort_key(self) -> tuple[t.Any, ...]:
        """Order on a project page: version, then path (as pypiserver orders them)."""
        return (parse_version(self.version), self.relpath)


@dataclass
class _Dir:
    mtime_ns: int
    racy: bool
    files: dict[str, FileEntry] = field(default_factory=dict)   # name -> entry
    subdirs: list[str] = field(default_factory=list)            # relpaths


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class PackageIndex:
    """The packages directory as projects and files, with per-project page caches."""

    def __init__(self, root: Path, recheck: float = 0.5) -> None:
        self.root = str(Path(root).resolve())
        self.recheck = recheck
        self.state_dir = os.path.join(self.root, STATE_DIR)
        self.stamp_path = os.path.join(self.state_dir, "stamp")
        self._lock = threading.RLock()
        self._write_warned = False
        self.last_changed: set[str] = set()
        self._dirs: dict[str, _Dir] = {}
        self.files: dict[str, FileEntry] = {}                   # relpath -> entry
        self.projects_by_name: dict[str, tuple[FileEntry, ...]] = {}    # name -> listed entries
        self._quick: tuple[t.Any, t.Any] | None = None
        self._next_full = 0.0
        self._verified: dict[str, float] = {}
        self.generation = 0

    # -- change detection --------------------------------------------------------------
    def _quick_key(self) -> tuple[t.Any, t.Any]:
        return (_stat_key(self.root), _stat_key(self.stamp_path))

    def refresh(self, force: bool = False) -> None:
        """Bring the index up to date if anything may have changed (cheap when nothing did)."""
        quick = self._quick_key()
        now = time.monotonic()
        if not force and quick == self._quick and now < self._next_full:
            return
        with self._lock:
            quick = self._quick_key()
            now = time.monotonic()
            if not force and quick == self._quick and now < self._next_full:
                return
            self._update()
            self._quick = quick
            self._next_full = time.monotonic() + self.recheck

    def touch(self) -> None:
        """Record a change made by this process: every worker sees it at its next request."""
        # A new inode each time: a change even within one tick of the file system clock.
        self._write(self.stamp_path, f"{time.time_ns()} {os.getpid()}\n".encode())
        self.refresh(force=True)
        # Hash and extract the metadata of what just arrived now, not in a later request.
        for name in self.last_changed:
            self.ensure_info(self.projects_by_name.get(name, ()))

    def _update(self) -> None:
        changed: set[str] = set()
        self.last_changed = changed
        if not self._dirs:
            self._scan_dir("", changed)
        else:
            for rel in list(self._dirs):
                state = self._dirs.get(rel)
                if state is None:
                    continue
                try:
                    st = os.stat(self._abs(rel))
                except OSError:
                    self._drop_dir(rel, changed)
                    continue
                if st.st_mtime_ns != state.mtime_ns or state.racy:
                    self._scan_dir(rel, changed)
        if changed:
            self._rebuild(changed)

    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _drop_dir(self, rel: str, changed: set[str]) -> None:
        state = self._dirs.pop(rel, None)
        if state is None:
            return
        for entry in state.files.values():
            self.files.pop(entry.relpath, None)
            changed.add(entry.project)
        for sub in state.subdirs:
            self._drop_dir(sub, changed)

    def _scan_dir(self, rel: str, changed: set[str]) -> None:
        path = self._abs(rel)
        listed_at = time.time_ns()
        try:
            mtime_ns = os.stat(path).st_mtime_ns
            items = list(os.scandir(path))
        except OSError as exc:
            log.warning("cannot list %s: %s", path, exc.strerror)
            self._drop_dir(rel, changed)
            return
        old = self._dirs.get(rel)
        state = _Dir(mtime_ns=mtime_ns, racy=listed_at - mtime_ns < RACY_NS)
        subdirs: list[str] = []
        for item in items:
            if item.name.startswith("."):
                continue
            child = f"{rel}/{item.name}" if rel else item.name
            try:
                if item.is_dir(follow_symlinks=False):
                    subdirs.append(child)
                    continue
                if not item.is_file():
                    continue
                st = item.stat()
            except OSError:
                continue
            if listed_at - st.st_mtime_ns < RACY_NS:
                state.racy = True  # still being written, perhaps: look again next time
            guess = guess_pkgname_and_version(item.name)
            if guess is None:
                continue
            prev = old.files.get(item.name) if old else None
            if prev is not None and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns:
                state.files[item.name] = prev
                continue
            entry = FileEntry(relpath=child, path=os.path.join(path, item.name),
                              project=normalize_pkgname(guess[0]), version=guess[1],
                              size=st.st_size, mtime_ns=st.st_mtime_ns)
            state.files[item.name] = entry
            self.files[child] = entry
            changed.add(entry.project)
            if prev is not None:
                changed.add(prev.project)
        if old:
            for name, prev in old.files.items():
                if name not in state.files:
                    self.files.pop(prev.relpath, None)
                    changed.add(prev.project)
                    self._forget_sidecar(prev.relpath)
            for sub in old.subdirs:
                if sub not in subdirs:
                    self._drop_dir(sub, changed)
        state.subdirs = subdirs
        self._dirs[rel] = state
        for sub in subdirs:
            if sub not in self._dirs:
                self._scan_dir(sub, changed)

    def _rebuild(self, changed: set[str]) -> None:
        by_project: dict[str, list[FileEntry]] = {name: [] for name in changed}
        for entry in self.files.values():
            if entry.project in by_project and entry.listed:
                by_project[entry.project].append(entry)
        projects = dict(self.projects_by_name)
        for name, entries in by_project.items():
            if entries:
                projects[name] = tuple(sorted(entries, key=FileEntry.sort_key))
            else:
                projects.pop(name, None)
        self.projects_by_name = projects
        self.generation += 1

    def verify(self, name: str) -> None:
        """Notice files of a project changed in place (rewritten, new mtime), at most every
        ``recheck`` seconds: a directory's mtime does not move when a file in it does."""
        now = time.monotonic()
        if self._verified.get(name, 0.0) > now:
            return
        self._verified[name] = now + self.recheck
        stale = set()
        for entry in self.projects_by_name.get(name, ()):
            try:
                st = os.stat(entry.path)
            except OSError:
                st = None
            if st is None or (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
                stale.add(entry.relpath.rpartition("/")[0])
        if stale:
            with self._lock:
                changed: set[str] = set()
                for rel in stale:
                    if rel in self._dirs:
                        self._scan_dir(rel, changed)
                if changed:
                    self._rebuild(changed)

    # -- lookups -----------------------------------------------------------------------
    def project(self, name: str) -> tuple[FileEntry, ...] | None:
        """The listed files of a project (normalised name), with their facts, or None."""
        self.verify(name)
        entries = self.projects_by_name.get(name)
        if entries is not None:
            self.ensure_info(entries)
        return entries

    def project_stamp(self, name: str) -> object:
        """What changes when the project's files change; None for an unknown project."""
        self.verify(name)
        return self.projects_by_name.get(name)

    def projects(self, query: str | None = None, offset: int = 0,
                 limit: int = 50) -> tuple[list[t.Any], int]:
        """Projects by name (a stand-in until the SQLite index: no summaries)."""
        from types import SimpleNamespace

        names = sorted(n for n in self.projects_by_name if not query or query in n)
        rows = []
        for name in names[offset: offset + limit]:
            entries = self.projects_by_name[name]
            rows.append(SimpleNamespace(project=name, name=name, summary=None,
                                        latest_version=entries[-1].version,
                                        last_upload_ns=max(e.mtime_ns for e in entries),
                                        files=len(entries)))
        return rows, len(names)

    def project_names(self) -> list[str]:
        """Every project's normalised name."""
        return list(self.projects_by_name)

    def stats(self) -> tuple[int, int]:
        """Stored files (signatures left out) and their bytes."""
        listed = [e for e in self.files.values() if e.listed]
        return len(listed), sum(e.size for e in listed)

    def files_page(self, offset: int, limit: int) -> tuple[list[FileEntry], int]:
        """Stored files by path, a page at a time, and how many there are."""
        names = sorted(self.files)
        page = [self.files[n] for n in names[offset: offset + limit]]
        return page, len(names)

    def add(self, relpath: str, sha256: str, dist: object) -> None:
        """The write path stored a file."""
        self.touch()

    def remove(self, relpath: str) -> None:
        """The write path removed a file."""
        self.touch()

    def metadata(self, entry: FileEntry) -> bytes | None:
        """The wheel's METADATA, as announced."""
        return self.read_core_metadata(entry)

    def file(self, relpath: str) -> FileEntry | None:
        """The file at ``relpath`` (as in a /packages/ URL), or None."""
        return self.files.get(relpath)

    def ensure_info(self, entries: t.Iterable[FileEntry]) -> None:
        """Make sure every entry knows its hash and metadata (sidecar, or computed once).

        No lock: two threads that meet on one new file compute the same result, while a
        lock would make every page wait for the hashing of one large file.
        """
        for entry in entries:
            if entry.info is None:
                entry.info = self._load_info(entry)

    # -- sidecars ----------------------------------------------------------------------
    def _sidecar(self, relpath: str, suffix: str) -> str:
        return os.path.join(self.state_dir, "files", relpath + suffix)

    def metadata_path(self, entry: FileEntry) -> str:
        """Where the extracted core metadata of a wheel is kept."""
        return self._sidecar(entry.relpath, ".metadata")

    def _load_info(self, entry: FileEntry) -> FileInfo:
        side = self._sidecar(entry.relpath, ".json")
        try:
            with open(side, "rb") as handle:
                data = json.load(handle)
            if (data.get("v") == SIDECAR_VERSION and data.get("size") == entry.size
                    and data.get("mtime_ns") == entry.mtime_ns):
                info = FileInfo(data["sha256"], data.get("requires_python"),
                                data.get("metadata_sha256"))
                if info.metadata_sha256 is None or self._metadata_ok(entry, info):
                    return info
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return self._compute_info(entry)

    def _metadata_ok(self, entry: FileEntry, info: FileInfo) -> bool:
        try:
            with open(self.metadata_path(entry), "rb") as handle:
                return hashlib.sha256(handle.read()).hexdigest() == info.metadata_sha256
        except OSError:
            return False

    def _compute_info(self, entry: FileEntry) -> FileInfo:
        digest = hashlib.sha256()
        try:
            with open(entry.path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except OSError as exc:
            log.warning("cannot read %s: %s", entry.path, exc.strerror)
        raw = distmeta.read_metadata(entry.path)
        requires_python = distmeta.requires_python(raw) if raw is not None else None
        metadata_sha = None
        if raw is not None and entry.is_wheel:
            metadata_sha = hashlib.sha256(raw).hexdigest()
            if not self._write(self.metadata_path(entry), raw):
                metadata_sha = None
        info = FileInfo(digest.hexdigest(), requires_python, metadata_sha)
        record = {"v": SIDECAR_VERSION, "size": entry.size, "mtime_ns": entry.mtime_ns,
                  "sha256": info.sha256, "requires_python": requires_python,
                  "metadata_sha256": metadata_sha}
        self._write(self._sidecar(entry.relpath, ".json"), json.dumps(record).encode())
        return info

    def _write(self, path: str, data: bytes) -> bool:
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
            return True
        except OSError as exc:
            if not self._write_warned:  # once: a read-only directory would repeat it per file
                log.warning("cannot write the cache file %s: %s (hashes are kept in memory"
                            " only; wheels get no metadata files)", path, exc.strerror)
                self._write_warned = True
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False

    def _forget_sidecar(self, relpath: str) -> None:
        for suffix in (".json", ".metadata"):
            try:
                os.unlink(self._sidecar(relpath, suffix))
            except OSError:
                pass

    def read_core_metadata(self, entry: FileEntry) -> bytes | None:
        """The wheel's METADATA bytes, exactly those whose hash the index announces."""
        self.ensure_info([entry])
        info = entry.info
        if info is None or info.metadata_sha256 is None:
            return None
        try:
            with open(self.metadata_path(entry), "rb") as handle:
                data = handle.read()
        except OSError:
            data = b""
        if hashlib.sha256(data).hexdigest() == info.metadata_sha256:
            return data
        # The sidecar went away or was replaced: take the metadata from the wheel again.
        raw = distmeta.read_metadata(entry.path)
        if raw is not None and hashlib.sha256(raw).hexdigest() == info.metadata_sha256:
            self._write(self.metadata_path(entry), raw)
            return raw
        return None
