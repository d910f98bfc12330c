"""The read path: /simple/ and /packages/ served from the cached index, in front of pypiserver.

GET and HEAD of ``/simple/``, ``/simple/<project>/``, ``/packages/<file>`` and
``/packages/<wheel>.metadata`` are answered here; every other request goes to pypiserver
unchanged. A successful POST (upload, removal) refreshes the index at once.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import typing as t
from urllib.parse import quote

from pypiserver.pkg_helpers import normalize_pkgname

from . import files, simple_api, storage
from .accounts import Accounts
from .index import FileEntry, PackageIndex
from .settings import Settings
from .simple_api import Page

log = logging.getLogger("pypibox.readpath")

Environ = dict[str, t.Any]
StartResponse = t.Callable[..., t.Any]
WSGIApp = t.Callable[[Environ, StartResponse], t.Iterable[bytes]]

_PROJECT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
METADATA_SUFFIX = ".metadata"
#: environ key for credentials quick() found in the accounts' cache (no header can set it).
VERIFIED = "pypibox.verified"


def _text(start_response: StartResponse, status: str, text: str,
          headers: list[tuple[str, str]] | None = None,
          head: bool = False) -> list[bytes]:
    body = (text + "\n").encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))] + (headers or []))
    return [] if head else [body]


def _not_ready(start_response: StartResponse, environ: Environ) -> list[bytes]:
    """The index is still listing the tree for the first time: never say "not found"."""
    return _text(start_response, "503 Service Unavailable",
                 "The index is being built; retry in a few seconds", [("Retry-After", "2")],
                 environ.get("REQUEST_METHOD") == "HEAD")


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """User and password of a Basic Authorization header; None if absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


