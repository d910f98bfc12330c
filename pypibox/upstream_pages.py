"""Upstream project pages: parsed from PEP 691 JSON or PEP 503 HTML, checked, rendered again.

A parsed page is a list of ``Link``: every file name checked to be a plain name (never a
path), every URL ``http(s)`` and without credentials, every file with a sha256. Whatever
fails a check is dropped and counted, so one bad link does not cost the whole project.
The page's PEP 792 status (archived, deprecated, quarantined) and its reason are kept too.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import typing as t
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import quote, unquote, urldefrag, urljoin, urlsplit

from . import simple_api
from .simple_api import JSON, TEXT_HTML, V1_HTML, Page
from .upstream_http import UpstreamError, safe_url, strip_userinfo

#: A file name we store: plain characters, no separator, no leading dot, a known suffix.
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,250}$")
DIST_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".egg")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
HTML_TYPES = ("text/html", "application/vnd.pypi.simple.v1+html", "application/xhtml+xml")
JSON_TYPES = ("application/vnd.pypi.simple.v1+json", "application/vnd.pypi.simple.latest+json")
ACCEPT = (f"{JSON}, {V1_HTML};q=0.2, {TEXT_HTML};q=0.1")
REASON_MAX = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


@dataclass(frozen=True)
class Link:
    """One file of an upstream page, as checked; ``url`` is absolute and credential-free."""

    filename: str
    url: str
    sha256: str
    requires_python: str | None
    yanked: bool | str
    core_metadata: str | None     # sha256 of the PEP 658 metadata file
    size: int | None
    upload_time: str | None       # ISO 8601, as the upstream gave it


def valid_filename(name: str) -> bool:
    """A plain distribution file name: no path, no dot-file, a known archive suffix."""
    return (bool(_FILENAME.match(name)) and ".." not in name
            and name.lower().endswith(DIST_SUFFIXES))


def parse_time(value: str | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (naive means UTC); None if unparsable."""
    if not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _metadata_hash(value: object) -> str | None:
    """The sha256 of a ``core-metadata`` value (a dict of hashes); ``True`` alone is no use."""
    if isinstance(value, dict):
        digest = value.get("sha256")
        if isinstance(digest, str) and _SHA256.match(digest.lower()):
            return digest.lower()
    return None


def _attr_metadata_hash(value: str | None) -> str | None:
    if value and value.lower().startswith("sha256="):
        digest = value[7:].strip().lower()
        if _SHA256.match(digest):
            return digest
    return None


@dataclass
class Parsed:
    """A checked upstream page: its files, what was dropped and why, its PEP 792 status
    ("" for active) and the status's reason."""

    links: list[Link] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    status: str = ""
    reason: str = ""


def project_status(status: object, reason: object) -> tuple[str, str]:
    """The PEP 792 status and reason an upstream gave, as we pass them on: "active", and a
    status the PEP does not name (as the PEP tells clients to read it), is none; the reason
    is one line of at most REASON_MAX characters."""
    given = status.strip().lower() if isinstance(status, str) else ""
    if given not in simple_api.PROJECT_STATUSES or given == "active":
        return "", ""
    text = reason if isinstance(reason, str) else ""
    return given, " ".join(_CONTROL.sub(" ", text).split())[:REASON_MAX]


