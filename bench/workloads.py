"""What is measured: each workload's request, the servers it applies to, and its check."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
SCALE_SIZES = (100, 1000, 10000)
ALL = ("nginx", "stock", "pypibox")
PYPI = ("stock", "pypibox")


@dataclass(frozen=True)
class Workload:
    """One row of the results table."""

    key: str
    label: str
    phase: str                     # main, auth, scale-<n>, upload
    kind: str = "wrk"              # wrk, pip, upload
    path: Callable[[dict[str, str]], str] = lambda names: "/"
    servers: tuple[str, ...] = ALL
    auth: bool = False
    accept: str | None = None
    index: bool = False            # an index page (p99 target)
    nginx_ref: str | None = None   # the workload whose nginx figure is the reference
    expect: dict[str, object] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return self.nginx_ref or self.key


def _simple(names: dict[str, str]) -> str:
    return "/simple/"


def _project(names: dict[str, str]) -> str:
    return f"/simple/{names['big']}/"


def _wheel(names: dict[str, str]) -> str:
    return f"/packages/{names['wheel']}"


def _sdist(names: dict[str, str]) -> str:
    return f"/packages/{names['sdist']}"


def all_workloads() -> list[Workload]:
    """Every workload in the order of the table."""
    w = [
        Workload("simple", "GET /simple/ (1,000 projects)", "main", path=_simple, index=True,
                 expect={"links": 1000}),
        Workload("project", "GET /simple/<project>/ (300 files)", "main", path=_project, index=True,
                 expect={"links": 300}),
        Workload("wheel", "GET 100 KB wheel", "main", path=_wheel, expect={"size": "wheel"}),
        Workload("sdist", "GET 10 MB sdist", "main", path=_sdist, expect={"size": "sdist"}),
        Workload("json", "GET /simple/<project>/ JSON (PEP 691)", "main", path=_project,
                 servers=("pypibox",), accept=JSON_TYPE, index=True, nginx_ref="project",
                 expect={"json_files": 300}),
    ]
    for base in w[:4]:
        w.append(Workload(f"auth-{base.key}", base.label + ", auth", "auth", path=base.path,
                          servers=PYPI, auth=True, index=base.index, nginx_ref=base.key,
                          expect=base.expect))
    for n in SCALE_SIZES:
        w.append(Workload(f"scale-{n}", f"scaling: /simple/<project>/, {n:,} files in tree",
                          f"scale-{n}", path=_project, index=True, expect={"links": 10}))
    w.append(Workload("pip", "pip download --no-deps, 20 packages", "main", kind="pip"))
    w.append(Workload("upload", "upload 200 files (multipart POST, auth)", "upload",
                      kind="upload", servers=PYPI))
    return w


def check(url: str, wl: Workload, headers: dict[str, str], sizes: dict[str, int],
          timeout: float = 60) -> str:
    """One request before the load: '' if the answer is what the workload expects, else why."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, ctype, body = resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except OSError as exc:
        return f"{exc}"
    if status != 200:
        return f"HTTP {status}"
    if "links" in wl.expect:
        count = body.count(b"<a ")
        need = int(wl.expect["links"])  # type: ignore[arg-type]
        if count < need or (need < 1000 and count != need):
            return f"{count} links, expected {need}"
    if "size" in wl.expect and len(body) != sizes[str(wl.expect["size"])]:
        return f"{len(body)} bytes, expected {sizes[str(wl.expect['size'])]}"
    if "json_files" in wl.expect:
        if not ctype.startswith(JSON_TYPE):
            return f"not supported (answered {ctype or 'no content type'})"
        files = json.loads(body).get("files", [])
        if len(files) != wl.expect["json_files"]:
            return f"{len(files)} files in JSON, expected {wl.expect['json_files']}"
    return ""
