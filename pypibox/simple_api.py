"""The simple repository API pages (PEP 503, 691, 700, 714): rendering and negotiation."""

from __future__ import annotations

import datetime
import hashlib
import html
import json
import typing as t
from dataclasses import dataclass
from urllib.parse import quote

if t.TYPE_CHECKING:
    from .index import FileEntry

#: 1.4: the pages carry PEP 792's project status (1.1 is PEP 700's versions and upload times;
#: 1.2 and 1.3 add only optional keys, PEP 708's and PEP 740's, which this index never has).
API_VERSION = "1.4"
#: PEP 792 project statuses; "active" is the default, shown as no status.
PROJECT_STATUSES = ("active", "archived", "quarantined", "deprecated")
JSON = "application/vnd.pypi.simple.v1+json"
#: A wheel's core metadata file is served at the wheel's URL plus this (PEP 658).
METADATA_SUFFIX = ".metadata"
V1_HTML = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"
#: What each kind is sent as.
CONTENT_TYPES = {JSON: JSON, V1_HTML: f"{V1_HTML}; charset=utf-8",
                 TEXT_HTML: f"{TEXT_HTML}; charset=utf-8"}
_ALIASES = {"application/vnd.pypi.simple.latest+json": JSON,
            "application/vnd.pypi.simple.latest+html": V1_HTML}
#: Preference when a client rates types equally: exact names favour JSON, wildcards HTML.
_EXACT_PREF = (JSON, V1_HTML, TEXT_HTML)
_WILD_PREF = (TEXT_HTML, JSON, V1_HTML)


@dataclass(frozen=True)
class Page:
    """A rendered page: body bytes and a strong ETag."""

    body: bytes
    etag: str


_NEGOTIATED: dict[str, str | None] = {}


def negotiate(accept: str | None) -> str | None:
    """The media type to send for an Accept header; None when nothing offered is acceptable."""
    if not accept or not accept.strip():
        return TEXT_HTML
    try:
        return _NEGOTIATED[accept]
    except KeyError:
        pass
    kind = _negotiate(accept)
    if len(_NEGOTIATED) < 256:  # clients send a handful of distinct headers
        _NEGOTIATED[accept] = kind
    return kind


def _negotiate(accept: str) -> str | None:
    best: dict[str, tuple[int, float]] = {}   # type -> (specificity, q) of the best match
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        media = _ALIASES.get(parts[0].lower(), parts[0].lower())
        if not media:
            continue
        q = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        for offered in CONTENT_TYPES:
            major = offered.split("/")[0]
            if media == offered:
                spec = 2
            elif media == f"{major}/*":
                spec = 1
            elif media == "*/*":
                spec = 0
            else:
                continue
            if offered not in best or spec > best[offered][0] or (
                    spec == best[offered][0] and q > best[offered][1]):
                best[offered] = (spec, q)
    candidates = [(q, spec, kind) for kind, (spec, q) in best.items() if q > 0]
    if not candidates:
        return None

    def rank(item: tuple[float, int, str]) -> tuple[float, int, int]:
        q, spec, kind = item
        pref = _EXACT_PREF if spec == 2 else _WILD_PREF
        return (q, spec, -pref.index(kind))

    return max(candidates, key=rank)[2]


def _page(body: bytes, kind: str) -> Page:
    tag = {JSON: "j", V1_HTML: "v", TEXT_HTML: "h"}[kind]
    return Page(body, f'"{hashlib.sha256(body).hexdigest()[:32]}-{tag}"')


def upload_time(mtime_ns: int) -> str:
    """ISO 8601 UTC with a Z, as PEP 700 asks."""
    moment = datetime.datetime.fromtimestamp(mtime_ns / 1e9, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def file_url(entry: FileEntry) -> str:
    """The file's URL relative to its project page, as pypiserver writes it."""
    return "../../packages/" + quote(entry.relpath)


def render_index(names: t.Iterable[str], kind: str) -> Page:
    """The /simple/ page listing every project."""
    names = sorted(names)
    if kind == JSON:
        data = {"meta": {"api-version": API_VERSION}, "projects": [{"name": n} for n in names]}
        return _page(json.dumps(data, separators=(",", ":")).encode(), kind)
    links = "".join(f'<a href="{html.escape(quote(n))}/">{html.escape(n)}</a><br>\n' for n in names)
    body = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"pypi:repository-version\" content=\"{API_VERSION}\">\n"
            "<title>Simple Index</title>\n</head>\n<body>\n<h1>Simple Index</h1>\n"
            f"{links}</body>\n</html>\n")
    return _page(body.encode("utf-8"), kind)