class _Checker:
    """Turns raw entries into Links, counting what it drops and why."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.links: list[Link] = []
        self.seen: set[str] = set()
        self.dropped: dict[str, int] = {}

    def drop(self, why: str) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + 1

    def add(self, filename: str, href: str, sha256: str | None, requires_python: object,
            yanked: object, core_metadata: str | None, size: object,
            upload_time: object) -> None:
        filename = filename.strip()
        if not valid_filename(filename):
            self.drop("bad file name")
            return
        if filename in self.seen:
            self.drop("duplicate file name")
            return
        url, _fragment = urldefrag(urljoin(self.base, href.strip()))
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            self.drop("not an http(s) URL")
            return
        url, _creds = strip_userinfo(url)  # never kept, never shown
        if not sha256 or not _SHA256.match(sha256.lower()):
            self.drop("no sha256")
            return
        if not isinstance(requires_python, str) or not requires_python.strip():
            requires_python = None
        elif len(requires_python) > 200:
            self.drop("bad requires-python")
            return
        if isinstance(yanked, str):
            yanked = yanked[:500] or True
        elif yanked is not True:
            yanked = False
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            size = None
        if not isinstance(upload_time, str) or parse_time(upload_time) is None:
            upload_time = None
        self.seen.add(filename)
        self.links.append(Link(filename, url, sha256.lower(), requires_python, yanked,
                               core_metadata, size, upload_time))


def parse_json(body: bytes, base: str) -> Parsed:
    """A PEP 691 project page; UpstreamError(502) when it is not one."""
    where = safe_url(base)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise UpstreamError(502, f"{where}: the upstream's JSON page does not parse") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise UpstreamError(502, f"{where}: the upstream's JSON page has no list of files")
    meta = data.get("meta")
    version = meta.get("api-version") if isinstance(meta, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise UpstreamError(502, f"{where}: the upstream's JSON page is not API version 1.x")
    check = _Checker(base)
    for item in data["files"]:
        if not isinstance(item, dict):
            check.drop("not an object")
            continue
        filename, url, hashes = item.get("filename"), item.get("url"), item.get("hashes")
        if not isinstance(filename, str) or not isinstance(url, str):
            check.drop("no file name or URL")
            continue
        sha = hashes.get("sha256") if isinstance(hashes, dict) else None
        meta_value = item.get("core-metadata", item.get("dist-info-metadata"))
        check.add(filename, url, sha if isinstance(sha, str) else None,
                  item.get("requires-python"), item.get("yanked"), _metadata_hash(meta_value),
                  item.get("size"), item.get("upload-time"))
    given = data.get("project-status")
    status, reason = (project_status(given.get("status"), given.get("reason"))
                      if isinstance(given, dict) else ("", ""))
    return Parsed(check.links, check.dropped, status, reason)


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.base: str | None = None
        self.meta: dict[str, str] = {}
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []
        elif tag == "base" and self.base is None:
            self.base = dict(attrs).get("href")
        elif tag == "meta":
            given = dict(attrs)
            name, content = given.get("name"), given.get("content")
            if name and content is not None and name.startswith("pypi:"):
                self.meta.setdefault(name, content)

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text)))
            self._open = None


def parse_html(body: bytes, base: str) -> Parsed:
    """A PEP 503 project page (the anchors' text is the file name, the hash in the URL)."""
    parser = _Anchors()
    try:
        parser.feed(body.decode("utf-8", "replace"))
        parser.close()
    except (ValueError, AssertionError):
        where = safe_url(base)
        raise UpstreamError(502, f"{where}: the upstream's HTML page does not parse") from None
    page_base = urljoin(base, parser.base) if parser.base else base
    check = _Checker(page_base)
    for attrs, text in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        _url, fragment = urldefrag(href)
        algo, _, digest = fragment.partition("=")
        sha = digest if algo.lower() == "sha256" else None
        name = text.strip() or unquote(urlsplit(_url).path.rsplit("/", 1)[-1])
        yanked: bool | str = False
        if "data-yanked" in attrs:
            yanked = attrs["data-yanked"] or True
        meta = attrs.get("data-core-metadata", attrs.get("data-dist-info-metadata"))
        check.add(name, href, sha, attrs.get("data-requires-python"), yanked,
                  _attr_metadata_hash(meta), None, None)
    status, reason = project_status(parser.meta.get("pypi:project-status"),
                                    parser.meta.get("pypi:project-status-reason"))
    return Parsed(check.links, check.dropped, status, reason)


def parse(body: bytes, content_type: str, base: str) -> Parsed:
    """A project page in whichever form its content type says; 502 for any other type."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in JSON_TYPES:
        return parse_json(body, base)
    if kind in HTML_TYPES:
        return parse_html(body, base)
    shown = re.sub(r"[^\w./+-]", "", kind)[:80] or "none"
    raise UpstreamError(502, f"{safe_url(base)}: the upstream sent a page of type {shown}")


# -- rendering for our clients ---------------------------------------------------------

class RenderedFile(t.Protocol):
    """What a renderer needs of a file (upstream.UpstreamFile has it)."""

    @property
    def filename(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def requires_python(self) -> str | None: ...
    @property
    def yanked(self) -> bool | str: ...
    @property
    def core_metadata(self) -> str | None: ...
    @property
    def size(self) -> int | None: ...
    @property
    def upload_time(self) -> str | None: ...


def _relative(url: str) -> str:
    """A URL on this server as seen from /simple/<project>/ (works under any prefix)."""
    return "../.." + url if url.startswith("/") else url


def file_path(project: str, filename: str) -> str:
    """The URL path on this server of a cached file: ``/cache/<project>/<filename>``."""
    return f"/cache/{quote(project)}/{quote(filename)}"


def render(name: str, files: t.Sequence[RenderedFile], versions: t.Sequence[str],
           kind: str, status: str = "", reason: str = "") -> Page:
    """A project page of cached files in the form ``kind`` (one of simple_api's types),
    with the upstream's PEP 792 ``status`` ("" for active) and its reason."""
    if kind == JSON:
        out = []
        for f in files:
            item: dict[str, t.Any] = {"filename": f.filename, "url": _relative(f.url),
                                      "hashes": {"sha256": f.sha256}, "yanked": f.yanked}
            if f.requires_python:
                item["requires-python"] = f.requires_python
            if f.core_metadata:
                item["core-metadata"] = {"sha256": f.core_metadata}
            if f.size is not None:
                item["size"] = f.size
            if f.upload_time:
                item["upload-time"] = f.upload_time
            out.append(item)
        body = simple_api.json_project(name, out, versions, status or None, reason)
    else:
        rows = [simple_api.html_link(
            _relative(f.url), f.sha256, f.filename, f.requires_python, f.core_metadata,
            None if f.yanked is False else (f.yanked if isinstance(f.yanked, str) else ""))
            for f in files]
        body = simple_api.html_project(name, rows, status or None, reason)
    tag = {JSON: "j", V1_HTML: "v", TEXT_HTML: "h"}[kind]
    return Page(body, f'"{hashlib.sha256(body).hexdigest()[:32]}-u{tag}"')
