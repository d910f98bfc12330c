"""The cache of the public index (``PYPI_FALLBACK=cache``): pages, files and the cooldown.

``Upstream(settings).project(name)`` gives a project of the upstream with file URLs on this
server (``/cache/<project>/<filename>``), after the cooldown; ``open_file`` gives a cached
file or a stream that fills the cache. Private projects are never looked up here: the
caller asks only for names the private index does not hold.
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
from urllib.parse import urlsplit

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from . import upstream_pages
from .settings import Settings
from .simple_api import METADATA_SUFFIX, Page
from .upstream_fetch import CachedFile, Fetcher, FileStream
from .upstream_http import HttpClient, UpstreamError, safe_url, strip_userinfo
from .upstream_pages import Link, file_path, parse_time
from .upstream_store import FileLock, Store, Usage, valid_project

__all__ = ["STALE_HEADER", "CachedFile", "FileStream", "Upstream", "UpstreamError",
           "UpstreamFile", "UpstreamProject"]

log = logging.getLogger("pypibox.upstream")

#: Largest project page accepted from the upstream (pypi.org's largest are a few MiB).
PAGE_LIMIT = 32 << 20
#: Largest PEP 658 metadata file accepted.
METADATA_LIMIT = 4 << 20
#: Names the upstream does not have, remembered for PYPI_UPSTREAM_TTL (at most this many).
NEGATIVE_MAX = 10_000
#: Parsed page records kept in memory per process (more are read from disk again).
RECORDS_MAX = 2048
#: Rendered pages kept in memory per process, in bytes.
RENDERED_MAX_BYTES = 64 << 20
#: The response header of a page served from the cache because the upstream failed.
STALE_HEADER = "X-Pypibox-Stale"


@dataclass(frozen=True)
class UpstreamFile:
    """A file of an upstream project, served by this server at ``url``."""

    filename: str
    url: str                      # a path on this server: /cache/<project>/<filename>
    sha256: str
    requires_python: str | None
    yanked: bool | str            # False, True, or the reason given
    core_metadata: str | None     # sha256 of <url>.metadata, or None when there is none
    size: int | None
    upload_time: str | None       # ISO 8601, as the upstream gave it
    first_seen: float = field(repr=False, default=0.0)
    upstream_url: str = field(repr=False, default="")   # absolute, without credentials


@dataclass(frozen=True)
class UpstreamProject:
    """An upstream project as this server shows it (the cooldown applied)."""

    name: str
    files: tuple[UpstreamFile, ...]
    versions: tuple[str, ...]
    stale: bool           # the upstream failed and this is the last good copy
    etag: str             # changes whenever the page rendered from it would
    fetched_at: float     # when the upstream last confirmed it (epoch seconds)
    hidden: int           # files hidden by PYPI_UPSTREAM_MIN_AGE
    status: str = ""      # the upstream's PEP 792 status ("" for active)
    reason: str = ""      # and its reason

    def file(self, filename: str) -> UpstreamFile | None:
        """The visible file of that name, or None."""
        for f in self.files:
            if f.filename == filename:
                return f
        return None


def _version(filename: str) -> Version | None:
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


class _Exemptions:
    """The names exempt from the cooldown: a file reread when it changes, last good kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.names: frozenset[str] = frozenset()
        self._key: tuple[int, int, int] | None = None
        self._checked = 0.0

    def get(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return self.names
        self._checked = now
        try:
            st = os.stat(self.path)
        except OSError:
            if self._key is not None:
                log.warning("cache: %s is gone; keeping its last %d names", self.path,
                            len(self.names))
                self._key = None
            return self.names
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._key:
            return self.names
        self._key = key
        try:
            text = self.path.read_bytes()[:1 << 20].decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cache: cannot read %s (%s); keeping its last %d names", self.path,
                        getattr(exc, "strerror", None) or "not UTF-8", len(self.names))
            return self.names
        names = set()
        for number, line in enumerate(text.splitlines(), 1):
            word = line.split("#", 1)[0].strip()
            if not word:
                continue
            name = canonicalize_name(word)
            if not valid_project(name):
                log.warning("cache: %s line %d: %r is not a project name (ignored)",
                            self.path, number, word[:80])
                continue
            names.add(name)
        self.names = frozenset(names)
        log.info("cache: %d names exempt from PYPI_UPSTREAM_MIN_AGE (%s)", len(names), self.path)
        return self.names