def _versions(entries: t.Sequence[FileEntry]) -> list[str]:
    seen: dict[str, None] = {}
    for entry in entries:  # already in version order
        seen.setdefault(entry.version, None)
    return list(seen)


def _yank(reason: str | None) -> bool | str:
    """PEP 592 in JSON: False, True (yanked without a reason) or the reason."""
    return False if reason is None else (reason or True)


def render_project(name: str, entries: t.Sequence[FileEntry], kind: str,
                   yanked: t.Callable[[str], str | None] = lambda relpath: None,
                   status: str | None = None, reason: str = "") -> Page:
    """A project's page; ``yanked(relpath)`` gives a yank's reason (None: not yanked),
    ``status`` the project's PEP 792 status (None: active)."""
    if kind == JSON:
        files = []
        for entry in entries:
            item: dict[str, t.Any] = {
                "filename": entry.filename,
                "url": file_url(entry),
                "hashes": {"sha256": entry.sha256},
                "size": entry.size,
                "upload-time": upload_time(entry.mtime_ns),
                "yanked": _yank(yanked(entry.relpath)),
            }
            if entry.requires_python:
                item["requires-python"] = entry.requires_python
            if entry.metadata_sha256:
                # Only the PEP 714 name in JSON: pip 22.3 to 23.1 crash on the JSON
                # "dist-info-metadata" key (the reason PEP 714 renamed it).
                item["core-metadata"] = {"sha256": entry.metadata_sha256}
            files.append(item)
        return _page(json_project(name, files, _versions(entries), status, reason), kind)
    rows = [html_link(file_url(entry), entry.sha256, entry.filename, entry.requires_python,
                      entry.metadata_sha256, yanked(entry.relpath)) for entry in entries]
    return _page(html_project(name, rows, status, reason), kind)


def json_project(name: str, files: list[dict[str, t.Any]], versions: t.Sequence[str],
                 status: str | None = None, reason: str = "") -> bytes:
    """The JSON form (PEP 691) of a project page, from its file items."""
    data: dict[str, t.Any] = {"meta": {"api-version": API_VERSION}, "name": name,
                              "files": files, "versions": list(versions)}
    if status:
        data["project-status"] = {"status": status, "reason": reason}
    return json.dumps(data, separators=(",", ":")).encode()


def html_link(url: str, sha256: str, filename: str, requires_python: str | None,
              core_metadata: str | None, yanked: str | None) -> str:
    """One file's anchor of a project page in HTML (PEP 503, 592, 658, 714); ``yanked`` is
    the reason ("" for none given) or None."""
    attrs = ""
    if requires_python:
        attrs += f' data-requires-python="{html.escape(requires_python)}"'
    if core_metadata:
        value = f"sha256={core_metadata}"
        attrs += f' data-dist-info-metadata="{value}" data-core-metadata="{value}"'
    if yanked is not None:
        attrs += f' data-yanked="{html.escape(yanked)}"'
    href = html.escape(f"{url}#sha256={sha256}")
    return f'<a href="{href}"{attrs}>{html.escape(filename)}</a><br>\n'


def html_project(name: str, rows: t.Sequence[str], status: str | None = None,
                 reason: str = "") -> bytes:
    """The HTML form of a project page around its anchors, with its PEP 792 status."""
    title = html.escape(name)
    body = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"pypi:repository-version\" content=\"{API_VERSION}\">\n"
            + (f'<meta name="pypi:project-status" content="{html.escape(status)}">\n'
               if status else "")
            + (f'<meta name="pypi:project-status-reason" content="{html.escape(reason)}">\n'
               if status and reason else "")
            + f"<title>Links for {title}</title>\n</head>\n<body>\n<h1>Links for {title}</h1>\n"
            f"{''.join(rows)}</body>\n</html>\n")
    return body.encode("utf-8")
