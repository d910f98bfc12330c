"""Pages for people: the list of projects, a search, and a page per project.

Server-rendered HTML without JavaScript, readable on a phone. Everything comes from the
index (a page of rows at a time, never a walk of the tree); descriptions are rendered
from the stored metadata by readme_renderer (Markdown, reStructuredText or plain text,
sanitised, as PyPI renders them) and kept per file hash.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import html
import logging
import threading
import time
import typing as t
from collections import OrderedDict
from urllib.parse import quote, urlencode

from packaging.utils import canonicalize_name

from . import __version__, files
from .messages import Refusal, Request, Response, moved

if t.TYPE_CHECKING:
    from .index import FileEntry, PackageIndex
    from .ledger import Ledger
    from .settings import Settings

log = logging.getLogger("pypibox.webpages")

#: Projects per page of the list and of a search.
PROJECTS_PER_PAGE = 50
#: Versions per page of a project page (files of each listed).
VERSIONS_PER_PAGE = 20
#: Rendered descriptions kept per worker, by the sha256 of the file they come from.
DESCRIPTIONS_KEPT = 256
#: Characters of a description rendered; the rest is cut (with a note).
MAX_DESCRIPTION = 512 << 10
HTML_TYPE = "text/html; charset=utf-8"

STYLE = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,sans-serif;color:#1d2330;margin:0;background:#fafbfc}
header{background:#243b55;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;
gap:.5rem 1rem;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
header form{flex:1 1 16rem;display:flex;gap:.3rem}
header input{flex:1;min-width:0;padding:.35rem .5rem;border:0;border-radius:3px;font-size:1rem}
header button{padding:.35rem .8rem;border:0;border-radius:3px;background:#e8edf3;font-size:1rem}
main{max-width:62rem;margin:0 auto;padding:.5rem 1rem 2rem}
h1{font-size:1.6rem;margin:.8rem 0 .2rem}
h2{font-size:1.2rem;margin:1.4rem 0 .5rem;border-bottom:1px solid #d9dee7}
.summary{color:#4a5263;margin:.2rem 0 .8rem}
pre{background:#f3f5f8;border:1px solid #d9dee7;padding:.45rem .7rem;overflow-x:auto;margin:.3rem 0}
code{font-family:ui-monospace,monospace;font-size:.92em}
table{border-collapse:collapse;width:100%}
.scroll{overflow-x:auto}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e3e7ee;vertical-align:top}
td.num{text-align:right;white-space:nowrap}
.hash{font-family:ui-monospace,monospace;font-size:.8em;word-break:break-all;color:#4a5263}
.yanked{color:#a23b00}
.badge{display:inline-block;padding:0 .4rem;border-radius:3px;background:#fbe3d3;
color:#a23b00;font-size:.85em}
.nav{margin:1rem 0;display:flex;gap:1rem}
.desc{background:#fff;border:1px solid #e3e7ee;padding:.3rem 1rem;border-radius:4px;
overflow-x:auto}
.desc img{max-width:100%}
footer{color:#6b7385;font-size:.85rem;text-align:center;padding:1rem}
"""


def metadata_fields(raw: bytes) -> tuple[dict[str, str], str, str]:
    """Headers, description and its content type from core metadata bytes."""
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    headers = {k.lower(): str(v) for k, v in message.items()}
    body = message.get_payload()
    description = body if isinstance(body, str) and body.strip() else ""
    if not description and headers.get("description"):
        # Metadata 1.x: the description is a header whose lines start with "       |".
        lines = headers["description"].splitlines()
        description = "\n".join(line[8:] if line.startswith("       |") else line.strip()
                                for line in lines)
    kind = headers.get("description-content-type", "text/x-rst").split(";")[0].strip().lower()
    return headers, description, kind


def render_description(description: str, kind: str) -> str:
    """Sanitised HTML of a description, as PyPI renders it; plain text if that fails."""
    from readme_renderer import markdown, rst, txt

    text = description[:MAX_DESCRIPTION]
    rendered: str | None = None
    try:
        if kind == "text/markdown":
            rendered = markdown.render(text)
        elif kind in ("text/x-rst", ""):
            rendered = rst.render(text)
    except Exception:  # noqa: BLE001 - a description that cannot be rendered is shown as text
        log.warning("a description could not be rendered as %s; shown as plain text", kind)
    if rendered is None:
        rendered = txt.render(text) or ""
    if len(description) > MAX_DESCRIPTION:
        rendered += f"<p><em>(description cut at {MAX_DESCRIPTION} characters)</em></p>"
    return rendered


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _date(mtime_ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime_ns / 1e9)) + " UTC"


def _e(text: object) -> str:
    return html.escape(str(text))