class Upstream:
    """Pages and files of the upstream index, through the cache area of the packages volume."""

    def __init__(self, settings: Settings,
                 private: t.Callable[[str], bool] | None = None) -> None:
        """``private(name)`` tells whether the private index holds a project: such names
        are never looked up upstream nor served from the cache (dependency confusion)."""
        self.private = private
        base = settings.upstream if settings.upstream.endswith("/") else settings.upstream + "/"
        self.base, creds = strip_userinfo(base)
        parts = urlsplit(self.base)
        host_creds = {}
        if creds is not None and parts.hostname:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host_creds[(parts.hostname, port)] = creds
        self.shown = safe_url(self.base)   # what logs and errors may say
        self.ttl = settings.upstream_ttl
        self.timeout = settings.upstream_timeout
        self.min_age = settings.upstream_min_age
        self.offline = settings.upstream_offline
        self.store = Store(settings.packages_dir, settings.cache_max_size)
        self.client = HttpClient(settings.upstream_timeout, host_creds, settings.upstream_netrc)
        self.fetcher = Fetcher(self.store, self.client, settings.upstream_timeout)
        self.exempt = _Exemptions(settings.upstream_min_age_exempt)
        self._records: dict[str, tuple[tuple[int, int, int], dict[str, t.Any], str]] = {}
        self._missing: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._rendered: dict[tuple[str, str], tuple[str, Page]] = {}
        self._rendered_bytes = 0
        self._views: dict[str, tuple[tuple[str, float, bool, bool], float, UpstreamProject]] = {}
        self.page_fetches = 0   # requests for pages this process made (tests, stats)

    # -- pages ---------------------------------------------------------------------------
    def project(self, name: str) -> UpstreamProject | None:
        """The project as the upstream has it (cached for PYPI_UPSTREAM_TTL), or None.

        None: the upstream has no such project. UpstreamError: it could not be asked and
        nothing is cached (502 unreachable or broken, 504 too slow, 404 offline).
        """
        name = canonicalize_name(name)
        if not valid_project(name):
            raise UpstreamError(404, "not a project name")
        self._refuse_private(name)
        record = self._record(name)
        now = time.time()
        if record is not None and (self.offline or now - record[1]["fetched"] < self.ttl):
            return self._view(name, record, stale=now - record[1]["fetched"] >= self.ttl)
        if self.offline:
            raise UpstreamError(404, f"{name} is not in the cache and PYPI_UPSTREAM_OFFLINE "
                                     "is on")
        if record is None and self._missing.get(name, 0.0) > time.monotonic():
            return None
        with self._name_lock(name):
            lock = FileLock(self.store.lock_path("page", name))
            got = lock.acquire(wait=self.timeout)
            found: UpstreamProject | None = None
            try:
                record = self._record(name)   # another thread or process may have fetched it
                if record is not None and time.time() - record[1]["fetched"] < self.ttl:
                    found = self._view(name, record, stale=False)
                    return found
                found = self._refresh(name, record)
                return found
            finally:
                if got:
                    if found is None:
                        # Names the upstream lacks leave no lock file behind (a stray second
                        # fetch, should another process race for it, is harmless).
                        self.store.unlink_quietly(lock.path)
                    lock.release()

    def _refuse_private(self, name: str) -> None:
        if self.private is not None and self.private(name):
            raise UpstreamError(404, f"{name} is a private project here: never from upstream")

    def _name_lock(self, name: str) -> threading.Lock:
        with self._guard:
            if len(self._locks) > 4096:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            return self._locks.setdefault(name, threading.Lock())

    def _record(self, name: str) -> tuple[tuple[int, int, int], dict[str, t.Any], str] | None:
        """The project's record from memory if the file is unchanged, else from disk."""
        key = self.store.record_key(name)
        mem = self._records.get(name)
        if key is None:
            self._records.pop(name, None)
            return None
        if mem is not None and mem[0] == key:
            return mem
        found = self.store.read_record(name)
        if found is None:
            return None
        key, data = found
        if len(self._records) >= RECORDS_MAX:
            self._records.clear()   # reread from disk when asked again
        # Of what is shown only: a revalidation (304) changes "fetched", not the page.
        shown = [data["files"], data.get("status"), data.get("reason")]
        digest = hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:24]
        entry = (key, data, digest)
        self._records[name] = entry
        return entry

    def _refresh(self, name: str,
                 record: tuple[tuple[int, int, int], dict[str, t.Any], str] | None
                 ) -> UpstreamProject | None:
        url = self.base + name + "/"
        headers = {"Accept": upstream_pages.ACCEPT}
        old = record[1] if record is not None else None
        if old is not None and old.get("etag"):
            headers["If-None-Match"] = old["etag"]
        if old is not None and old.get("last_modified"):
            headers["If-Modified-Since"] = old["last_modified"]
        try:
            self.page_fetches += 1
            reply = self.client.get(url, headers, deadline=time.monotonic() + self.timeout)
            if reply.status == 304 and old is not None:
                reply.drain()
                self._save(name, {**old, "fetched": time.time()})
                return self._view_fresh(name)
            if reply.status in (404, 410):
                reply.drain()
                self._remember_missing(name)
                if old is not None:
                    log.info("cache: the upstream no longer has %s; its page is dropped", name)
                    self.store.unlink_quietly(self.store.record_path(name))
                    self._records.pop(name, None)
                return None
            if reply.status != 200:
                reply.close()
                code = 504 if reply.status == 504 else 502
                raise UpstreamError(code, f"{safe_url(reply.url)}: the upstream answered "
                                          f"{reply.status} {reply.reason}"[:300])
            body = reply.read_all(PAGE_LIMIT)
            parsed = upstream_pages.parse(body, reply.headers.get("content-type", ""),
                                          reply.url)
        except UpstreamError as exc:
            if old is None:
                log.warning("cache: %s: %s", name, exc.reason)
                raise
            log.warning("cache: serving the cached page of %s, stale (%s)", name, exc.reason)
            assert record is not None
            return self._view(name, record, stale=True)
        if parsed.dropped:
            log.warning("cache: %s: dropped %s from %s", name,
                        ", ".join(f"{n} link(s): {why}"
                                  for why, n in sorted(parsed.dropped.items())),
                        safe_url(reply.url))
        seen = {f["filename"]: f.get("first_seen", 0.0) for f in (old or {}).get("files", [])}
        now = time.time()
        self._save(name, {
            "name": name, "fetched": now, "etag": reply.headers.get("etag"),
            "last_modified": reply.headers.get("last-modified"),
            "files": [{**_link_dict(link), "first_seen": seen.get(link.filename) or now}
                      for link in parsed.links],
            **({"status": parsed.status, "reason": parsed.reason} if parsed.status else {}),
        })
        return self._view_fresh(name)

    def _save(self, name: str, data: dict[str, t.Any]) -> None:
        data = {k: v for k, v in data.items() if k != "v"}
        self.store.write_record(name, data)
        self._missing.pop(name, None)

    def _view_fresh(self, name: str) -> UpstreamProject:
        record = self._record(name)
        if record is None:  # the record could not be written: the cache is read-only or full
            raise UpstreamError(502, f"{name}: cannot write the cache area")
        return self._view(name, record, stale=False)

    def _remember_missing(self, name: str) -> None:
        if len(self._missing) >= NEGATIVE_MAX:
            self._missing.clear()
        self._missing[name] = time.monotonic() + self.ttl

    def _view(self, name: str, record: tuple[tuple[int, int, int], dict[str, t.Any], str],
              stale: bool) -> UpstreamProject:
        now = time.time()
        exempt = self.min_age <= 0 or name in self.exempt.get()
        memo_key = (record[2], record[1]["fetched"], exempt, stale)
        memo = self._views.get(name)
        if memo is not None and memo[0] == memo_key and now < memo[1]:
            return memo[2]
        view, until = self._make_view(name, record, stale, exempt, now - self.min_age)
        if len(self._views) > 4096:
            self._views.clear()
        self._views[name] = (memo_key, until, view)
        return view

    def _make_view(self, name: str, record: tuple[tuple[int, int, int], dict[str, t.Any], str],
                   stale: bool, exempt: bool, cutoff: float
                   ) -> tuple[UpstreamProject, float]:
        """The visible files, and the time the first hidden one comes of age."""
        data = record[1]
        files: list[UpstreamFile] = []
        hidden = 0
        until = float("inf")
        # The record is read back from the volume: its status is checked again.
        status, reason = upstream_pages.project_status(data.get("status"), data.get("reason"))
        # PEP 792: a quarantined project offers no files to install, not even cached ones.
        for item in data["files"] if status != "quarantined" else ():
            try:
                f = UpstreamFile(
                    filename=item["filename"], url=file_path(name, item["filename"]),
                    sha256=item["sha256"], requires_python=item.get("requires_python"),
                    yanked=item.get("yanked", False), core_metadata=item.get("core_metadata"),
                    size=item.get("size"), upload_time=item.get("upload_time"),
                    first_seen=float(item.get("first_seen") or 0.0), upstream_url=item["url"])
            except (KeyError, TypeError, ValueError):
                continue
            if not exempt:
                # No upload time (an HTML upstream): the age is how long this cache knows it.
                born = parse_time(f.upload_time) or f.first_seen
                if born > cutoff:
                    hidden += 1
                    until = min(until, born + self.min_age)
                    continue
            files.append(f)
        versions: dict[Version, None] = {}
        for f in files:
            v = _version(f.filename)
            if v is not None:
                versions.setdefault(v, None)
        visible = ",".join(f.filename for f in files)
        etag = hashlib.sha256(f"{record[2]}|{visible}".encode()).hexdigest()[:32]
        return UpstreamProject(name, tuple(files), tuple(str(v) for v in sorted(versions)),
                               stale, etag, float(data["fetched"]), hidden, status,
                               reason), until

    def page_ready(self, name: str, kind: str) -> bool:
        """True if ``project(name)`` and ``render`` would answer at once: the record is in
        memory and fresh and the page rendered (a request can stay in the event loop)."""
        name = canonicalize_name(name)
        if not valid_project(name):
            return True   # refused at once
        mem = self._records.get(name)
        if mem is None or self.store.record_key(name) != mem[0]:
            return False
        age = time.time() - mem[1]["fetched"]
        if age >= self.ttl and not self.offline:
            return False
        cached = self._rendered.get((name, kind))
        return cached is not None and cached[0] == self._view(name, mem, age >= self.ttl).etag

    def cached_path(self, project: str, filename: str) -> str | None:
        """The path of a visible file already in the cache (no upstream call), or None."""
        name = canonicalize_name(project)
        base = filename.removesuffix(METADATA_SUFFIX)
        if not valid_project(name) or not upstream_pages.valid_filename(base):
            return None
        if self.private is not None and self.private(name):
            return None
        found = self._already_cached(name, filename)
        return found.path if found is not None else None

    def render(self, project: UpstreamProject, kind: str) -> Page:
        """The project page in media type ``kind``, rendered once per (etag, kind)."""
        key = (project.name, kind)
        cached = self._rendered.get(key)
        if cached is not None and cached[0] == project.etag:
            return cached[1]
        page = upstream_pages.render(project.name, project.files, project.versions, kind,
                                     project.status, project.reason)
        if self._rendered_bytes + len(page.body) > RENDERED_MAX_BYTES:
            self._rendered.clear()
            self._rendered_bytes = 0
        self._rendered[key] = (project.etag, page)
        self._rendered_bytes += len(page.body)
        return page

    # -- files ---------------------------------------------------------------------------
    def open_file(self, project: str, filename: str) -> CachedFile | FileStream:
        """A file (or ``<file>.metadata``) of a visible upstream file: from disk, or a stream.

        UpstreamError(404) when the project has no such visible file; 502/504 when it cannot
        be fetched; a FileStream may still raise UpstreamError while iterated.
        """
        name = canonicalize_name(project)
        base = filename.removesuffix(METADATA_SUFFIX)
        if not valid_project(name) or not upstream_pages.valid_filename(base):
            raise UpstreamError(404, "not a cached file name")
        self._refuse_private(name)
        cached = self._already_cached(name, filename)
        if cached is not None:
            return cached
        found = self.project(name)
        f = found.file(base) if found is not None else None
        if f is None:
            raise UpstreamError(404, f"{filename} is not a file of {name} here")
        if filename != base:
            if f.core_metadata is None:
                raise UpstreamError(404, f"{base} has no metadata file")
            return self._metadata(name, f)
        if self.offline:
            raise UpstreamError(404, f"{filename} is not in the cache and "
                                     "PYPI_UPSTREAM_OFFLINE is on")
        return self.fetcher.open(name, f.filename, f.upstream_url, f.sha256, f.size)

    def file_info(self, project: str, filename: str) -> UpstreamFile:
        """What the page says of a visible file (for HEAD without fetching); 404 if none."""
        name = canonicalize_name(project)
        base = filename.removesuffix(METADATA_SUFFIX)
        if not valid_project(name) or not upstream_pages.valid_filename(base):
            raise UpstreamError(404, "not a cached file name")
        self._refuse_private(name)
        found = self.project(name)
        f = found.file(base) if found is not None else None
        if f is None or (filename != base and f.core_metadata is None):
            raise UpstreamError(404, f"{filename} is not a file of {name} here")
        return f

    def _already_cached(self, name: str, filename: str) -> CachedFile | None:
        """A stored file, if its project's record still lists it visibly (no upstream call)."""
        record = self._record(name)
        if record is None:
            return None
        view = self._view(name, record, stale=False)
        base = filename.removesuffix(METADATA_SUFFIX)
        f = view.file(base)
        if f is None:
            return None
        size = f.size if filename == base else None
        path = self.store.cached(name, filename, size)
        if path is None:
            return None
        digest = f.sha256 if filename == base else (f.core_metadata or "")
        return CachedFile(path, os.stat(path).st_size,
                          f'"{digest[:32]}{"-m" if filename != base else ""}"')

    def _metadata(self, name: str, f: UpstreamFile) -> CachedFile:
        """Fetch, check and store ``<file>.metadata`` (small: read whole, bounded)."""
        filename = f.filename + METADATA_SUFFIX
        assert f.core_metadata is not None
        lock = FileLock(self.store.lock_path("file", name, filename))
        got = lock.acquire(wait=self.timeout)
        try:
            path = self.store.cached(name, filename, None)
            if path is None:
                if self.offline:
                    raise UpstreamError(404, f"{filename} is not in the cache and "
                                             "PYPI_UPSTREAM_OFFLINE is on")
                parts = urlsplit(f.upstream_url)   # PEP 658: the file's path + .metadata
                url = parts._replace(path=parts.path + METADATA_SUFFIX).geturl()
                reply = self.client.get(url, {"Accept": "*/*"},
                                        deadline=time.monotonic() + self.timeout)
                if reply.status != 200:
                    reply.close()
                    raise UpstreamError(502, f"{safe_url(reply.url)}: the upstream answered "
                                             f"{reply.status} {reply.reason}"[:300])
                data = reply.read_all(METADATA_LIMIT)
                if hashlib.sha256(data).hexdigest() != f.core_metadata:
                    log.warning("cache: %s: sha256 does not match the upstream's page; not "
                                "kept", filename)
                    raise UpstreamError(502, f"{filename}: sha256 does not match the "
                                             "upstream's page; not kept")
                path = self.store.file_path(name, filename)
                if not self.store.write_atomic(path, data):
                    raise UpstreamError(502, f"{filename}: cannot write the cache area")
                self.store.touch(path)
                self.store.added(len(data))
            return CachedFile(path, os.stat(path).st_size, f'"{f.core_metadata[:32]}-m"')
        finally:
            if got:
                lock.release()

    # -- maintenance ---------------------------------------------------------------------
    def stats(self) -> Usage:
        """What the cache area holds."""
        return self.store.usage()

    def prune(self, limit: int | None = None) -> tuple[int, int, int]:
        """Evict to ``limit`` (default PYPI_CACHE_MAX_SIZE) and remove dead downloads;
        (files evicted, bytes freed, leftovers removed)."""
        leftovers = self.store.clean_tmp() + self.store.clean_locks()
        removed, freed = self.store.evict(self.store.max_size if limit is None else limit)
        return removed, freed, leftovers

    def forget(self, project: str) -> tuple[int, int]:
        """Drop a project's page and files from the cache; (files removed, bytes freed)."""
        name = canonicalize_name(project)
        if not valid_project(name):
            raise UpstreamError(404, "not a project name")
        self._records.pop(name, None)
        self._views.pop(name, None)
        self._missing.pop(name, None)
        return self.store.forget(name)

    def close(self) -> None:
        """Close idle upstream connections."""
        self.client.close()


def _link_dict(link: Link) -> dict[str, t.Any]:
    return {"filename": link.filename, "url": link.url, "sha256": link.sha256,
            "requires_python": link.requires_python, "yanked": link.yanked,
            "core_metadata": link.core_metadata, "size": link.size,
            "upload_time": link.upload_time}
