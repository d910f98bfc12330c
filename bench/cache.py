"""The cache section of ``make bench``: installing ~30 projects through caching indexes.

An upstream on 127.0.0.1 (nginx serving a static PEP 503 tree of real wheels and sdists)
is installed from four ways: directly (the limit), through pypibox (``PYPI_FALLBACK=cache``),
through devpi-server (a mirror index) and through proxpi. Each proxy starts with an empty
cache: the first install is *cold* (every page and file comes from the upstream), the second
*warm* (all from the proxy's cache). Clients start with no cache of their own every time:
``uv pip install --no-cache`` into a new venv and ``pip install --no-cache-dir --target``.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

import bcrypt

from bench import deps, servers
from bench.trees import normalize  # also puts tests/ on sys.path, for pkgfactory

PROXIES = ("direct", "pypibox", "devpi", "proxpi")
CLIENTS = ("uv", "pip")
PROJECTS = 30
PREFIX = "cachebench"


@dataclass
class Upstream:
    """The tree the upstream serves, and the names a client installs."""

    packages: Path
    static: Path
    names: list[str]
    files: int
    bytes: int


def build_tree(base: Path) -> Upstream:
    """30 projects, 3 versions each (wheel and sdist), a tree of dependencies between them,
    payloads of 5 to 200 KB: real files a resolver has to choose among."""
    from pkgfactory import make_sdist, make_wheel

    rng = random.Random(15)
    pkgs = base / "packages"
    pkgs.mkdir(parents=True)
    names = [f"{PREFIX}-{i:02d}" for i in range(1, PROJECTS + 1)]
    for i, name in enumerate(names, 1):
        kids = [names[k - 1] for k in (2 * i, 2 * i + 1) if k <= PROJECTS]
        for version in ("1.0", "1.1", "2.0"):
            payload = rng.randbytes(rng.randint(5_000, 200_000))
            make_wheel(pkgs, name, version, requires=[f"{k}>=1.0" for k in kids],
                       payload=payload)
            make_sdist(pkgs, name, version, payload=payload[:5_000])
    static = base / "static"
    simple = static / "simple"
    simple.mkdir(parents=True)
    projects: dict[str, list[str]] = {}
    for entry in sorted(os.listdir(pkgs)):
        stem = entry.split("-")[0] if entry.endswith(".whl") else entry.rsplit("-", 1)[0]
        projects.setdefault(normalize(stem), []).append(entry)
    (simple / "index.html").write_text(
        "".join(f'<a href="{p}/">{p}</a><br>\n' for p in sorted(projects)))
    for project, files in projects.items():
        rows = []
        for name in files:
            digest = hashlib.sha256((pkgs / name).read_bytes()).hexdigest()
            quoted = html.escape(name)
            rows.append(f'<a href="../../packages/{quoted}#sha256={digest}">{quoted}</a><br>\n')
        (simple / project).mkdir()
        (simple / project / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><body><h1>Links for {project}</h1>\n{''.join(rows)}"
            "</body></html>\n")
    sizes = [p.stat().st_size for p in pkgs.iterdir()]
    return Upstream(pkgs, static, names, len(sizes), sum(sizes))


# -- the proxies -----------------------------------------------------------------------

def _get(url: str, timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Accept": "text/html"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, b""
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


def start_pypibox(workdir: Path, upstream: str, htpasswd: Path) -> tuple[servers.Running, str]:
    packages = workdir / "packages"
    packages.mkdir()
    srv = servers.start_pypibox(workdir=workdir, packages=packages, htpasswd=htpasswd,
                                auth=False, credentials="",
                                extra_env={"PYPI_FALLBACK": "cache", "PYPI_UPSTREAM": upstream})
    return srv, srv.url + "/simple/"


def start_devpi(workdir: Path, upstream: str, venv: Path) -> tuple[servers.Running, str]:
    """devpi-server with a mirror index ``root/up`` of the upstream (devpi-client sets it)."""
    serverdir, clientdir = workdir / "devpi-server", workdir / "devpi-client"
    env = servers.clean_env(DEVPI_CLIENTDIR=str(clientdir), HOME=str(workdir))
    subprocess.run([str(venv / "bin" / "devpi-init"), "--serverdir", str(serverdir),
                    "--no-root-pypi", "--root-passwd", "bench"], check=True, env=env,
                   capture_output=True)
    port = servers.free_port()
    srv = servers._spawn("devpi", [str(venv / "bin" / "devpi-server"), "--serverdir",
                                   str(serverdir), "--host", "127.0.0.1", "--port", str(port)],
                         workdir, port, env, "/+api", {})
    devpi = str(venv / "bin" / "devpi")
    for args in (["use", srv.url], ["login", "root", "--password", "bench"],
                 ["index", "-c", "up", "type=mirror", f"mirror_url={upstream}"]):
        out = subprocess.run([devpi, *args], env=env, capture_output=True, text=True,
                             check=False)
        if out.returncode != 0:
            srv.stop()
            raise RuntimeError(f"devpi {args[0]}: {(out.stderr or out.stdout).strip()[-300:]}")
    return srv, srv.url + "/root/up/+simple/"


def start_proxpi(workdir: Path, upstream: str, venv: Path) -> tuple[servers.Running, str]:
    """proxpi under gunicorn as its image runs it (one process: its caches are per process)."""
    port = servers.free_port()
    env = servers.clean_env(PROXPI_INDEX_URL=upstream, PROXPI_CACHE_DIR=str(workdir / "cache"),
                            PROXPI_BINARY_FILE_MIME_TYPE="1")
    cmd = [str(venv / "bin" / "gunicorn"), "--workers", "1", "--threads", "8", "--bind",
           f"127.0.0.1:{port}", "proxpi.server:app"]
    # proxpi answers 406 to a request without an Accept header.
    srv = servers._spawn("proxpi", cmd, workdir, port, env, f"/index/{PREFIX}-01/",
                         {"Accept": "text/html"})
    return srv, srv.url + "/index/"


def check_proxy(index: str, name: str, files: int) -> str:
    """'' if the index lists the project's files, else why not (the row gets the note)."""
    status, body = _get(f"{index}{name}/")
    if status != 200:
        return f"HTTP {status} for /{name}/" + (
            " (PYPI_FALLBACK=cache not wired to the routes yet?)" if status in (303, 404) else "")
    found = body.count(b"<a ")
    return "" if found >= files else f"{found} links for {name}, expected {files}"


