"""The simple API: ``/simple/``, ``/simple/<project>/`` and the files under ``/packages/``.

Pages are rendered from the index once and kept while their project does not change, so
that most requests are answered in the event loop (``*_ready`` says when one can be).
"""

from __future__ import annotations

import logging
import re
import typing as t
from collections import OrderedDict
from urllib.parse import quote

from packaging.utils import canonicalize_name

from . import files, simple_api
from .index import FileEntry, PackageIndex
from .messages import Refusal, Request, Response, moved, plain
from .simple_api import METADATA_SUFFIX, Page

if t.TYPE_CHECKING:
    from .ledger import Ledger
    from .settings import Settings
    from .upstream_routes import CacheRoutes

log = logging.getLogger("pypibox.readpath")

_PROJECT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
#: Bytes of rendered pages a worker keeps (least recently used go first).
PAGE_CACHE_BYTES = 64 << 20


class PageCache:
    """Rendered pages by (project or "", media type), each with what it was made from."""

    def __init__(self, max_bytes: int = PAGE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._pages: OrderedDict[tuple[str, str], tuple[object, Page]] = OrderedDict()

    def get(self, key: tuple[str, str], stamp: object) -> Page | None:
        """The page if it was rendered from ``stamp``."""
        found = self._pages.get(key)
        if found is None or found[0] != stamp:
            return None
        self._pages.move_to_end(key)
        return found[1]

    def put(self, key: tuple[str, str], stamp: object, page: Page) -> None:
        """Keep a page, forgetting the least recently used beyond the byte budget."""
        old = self._pages.pop(key, None)
        if old is not None:
            self.size -= len(old[1].body)
        self._pages[key] = (stamp, page)
        self.size += len(page.body)
        while self.size > self.max_bytes and len(self._pages) > 1:
            _, (_, dropped) = self._pages.popitem(last=False)
            self.size -= len(dropped.body)


def _not_ready() -> Refusal:
    return Refusal(503, "Service unavailable: the index is still reading the packages "
                        "directory; retry in a few seconds", [("Retry-After", "2")])


def file_cache_control(settings: Settings) -> str:
    """What clients and proxies may do with a stored file."""
    if settings.overwrite:
        return files.REVALIDATE  # files may be replaced: never trust a copy blindly
    scope = "private" if "download" in settings.authenticate else "public"
    return f"{scope}, {files.IMMUTABLE}"


class ReadPath:
    """Handlers of the simple API over one PackageIndex."""

    def __init__(self, settings: Settings, index: PackageIndex, ledger: Ledger) -> None:
        self.settings = settings
        self.index = index
        self.ledger = ledger
        self.pages = PageCache()
        self.file_cache_control = file_cache_control(settings)
        self.page_headers = [("Vary", "Accept"), ("Cache-Control", files.REVALIDATE)]
        #: PYPI_FALLBACK=cache: names this index does not hold come from the upstream's cache
        #: (set by routes.build).
        self.cache: CacheRoutes | None = None

    # -- can it be answered in the event loop? ----------------------------------------------
    def root_ready(self, req: Request) -> bool:
        """True if the list of projects is rendered and current."""
        self.index.refresh()
        kind = simple_api.negotiate(req.headers.get("accept"))
        if kind is None:
            return True
        # Not settled: files were copied in a moment ago; sync() waits for them (a thread).
        return self.index.settled() and self.pages.get(("", kind),
                                                       self.index.generation) is not None

    def project_ready(self, req: Request) -> bool:
        """True if the project page is rendered and current (or the answer is a redirect)."""
        raw = req.params["project"]
        name = canonicalize_name(raw)
        kind = simple_api.negotiate(req.headers.get("accept"))
        if kind is None or raw != name or not _PROJECT.match(raw):
            return True
        self.index.refresh()
        if self.index.pending(name):
            return False  # files to read and hash first: not in the event loop
        stamp = self._stamp(name)
        if stamp is None:
            # Unknown here: sure only once nothing copied in a moment ago is still unread.
            if not (self.index.ready and self.index.settled()):
                return False
            return self.cache is None or self.cache.page_ready(name, kind)
        return self.pages.get((name, kind), stamp) is not None

    def _stamp(self, name: str) -> object:
        """What a project's page is made from: its files and its recorded state (yanks...)."""
        files_stamp = self.index.project_stamp(name)
        return None if files_stamp is None else (files_stamp, self.ledger.stamp(name))

    # -- handlers ----------------------------------------------------------------------------
    def _kind(self, req: Request) -> str:
        kind = simple_api.negotiate(req.headers.get("accept"))
        if kind is None:
            raise Refusal(406, "Not acceptable: this index offers "
                               + ", ".join(simple_api.CONTENT_TYPES), [("Vary", "Accept")])
        return kind

    def _send(self, req: Request, page: Page, kind: str) -> Response:
        return files.send_bytes(req, page.body, page.etag, simple_api.CONTENT_TYPES[kind],
                                list(self.page_headers))

    def root_page(self, req: Request) -> Response:
        """/simple/: every project."""
        kind = self._kind(req)
        if not self.index.ready:
            raise _not_ready()
        self.index.sync()  # what was copied in a moment ago is listed
        stamp = self.index.generation
        page = self.pages.get(("", kind), stamp)
        if page is None:
            page = simple_api.render_index(self.index.project_names(), kind)
            self.pages.put(("", kind), stamp, page)
        return self._send(req, page, kind)

    def project_page(self, req: Request) -> Response:
        """/simple/<project>/: the project's files."""
        return self._project_page(req, private_only=False)

    def devpi_project_page(self, req: Request) -> Response:
        """/+simple/<project>/: devpi's path, where ``hatch publish`` looks for the files
        already uploaded (to skip them). This index's own projects only: a name it does not
        hold is a 404, never the public index's files, which hatch would then not upload."""
        return self._project_page(req, private_only=True)

    def _project_page(self, req: Request, private_only: bool) -> Response:
        raw = req.params["project"]
        if not _PROJECT.match(raw):
            raise Refusal(404, "Not found: not a project name")
        name = canonicalize_name(raw)
        if raw != name:
            location = f"/simple/{quote(name)}/"
            return moved(location)
        kind = self._kind(req)
        self.index.refresh()
        stamp = self._stamp(name)
        if stamp is None and self.index.ready and self.index.sync():
            stamp = self._stamp(name)  # copied in a moment ago, perhaps
        if stamp is None and private_only:
            raise Refusal(404, f"Not found: {name} has no files here")
        if stamp is None:
            return self.unknown_project(req, name)
        page = self.pages.get((name, kind), stamp)
        if page is None:
            entries = self.index.project(name)
            if entries is None and private_only:
                raise Refusal(404, f"Not found: {name} has no files here")
            if entries is None:
                return self.unknown_project(req, name)
            ledger = self.ledger
            status = ledger.status(name)
            # PEP 792: a quarantined project's files are not offered for installation.
            shown = () if status == "quarantined" else entries
            page = simple_api.render_project(name, shown, kind, ledger.yanked, status,
                                             ledger.status_reason(name))
            self.pages.put((name, kind), stamp, page)
        return self._send(req, page, kind)

    def unknown_project(self, req: Request, name: str) -> Response:
        """A name this index does not hold: from the upstream's cache, sent on to the public
        index, or 404."""
        if not self.index.ready:
            raise _not_ready()  # it may be a project not listed yet: never send it elsewhere
        if self.cache is not None:
            return self.cache.project_page(req, name, self._kind(req))
        if self.settings.redirects:
            location = f"{self.settings.fallback_url.rstrip('/')}/{name}/"
            return plain(303 if req.version == "1.1" else 302, f"See other: {location}",
                         [("Location", location)])
        raise Refusal(404, f"Not found: {name} does not exist")

    def package_file(self, req: Request) -> Response:
        """/packages/<file> and /packages/<wheel>.metadata."""
        rel = req.params["path"]
        if "\x00" in rel or "\\" in rel:
            raise Refusal(400, "Bad request: bad file name")
        parts = rel.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise Refusal(404, "Not found")
        self.index.refresh()
        entry = self.index.file(rel)
        wheel = None
        if entry is None and rel.endswith(METADATA_SUFFIX):
            wheel = self.index.file(rel[: -len(METADATA_SUFFIX)])
        owner = entry or wheel
        if owner is not None:
            # A quarantine recorded a moment ago by another worker holds at once (one stat).
            self.ledger.refresh(force=True, wait=False)
        if owner is not None and self.ledger.status(owner.project) == "quarantined":
            raise Refusal(404, f"Not found: {owner.project} is quarantined")
        if entry is not None:
            sent = files.send_file(req, entry.path, self.file_cache_control)
            if sent is not None:
                return sent
        elif wheel is not None and wheel.is_wheel:
            return self._metadata(req, wheel)
        raise Refusal(404, f"Not found: {rel[:100]} does not exist")

    def _metadata(self, req: Request, wheel: FileEntry) -> Response:
        data = self.index.metadata(wheel)
        if data is None or not wheel.metadata_sha256:
            raise Refusal(404, "Not found: no metadata file for this wheel")
        etag = f'"{wheel.metadata_sha256[:32]}-m"'
        return files.send_bytes(req, data, etag, "text/plain; charset=utf-8",
                                [("Cache-Control", self.file_cache_control)])
