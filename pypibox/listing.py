"""The front page, the list of all files, pypiserver's JSON view, and the small routes."""

from __future__ import annotations

import hashlib
import html
import json
import typing as t
from urllib.parse import quote

from packaging.utils import canonicalize_name

from . import files, welcome
from .messages import Refusal, Request, Response, moved, plain

if t.TYPE_CHECKING:
    from .index import PackageIndex
    from .ledger import Ledger
    from .settings import Settings

#: Files listed per page of /packages/: one page, as pypiserver's, up to this many.
FILES_PER_PAGE = 20_000
HTML = "text/html; charset=utf-8"
#: Projects named on the front page (the rest are a link away).
FRONT_PROJECTS = 30


def health(req: Request) -> Response:
    """/health: the process answers (always in the event loop)."""
    return plain(200, "OK")


def no_favicon(req: Request) -> Response:
    """/favicon.ico: there is none."""
    raise Refusal(404, "Not found: no favicon")


def no_xmlrpc(req: Request) -> Response:
    """/RPC2: XML-RPC search, switched off on PyPI since 2020; the body is never read.

    A 400 like every other API this index does not offer (doc_upload, unknown actions).
    """
    raise Refusal(400, "Bad request: XML-RPC search (pip search) is not supported by this "
                       "index; find projects on its front page or at /simple/")


def add_slash(req: Request) -> Response:
    """/simple, /simple/<project> and /packages: the same with a trailing slash (PEP 503)."""
    location = quote(req.path) + "/"
    return moved(location)


def to_simple(req: Request) -> Response:
    """/<project>/: pypiserver's shortcut to the project's simple page."""
    name = req.params["project"]
    location = f"/simple/{quote(canonicalize_name(name))}/"
    return plain(303 if req.version == "1.1" else 302, f"See other: {location}",
                 [("Location", location)])


class Listing:
    """Pages that list what the index holds, rendered from the index, never from the disk."""

    def __init__(self, settings: Settings, index: PackageIndex, ledger: Ledger) -> None:
        self.settings = settings
        self.index = index
        self.ledger = ledger
        self._front: dict[str, tuple[int, bytes, str]] = {}   # url root -> (generation, page)
        self._files: dict[int, tuple[int, bytes, str]] = {}   # page number -> (generation, ..)

    def _html(self, req: Request, body: bytes, etag: str) -> Response:
        return files.send_bytes(req, body, etag, HTML, [("Cache-Control", files.REVALIDATE)])

    def front_ready(self, req: Request) -> bool:
        """True if the front page for this address is rendered and current."""
        self.index.refresh()
        cached = self._front.get(req.url_root)
        return (cached is not None and cached[0] == self.index.generation
                and self.index.settled())  # else sync() waits for files just copied in

    def front(self, req: Request) -> Response:
        """/: how to use this index, with its own address."""
        self.index.sync()
        generation = self.index.generation
        cached = self._front.get(req.url_root)
        if cached is None or cached[0] != generation:
            first, total = self.index.projects(None, 0, FRONT_PROJECTS)
            body = welcome.render(req.url_root, self.index.stats()[0],
                                  [(p.name, p.latest_version or "") for p in first], total,
                                  "download" in self.settings.authenticate,
                                  self.settings.fallback)
            if len(self._front) > 16:
                self._front.clear()  # one entry per address the server is reached at
            cached = (generation, body, _etag(body))
            self._front[req.url_root] = cached
        return self._html(req, cached[1], cached[2])

    def _page_number(self, req: Request) -> int:
        text = req.arg("page", "1")
        if not text.isdigit() or not 1 <= int(text) <= 1 << 30:
            raise Refusal(400, "Bad request: page must be a number from 1")
        return int(text)

    def packages_ready(self, req: Request) -> bool:
        """True if this page of the file list is rendered and current."""
        self.index.refresh()
        try:
            cached = self._files.get(self._page_number(req))
        except Refusal:
            return True
        return (cached is not None and cached[0] == self.index.generation
                and self.index.settled())

    def packages(self, req: Request) -> Response:
        """/packages/: every stored file, FILES_PER_PAGE to a page."""
        number = self._page_number(req)
        self.index.sync()
        generation = self.index.generation
        cached = self._files.get(number)
        if cached is None or cached[0] != generation:
            entries, total = self.index.files_page((number - 1) * FILES_PER_PAGE,
                                                   FILES_PER_PAGE)
            links = "".join(f'<a href="{html.escape(quote(e.relpath))}">'
                            f"{html.escape(e.relpath)}</a><br>\n" for e in entries)
            pages = max(1, -(-total // FILES_PER_PAGE))
            nav = ""
            if number > 1:
                nav += f'<a rel="prev" href="?page={number - 1}">previous</a> '
            if number < pages:
                nav += f'<a rel="next" href="?page={number + 1}">next</a>'
            body = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                    "<title>Index of packages</title>\n</head>\n<body>\n"
                    f"<h1>Index of packages</h1>\n<p>{total} files, page {number} of {pages}."
                    f"</p>\n{links}<p>{nav}</p>\n</body>\n</html>\n").encode()
            if len(self._files) > 64:
                self._files.clear()
            cached = (generation, body, _etag(body))
            self._files[number] = cached
        return self._html(req, cached[1], cached[2])

    def project_json(self, req: Request) -> Response:
        """/<project>/json: pypiserver's JSON view (latest version, file URLs)."""
        raw = req.params["project"]
        name = canonicalize_name(raw)
        if raw != name:
            location = f"/{quote(name)}/json"
            return moved(location)
        self.index.refresh()
        self.ledger.refresh(force=True, wait=False)  # a status recorded a moment ago counts
        entries = self.index.project(name)
        if not entries or self.ledger.status(name) == "quarantined":
            raise Refusal(404, f"Not found: {name} does not exist")
        releases: dict[str, list[dict[str, t.Any]]] = {}
        for entry in reversed(entries):
            releases.setdefault(entry.version, []).append(
                {"url": f"{req.url_root}packages/{quote(entry.relpath)}",
                 "filename": entry.filename, "digests": {"sha256": entry.sha256}})
        body = json.dumps({"info": {"name": name, "version": entries[-1].version},
                           "releases": releases}).encode()
        return files.send_bytes(req, body, _etag(body), "application/json",
                                [("Cache-Control", files.REVALIDATE)])


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