def _wsgi_text(value: str) -> str:
    """A WSGI path (bytes as latin-1, PEP 3333) as the UTF-8 text it stands for."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _is_project_path(path: str) -> bool:
    return path.startswith("/simple/") and path.endswith("/") and path.count("/") == 3


def _is_file_path(path: str) -> bool:
    return path.startswith("/packages/") and len(path) > len("/packages/")


class ReadPath:
    """WSGI middleware answering the index and file downloads from a PackageIndex."""

    def __init__(self, inner: WSGIApp, settings: Settings, accounts: Accounts,
                 index: PackageIndex | None = None) -> None:
        self.inner = inner
        self.accounts = accounts
        self.authenticate = set(settings.authenticate)
        self.fallback = settings.fallback
        self.fallback_url = settings.fallback_url
        self.index = index or PackageIndex(settings.packages_dir)
        storage.INDEX = self.index  # the upload path records what it stores
        #: (project, or '' for the list of projects; media type) -> (its stamp, page)
        self.pages: dict[tuple[str, str], tuple[object, Page]] = {}

    def __call__(self, environ: Environ, start_response: StartResponse) -> t.Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if method in ("GET", "HEAD"):
            if path == "/simple/":
                return self._guarded("list", environ, start_response, self.root_page)
            if _is_project_path(path):
                return self._guarded("list", environ, start_response, self.project_page)
            if _is_file_path(path):
                return self._guarded("download", environ, start_response, self.package_file)
        elif method == "POST":
            return self._post(environ, start_response)
        return self.inner(environ, start_response)

    def quick(self, environ: Environ) -> bool:
        """True if this request is ours and needs no slow work: no bcrypt, no hashing.

        Such requests can be answered in the server's event loop. A password not yet in
        the accounts' cache, or a project page with files not yet hashed, is slow.
        """
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return False
        if environ.get("CONTENT_LENGTH", "0") not in ("", "0") or \
                "HTTP_TRANSFER_ENCODING" in environ:
            return False
        path = environ.get("PATH_INFO", "")
        if path == "/simple/" or _is_project_path(path):
            action = "list"
        elif _is_file_path(path):
            action = "download"
        else:
            return False
        if action in self.authenticate:
            creds = basic_credentials(environ.get("HTTP_AUTHORIZATION"))
            if creds is not None:
                if not self.accounts.is_cached(*creds):
                    return False
                environ[VERIFIED] = creds  # checked just now: _guarded need not again
        if action == "list" and path != "/simple/":
            self.index.refresh()
            name = normalize_pkgname(path[len("/simple/"):-1])
            if self.index.pending(name) or self.index.project(name) is None:
                return False  # files to read, or a sync to wait for: not in the event loop
        return True

    # -- plumbing ----------------------------------------------------------------------
    def _post(self, environ: Environ, start_response: StartResponse) -> t.Iterable[bytes]:
        # Uploads and removals tell the index themselves (storage.INDEX).
        return self.inner(environ, start_response)

    def _guarded(self, action: str, environ: Environ, start_response: StartResponse,
                 handler: t.Callable[[Environ, StartResponse], t.Iterable[bytes]]
                 ) -> t.Iterable[bytes]:
        head = environ.get("REQUEST_METHOD") == "HEAD"
        if action in self.authenticate:
            if VERIFIED in environ:
                return handler(environ, start_response)
            creds = basic_credentials(environ.get("HTTP_AUTHORIZATION"))
            if creds is None:
                return _text(start_response, "401 Unauthorized", "Authentication required",
                             [("WWW-Authenticate", 'Basic realm="pypi"')], head)
            if not self.accounts.check(*creds):
                return _text(start_response, "403 Forbidden", "Access denied", head=head)
        return handler(environ, start_response)

    def _page(self, environ: Environ, start_response: StartResponse, key: tuple[str, str],
              source: object, render: t.Callable[[], Page]) -> t.Iterable[bytes]:
        kind = key[1]
        cached = self.pages.get(key)
        # A page is good while the stamp it was rendered at is still the current one.
        if cached is not None and cached[0] == source:
            page = cached[1]
        else:
            page = render()
            if len(self.pages) > 4096:
                self.pages.clear()
            self.pages[key] = (source, page)
        return files.send_bytes(environ, start_response, page.body, page.etag,
                                simple_api.CONTENT_TYPES[kind], [("Vary", "Accept")])

    def _negotiate(self, environ: Environ, start_response: StartResponse) -> str | list[bytes]:
        kind = simple_api.negotiate(environ.get("HTTP_ACCEPT"))
        if kind is None:
            return _text(start_response, "406 Not Acceptable",
                         "Available: " + ", ".join(simple_api.CONTENT_TYPES),
                         [("Vary", "Accept")], environ.get("REQUEST_METHOD") == "HEAD")
        return kind

    # -- handlers ----------------------------------------------------------------------
    def root_page(self, environ: Environ, start_response: StartResponse) -> t.Iterable[bytes]:
        """/simple/: every project."""
        kind = self._negotiate(environ, start_response)
        if not isinstance(kind, str):
            return kind
        self.index.sync()  # lists what was copied in a moment ago
        if not self.index.ready:
            return _not_ready(start_response, environ)
        stamp = (self.index.db.instance, self.index.db.last_gen())
        return self._page(environ, start_response, ("", kind), stamp,
                          lambda: simple_api.render_index(self.index.project_names(), kind))

    def project_page(self, environ: Environ, start_response: StartResponse) -> t.Iterable[bytes]:
        """/simple/<project>/: the project's files."""
        head = environ.get("REQUEST_METHOD") == "HEAD"
        raw = environ["PATH_INFO"][len("/simple/"):-1]
        if not _PROJECT.match(raw):
            return _text(start_response, "404 Not Found", "Not Found (not a project name)",
                         head=head)
        name = normalize_pkgname(raw)
        if raw != name:
            location = environ.get("SCRIPT_NAME", "") + f"/simple/{quote(name)}/"
            return _text(start_response, "301 Moved Permanently", f"See {location}",
                         [("Location", location)], head)
        kind = self._negotiate(environ, start_response)
        if not isinstance(kind, str):
            return kind
        self.index.refresh()
        entries = self.index.project(name)
        if entries is None and self.index.sync():
            entries = self.index.project(name)  # it may have been copied in a moment ago
        if entries is None and not self.index.ready:
            return _not_ready(start_response, environ)
        if entries is None:
            if self.fallback:
                location = f"{self.fallback_url.rstrip('/')}/{name}/"
                http11 = environ.get("SERVER_PROTOCOL") == "HTTP/1.1"
                code = "303 See Other" if http11 else "302 Found"  # as bottle's redirect()
                return _text(start_response, code, f"See {location}", [("Location", location)],
                             head)
            return _text(start_response, "404 Not Found", f"Not Found ({name} does not exist)",
                         head=head)
        found = entries
        stamp = self.index.project_stamp(name)
        return self._page(environ, start_response, (name, kind), stamp,
                          lambda: simple_api.render_project(name, found, kind))

    def _lookup(self, rel: str) -> tuple[FileEntry | None, bool]:
        entry = self.index.file(rel)
        if entry is not None:
            return entry, False
        if rel.endswith(METADATA_SUFFIX):
            wheel = self.index.file(rel[: -len(METADATA_SUFFIX)])
            if wheel is not None and wheel.is_wheel:
                return wheel, True
        return None, False

    def package_file(self, environ: Environ, start_response: StartResponse) -> t.Iterable[bytes]:
        """/packages/<file> and /packages/<wheel>.metadata."""
        head = environ.get("REQUEST_METHOD") == "HEAD"
        rel = _wsgi_text(environ["PATH_INFO"][len("/packages/"):])
        if "\x00" in rel or "\\" in rel:
            return _text(start_response, "400 Bad Request", "Bad file name", head=head)
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return _text(start_response, "404 Not Found", "Not Found", head=head)
        self.index.refresh()
        entry, is_metadata = self._lookup(rel)
        if entry is not None and not is_metadata:
            sent = files.send_file(environ, start_response, entry.path, None)
            if sent is not None:
                return sent
        elif entry is not None and entry.metadata_sha256:
            data = self.index.metadata(entry)
            if data is not None:
                etag = '"' + entry.metadata_sha256[:32] + '-m"'
                return files.send_bytes(environ, start_response, data, etag,
                                        "text/plain; charset=utf-8")
        return _text(start_response, "404 Not Found", f"Not Found ({rel} does not exist)",
                     head=head)