class WebPages:
    """The handlers of the pages for people."""

    def __init__(self, settings: Settings, index: PackageIndex, ledger: Ledger) -> None:
        self.settings = settings
        self.index = index
        self.ledger = ledger
        self._descriptions: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    # -- layout --------------------------------------------------------------------------
    def _page(self, req: Request, title: str, body: str, query: str = "") -> Response:
        root = req.url_root
        page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
                f"<header><a href=\"{_e(root)}\">Private package index</a>"
                f"<a href=\"{_e(root)}projects/\">Projects</a>"
                f"<form action=\"{_e(root)}projects/\" method=\"get\" role=\"search\">"
                f"<input type=\"search\" name=\"q\" value=\"{_e(query)}\" "
                "placeholder=\"Search projects\" aria-label=\"Search projects\">"
                "<button type=\"submit\">Search</button></form></header>\n"
                f"<main>\n{body}\n</main>\n<footer>pypibox {_e(__version__)} · "
                "<a href=\"https://github.com/pypibox/pypibox\">source</a></footer>\n"
                "</body>\n</html>\n").encode()
        etag = '"' + hashlib.sha256(page).hexdigest()[:32] + '"'
        return files.send_bytes(req, page, etag, HTML_TYPE, [("Cache-Control", files.REVALIDATE)])

    def _number(self, req: Request, name: str = "page") -> int:
        text = req.arg(name, "1")
        if not text.isdigit() or not 1 <= int(text) <= 1 << 20:
            raise Refusal(400, f"Bad request: {name} must be a number from 1")
        return int(text)

    def _nav(self, base: str, params: dict[str, str], page: int, pages: int) -> str:
        links = []
        if page > 1:
            links.append(f'<a rel="prev" href="{_e(base)}?'
                         f'{_e(urlencode({**params, "page": page - 1}))}">← previous</a>')
        if pages > 1:
            links.append(f"<span>page {page} of {pages}</span>")
        if page < pages:
            links.append(f'<a rel="next" href="{_e(base)}?'
                         f'{_e(urlencode({**params, "page": page + 1}))}">next →</a>')
        return f'<p class="nav">{"".join(links)}</p>' if links else ""

    # -- the list and the search ---------------------------------------------------------
    def projects(self, req: Request) -> Response:
        """/projects/?q=...&page=N: projects by name, or those whose name or summary match."""
        query = " ".join(req.arg("q").split())[:100]
        page = self._number(req)
        self.index.refresh()
        found, total = self.index.projects(query or None, (page - 1) * PROJECTS_PER_PAGE,
                                           PROJECTS_PER_PAGE)
        pages = max(1, -(-total // PROJECTS_PER_PAGE))
        rows = "".join(
            f'<tr><td><a href="{_e(req.url_root)}project/{_e(quote(p.project))}/">'
            f"{_e(p.name)}</a></td><td>{_e(p.latest_version or '')}</td>"
            f"<td>{_e(p.summary or '')}</td><td class=\"num\">{_e(_date(p.last_upload_ns))}"
            "</td></tr>\n" for p in found)
        if query:
            heading = f"{total} project{'s' if total != 1 else ''} matching “{_e(query)}”"
        else:
            heading = f"{total} project{'s' if total != 1 else ''}"
        table = ("<div class=\"scroll\"><table id=\"projects\"><thead><tr><th>project</th>"
                 "<th>latest</th><th>summary</th><th>last upload</th></tr></thead><tbody>\n"
                 f"{rows}</tbody></table></div>") if found else "<p>Nothing found.</p>"
        params = {"q": query} if query else {}
        body = (f"<h1 id=\"heading\">{heading}</h1>\n{table}\n"
                + self._nav(f"{req.url_root}projects/", params, page, pages))
        return self._page(req, "Projects", body, query)

    # -- a project -------------------------------------------------------------------------
    def _description(self, entry: FileEntry) -> tuple[str, dict[str, str]]:
        raw = self.index.metadata(entry)
        if raw is None:
            return "", {}
        headers, description, kind = metadata_fields(raw)
        with self._lock:
            cached = self._descriptions.get(entry.sha256)
        if cached is None:
            cached = render_description(description, kind) if description.strip() else ""
            with self._lock:
                self._descriptions[entry.sha256] = cached
                while len(self._descriptions) > DESCRIPTIONS_KEPT:
                    self._descriptions.popitem(last=False)
        return cached, headers

    def project(self, req: Request) -> Response:
        """/project/<name>/: description, install lines, versions and their files."""
        raw = req.params["project"]
        name = canonicalize_name(raw)
        if raw != name:
            location = f"{req.url_root}project/{quote(name)}/"
            return moved(location)
        page = self._number(req)
        self.index.refresh()
        # A yank or a status another worker recorded a moment ago shows on this page too.
        self.ledger.refresh(force=True, wait=False)
        entries = self.index.project(name)
        status = self.ledger.status(name)
        if not entries or status == "quarantined":
            raise Refusal(404, f"Not found: this index holds no project {name}")
        by_version: dict[str, list[FileEntry]] = {}
        for entry in reversed(entries):  # newest first
            by_version.setdefault(entry.version, []).append(entry)
        versions = list(by_version)
        latest = versions[0]
        wheel_first = sorted(by_version[latest], key=lambda e: not e.is_wheel)
        description, headers = self._description(wheel_first[0])
        display = wheel_first[0].name or name
        summary = wheel_first[0].summary or ""
        pages = max(1, -(-len(versions) // VERSIONS_PER_PAGE))
        shown = versions[(page - 1) * VERSIONS_PER_PAGE: page * VERSIONS_PER_PAGE]
        badge = ""
        if status:
            reason = self.ledger.status_reason(name)
            badge = (f' <span class="badge" id="status">{_e(status)}'
                     f'{": " + _e(reason) if reason else ""}</span>')
        body = [f"<h1 id=\"name\">{_e(display)} <small>{_e(latest)}</small>{badge}</h1>",
                f"<p class=\"summary\" id=\"summary\">{_e(summary)}</p>",
                self._facts(headers, wheel_first[0]),
                self._install(req, display, latest)]
        if description:
            body.append(f"<h2>Description</h2>\n<div class=\"desc\" id=\"description\">"
                        f"{description}</div>")
        body += [f"<h2>Versions</h2>\n<p>{len(versions)} version"
                 f"{'s' if len(versions) != 1 else ''}, {len(entries)} files.</p>",
                 self._files_table(req, shown, by_version),
                 self._nav(f"{req.url_root}project/{quote(name)}/", {}, page, pages)]
        return self._page(req, f"{display} {latest}", "\n".join(body))

    def _facts(self, headers: dict[str, str], entry: FileEntry) -> str:
        items = []
        if entry.requires_python:
            items.append(f"<li>Requires Python <code>{_e(entry.requires_python)}</code></li>")
        for key, label in (("author", "Author"), ("license", "License"),
                           ("license-expression", "License")):
            if headers.get(key) and len(headers[key]) < 200:
                items.append(f"<li>{label}: {_e(headers[key])}</li>")
        return f"<ul id=\"facts\">{''.join(items)}</ul>" if items else ""

    def _install(self, req: Request, display: str, version: str) -> str:
        index = f"{req.url_root}simple/"
        spec = f"{display}=={version}"
        lines = [
            ("pip", f"pip install --index-url {index} {spec}"),
            ("uv", f"uv pip install --index-url {index} {spec}"),
            ("poetry", f"poetry source add --priority=explicit private {index}\n"
                       f"poetry add --source private {display}"),
            ("pdm", f"pdm config --local pypi.url {index}\npdm add {display}"),
        ]
        blocks = "".join(f"<p>{tool}</p><pre id=\"install-{tool}\">{_e(text)}</pre>"
                         for tool, text in lines)
        return f"<h2>Install</h2>\n{blocks}"

    def _files_table(self, req: Request, versions: list[str],
                     by_version: dict[str, list[FileEntry]]) -> str:
        rows = []
        for version in versions:
            for entry in by_version[version]:
                uploader = self.ledger.uploader(entry.relpath)
                yanked = self.ledger.yanked(entry.relpath)
                state = (f' <span class="badge">yanked{": " + _e(yanked) if yanked else ""}'
                         "</span>") if yanked is not None else ""
                row_class = ' class="yanked"' if yanked is not None else ""
                rows.append(
                    f"<tr{row_class}>"
                    f"<td>{_e(version)}</td>"
                    f"<td><a href=\"{_e(req.url_root)}packages/{_e(quote(entry.relpath))}\">"
                    f"{_e(entry.filename)}</a>{state}<div class=\"hash\">sha256 "
                    f"{_e(entry.sha256)}</div></td>"
                    f"<td class=\"num\">{_e(_size(entry.size))}</td>"
                    f"<td class=\"num\">{_e(_date(entry.mtime_ns))}</td>"
                    f"<td>{_e(entry.requires_python or '')}</td>"
                    f"<td>{_e(uploader or '')}</td></tr>")
        return ("<div class=\"scroll\"><table id=\"files\"><thead><tr><th>version</th>"
                "<th>file</th><th>size</th><th>uploaded</th><th>Python</th><th>by</th></tr>"
                f"</thead><tbody>\n{''.join(rows)}</tbody></table></div>")