# -- the clients -----------------------------------------------------------------------

def install(client: str, index: str, names: list[str], work: Path) -> tuple[float, str]:
    """Wall time of one install of every name with no client cache; '' or what failed."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{client}-", dir=work))
    env = servers.clean_env(UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never", HOME=str(tmp))
    python = servers.ROOT / ".venv" / "bin" / "python"
    if client == "uv":
        uv = shutil.which("uv", path=str(python.parent)) or "uv"
        subprocess.run([uv, "venv", "-q", str(tmp / "venv")], check=True, env=env)
        cmd = [uv, "pip", "install", "-q", "--no-cache", "--python", str(tmp / "venv" / "bin"
                                                                        / "python"),
               "--index-url", index, *names]
    else:
        cmd = [str(python), "-m", "pip", "install", "-q", "--no-cache-dir",
               "--disable-pip-version-check", "--target", str(tmp / "target"),
               "--index-url", index, *names]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    seconds = time.perf_counter() - start
    shutil.rmtree(tmp, ignore_errors=True)
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        return seconds, (lines[-1] if lines else f"exit {out.returncode}")[:200]
    return seconds, ""


# -- the section -------------------------------------------------------------------------

Figures = dict[str, dict[str, dict[str, list[float]]]]   # client -> proxy -> cold/warm -> s


class CacheBench:
    """Rounds of cold and warm installs through each proxy, and the report."""

    def __init__(self, base: Path, rounds: int, proxies: tuple[str, ...] = PROXIES) -> None:
        self.base = base
        self.rounds = rounds
        self.proxies = proxies
        self.figures: Figures = {}
        self.notes: dict[str, set[str]] = {}
        self.versions: dict[str, str] = {}

    def prepare(self) -> None:
        t0 = time.monotonic()
        self.tree = build_tree(self.base / "cache-tree")
        self.venvs = {}
        if "devpi" in self.proxies:
            self.venvs["devpi"] = deps.ensure_venv("devpi")
        if "proxpi" in self.proxies:
            self.venvs["proxpi"] = deps.ensure_venv("proxpi")
        self.htpasswd = self.base / "cache-htpasswd"
        digest = bcrypt.hashpw(os.urandom(9).hex().encode(), bcrypt.gensalt(4)).decode()
        self.htpasswd.write_text(f"bench:{digest}\n")   # the server needs one; no auth used
        nginx_dir = self.base / "cache-nginx"
        nginx_dir.mkdir()
        self.nginx = servers.start_nginx(workdir=nginx_dir, packages=self.tree.packages,
                                         static=self.tree.static)
        self.upstream = self.nginx.url + "/simple/"
        print(f"bench: cache tree of {PROJECTS} projects, {self.tree.files} files "
              f"({self.tree.bytes / 1e6:.1f} MB) on nginx in {time.monotonic() - t0:.1f}s",
              flush=True)

    def _start(self, proxy: str, workdir: Path) -> tuple[servers.Running | None, str]:
        if proxy == "direct":
            return None, self.upstream
        if proxy == "pypibox":
            return start_pypibox(workdir, self.upstream, self.htpasswd)
        if proxy == "devpi":
            return start_devpi(workdir, self.upstream, self.venvs["devpi"])
        return start_proxpi(workdir, self.upstream, self.venvs["proxpi"])

    def _note(self, key: str, text: str) -> None:
        self.notes.setdefault(key, set()).add(text)
        print(f"  cache {key}: {text}", flush=True)

    def run_round(self, number: int) -> None:
        order = list(self.proxies[number % len(self.proxies):]
                     + self.proxies[:number % len(self.proxies)])
        print(f"bench: cache round {number + 1}/{self.rounds} (order: {', '.join(order)})",
              flush=True)
        for client in CLIENTS:
            for proxy in order:
                workdir = Path(tempfile.mkdtemp(prefix=f"cache-{proxy}-", dir=self.base))
                key = f"{client}/{proxy}"
                try:
                    srv, index = self._start(proxy, workdir)
                except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                    self._note(key, f"did not start: {str(exc)[:200]}")
                    continue
                try:
                    why = check_proxy(index, self.tree.names[0], 6)
                    if why:
                        self._note(key, why)
                        continue
                    for phase in ("cold", "warm"):
                        seconds, failed = install(client, index, self.tree.names, workdir)
                        if failed:
                            self._note(key, f"{phase}: {failed}")
                            break
                        runs = self.figures.setdefault(client, {}).setdefault(proxy, {})
                        runs.setdefault(phase, []).append(seconds)
                        print(f"  cache {key:<14} {phase} {seconds:6.2f} s", flush=True)
                finally:
                    if srv is not None:
                        srv.stop()
                    shutil.rmtree(workdir, ignore_errors=True)

    def run(self) -> None:
        self.prepare()
        try:
            for number in range(self.rounds):
                self.run_round(number)
        finally:
            self.nginx.stop()
        self.versions = {name: deps.freeze_line(venv, name) for name, venv in self.venvs.items()}

    # -- report ------------------------------------------------------------------------
    def medians(self) -> dict[str, dict[str, dict[str, float | None]]]:
        out: dict[str, dict[str, dict[str, float | None]]] = {}
        for client in CLIENTS:
            for proxy in self.proxies:
                runs = self.figures.get(client, {}).get(proxy, {})
                out.setdefault(client, {})[proxy] = {
                    phase: statistics.median(runs[phase]) if runs.get(phase) else None
                    for phase in ("cold", "warm")}
        return out

    def targets(self) -> list[dict[str, Any]]:
        med = self.medians()
        found: list[dict[str, Any]] = []

        def add(name: str, value: float | None, need: float, higher: bool) -> None:
            if value is None:
                found.append({"target": name, "status": "n/a"})
                return
            ok = value >= need if higher else value <= need
            found.append({"target": name, "status": "PASS" if ok else "MISS", "value": value,
                          "text": f"{value:.2f}x (need {'≥' if higher else '≤'} {need:g}x)"})

        for client in CLIENTS:
            row = med[client]
            direct, ours = row.get("direct", {}), row.get("pypibox", {})
            add(f"cache {client}: warm speed vs direct nginx",
                _ratio(direct.get("warm"), ours.get("warm")), 0.9, True)
            add(f"cache {client}: cold time vs direct nginx",
                _ratio(ours.get("cold"), direct.get("cold")), 1.3, False)
            for other in ("devpi", "proxpi"):
                add(f"cache {client}: warm speed vs {other}",
                    _ratio(row.get(other, {}).get("warm"), ours.get("warm")), 1.0001, True)
        return found

    def table(self) -> str:
        med = self.medians()
        lines = [(f"Cache: `uv pip install` / `pip install` of all {PROJECTS} projects "
                  f"({self.tree.files} files, {self.tree.bytes / 1e6:.1f} MB upstream, "
                  "served by nginx on 127.0.0.1), client caches off; cold = the proxy's cache "
                  "empty, warm = filled by the cold run; median of "
                  f"{self.rounds} rounds (and the best round: on a shared machine the least "
                  "disturbed). In cells, `(1.20x)` is the time divided by direct nginx's.\n"),
                 "| client | index | cold | warm | best cold / warm |",
                 "| --- | --- | ---: | ---: | ---: |"]
        for client in CLIENTS:
            direct = med[client].get("direct", {})
            for i, proxy in enumerate(self.proxies):
                fig = med[client][proxy]
                cells = []
                for phase in ("cold", "warm"):
                    value = fig.get(phase)
                    if value is None:
                        cells.append("n/a")
                        continue
                    rel = _ratio(value, direct.get(phase)) if proxy != "direct" else None
                    cells.append(f"{value:.2f} s" + (f" ({rel:.2f}x)" if rel else ""))
                runs = self.figures.get(client, {}).get(proxy, {})
                best = " / ".join(f"{min(runs[p]):.2f} s" if runs.get(p) else "n/a"
                                  for p in ("cold", "warm"))
                notes = self.notes.get(f"{client}/{proxy}")
                label = proxy + (f" ⚠ {'; '.join(sorted(notes))}" if notes else "")
                lines.append(f"| {client if i == 0 else ''} | {label} | {cells[0]} | "
                             f"{cells[1]} | {best} |")
        versions = "; ".join(f"{k}: {v}" for k, v in self.versions.items())
        return "\n".join(lines) + (f"\n\nVersions: {versions}.\n" if versions else "\n")

    def record(self) -> dict[str, Any]:
        return {"figures": self.figures, "medians": self.medians(), "targets": self.targets(),
                "notes": {k: sorted(v) for k, v in self.notes.items()},
                "versions": self.versions}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    """Run only the cache section: ``python bench/cache.py [--rounds N] [--keep]``."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--proxies", default=",".join(PROXIES))
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    deps.ensure_tools()
    base = Path(tempfile.mkdtemp(prefix="pypibox-bench-cache-"))
    base.chmod(0o755)
    bench = CacheBench(base, args.rounds, tuple(args.proxies.split(",")))
    try:
        bench.run()
        print("\n" + bench.table())
        for t in bench.targets():
            print(f"- {t['status']}: {t['target']}" + (f" = {t['text']}" if t.get("text") else ""))
        results = servers.BENCH / "results"
        results.mkdir(exist_ok=True)
        (results / "cache-latest.json").write_text(json.dumps(bench.record(), indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
