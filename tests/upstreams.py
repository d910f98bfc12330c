"""Upstream indexes on 127.0.0.1 for the cache tests: a static PEP 503 tree served by the
standard library's http.server (with ETags, optional Basic auth, a request log, and hooks
for crafted hostile answers), and helpers to fill a pypibox upstream with real files."""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import os
import re
import shutil
import socket
import sys
import threading
import time
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

from pkgfactory import make_sdist, make_wheel


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_of(filename: str) -> str:
    """The project of a file name written by pkgfactory (wheel or sdist)."""
    if filename.endswith(".whl"):
        return normalize(filename.split("-")[0])
    return normalize(filename.rsplit("-", 1)[0])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_pages(root: Path, requires_python: dict[str, str] | None = None) -> None:
    """PEP 503 pages under root/simple/ for every file in root/packages/ (with #sha256=)."""
    projects: dict[str, list[Path]] = {}
    for path in sorted((root / "packages").iterdir()):
        projects.setdefault(project_of(path.name), []).append(path)
    simple = root / "simple"
    if simple.exists():
        shutil.rmtree(simple)
    simple.mkdir(parents=True)
    (simple / "index.html").write_text("".join(f'<a href="{p}/">{p}</a>\n' for p in projects))
    for project, paths in projects.items():
        rows = []
        for path in paths:
            attrs = ""
            rp = (requires_python or {}).get(path.name)
            if rp:
                attrs = f' data-requires-python="{html.escape(rp)}"'
            rows.append(f'<a href="../../packages/{path.name}#sha256={sha256(path)}"{attrs}>'
                        f"{path.name}</a><br>\n")
        (simple / project).mkdir()
        (simple / project / "index.html").write_text(
            f"<!DOCTYPE html><html><body><h1>Links for {project}</h1>\n{''.join(rows)}"
            "</body></html>\n")


@dataclass
class Logged:
    method: str
    path: str
    status: int
    headers: dict[str, str]


Hook = t.Callable[[http.server.BaseHTTPRequestHandler], bool]


class _QuietServer(http.server.ThreadingHTTPServer):
    """A client that hangs up mid-answer is what several tests do on purpose: no traceback
    for that in the test output; any other error is printed as usual."""

    daemon_threads = True

    def handle_error(self, request: t.Any, client_address: t.Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class StaticUpstream:
    """A ThreadingHTTPServer serving ``root`` (simple/ pages and packages/ files)."""

    root: Path
    auth: tuple[str, str] | None = None
    hooks: dict[str, Hook] = field(default_factory=dict)   # path -> handler (True: handled)
    delay: float = 0.0                                      # seconds between 16 KiB chunks
    log: list[Logged] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None
    conns: set = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self, port: int = 0) -> StaticUpstream:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                outer.conns.add(self.connection)

            def finish(self) -> None:
                outer.conns.discard(self.connection)
                super().finish()

            def send_response(self, code: int, message: str | None = None) -> None:
                outer.log.append(Logged(self.command, self.path, code,
                                        {k.lower(): v for k, v in self.headers.items()}))
                super().send_response(code, message)

            def plain(self, code: int, text: str) -> None:
                body = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if outer.auth is not None:
                    want = "Basic " + base64.b64encode(
                        f"{outer.auth[0]}:{outer.auth[1]}".encode()).decode()
                    if self.headers.get("Authorization") != want:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="up"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                hook = outer.hooks.get(self.path.split("?")[0])
                if hook is not None and hook(self):
                    return
                rel = self.path.split("?")[0].lstrip("/")
                target = outer.root / rel
                if rel.endswith("/") or not rel:
                    target = target / "index.html"
                if ".." in rel.split("/") or not target.is_file():
                    self.plain(404, "not found")
                    return
                data = target.read_bytes()
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                ctype = "text/html" if target.name.endswith(".html") else \
                    "application/octet-stream"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.end_headers()
                for i in range(0, len(data), 16384):
                    if outer.delay:
                        time.sleep(outer.delay)
                    self.wfile.write(data[i:i + 16384])

        self.server = _QuietServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection, as a server that goes down."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            for conn in list(self.conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def count(self, path_part: str, status: int | None = None) -> int:
        return sum(1 for e in self.log if path_part in e.path and
                   (status is None or e.status == status))


def fill(packages: Path, projects: dict[str, list[str]], sdist: bool = True,
         mtime: dict[str, float] | None = None) -> list[Path]:
    """Real wheels (and sdists) of ``{name: [versions]}`` in ``packages``; optional mtimes
    (by version) so that a pypibox upstream shows them as uploaded then."""
    made: list[Path] = []
    for name, versions in projects.items():
        for version in versions:
            files = [make_wheel(packages, name, version)]
            if sdist:
                files.append(make_sdist(packages, name, version))
            for path in files:
                if mtime and version in mtime:
                    os.utime(path, (mtime[version], mtime[version]))
            made += files
    return made


def snapshot(top: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``top`` except under ``skip``: path -> (size, mtime_ns)."""
    out = {}
    for dirpath, _dirs, names in os.walk(top):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out
