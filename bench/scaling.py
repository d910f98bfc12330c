"""The scaling section: one pypibox server over trees of 10,000, 100,000 and 1,000,000 files.

Each tree is projects of five small real wheels (the 100,000 tree is issue 13's 20,000
projects x 5), generated once and kept under ``$PYPIBOX_BENCH_CACHE`` (default
/var/tmp/pypibox-bench) for later runs. Per size: start to first answer from an empty
state and from a warm one, the first and the warm project page, /simple/, /packages/,
uploads, how soon a second server on the same directory sees an upload, resident memory
and the state's size on disk.

Usage: .venv/bin/python bench/run.py --only scaling [--scale 1000000]
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from . import clients, servers, wrk

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pkgfactory import make_wheel  # noqa: E402

CACHE = Path(os.environ.get("PYPIBOX_BENCH_CACHE", "/var/tmp/pypibox-bench"))
SIZES = (10_000, 100_000)
PER_PROJECT = 5
TARGET = "scaletarget"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
UPLOADS = 30


def project_name(i: int) -> str:
    return f"filler-{i:07d}"


def _make_range(args: tuple[str, int, int]) -> None:
    packages, start, stop = args
    dest = Path(packages)
    for i in range(start, stop):
        for v in range(PER_PROJECT):
            make_wheel(dest, project_name(i), f"1.{v}")


def tree(files: int) -> Path:
    """The packages directory of ``files`` wheels, generated unless cached (``done`` marks a
    complete one)."""
    base = CACHE / f"tree-{files}"
    packages = base / "packages"
    if (base / "done").exists():
        return packages
    shutil.rmtree(base, ignore_errors=True)
    packages.mkdir(parents=True)
    started = time.monotonic()
    for v in range(PER_PROJECT):
        make_wheel(packages, TARGET, f"1.{v}")
    projects = files // PER_PROJECT - 1
    step = 2000
    with multiprocessing.Pool(os.cpu_count() or 2) as pool:
        pool.map(_make_range, [(str(packages), i, min(i + step, projects))
                               for i in range(0, projects, step)])
    (base / "done").write_text(f"{files}\n")
    print(f"scaling: generated {files:,} wheels in {time.monotonic() - started:.0f} s "
          f"under {packages}", flush=True)
    return packages


def _get(url: str, headers: dict[str, str] | None = None, timeout: float = 120
         ) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one GET."""
    start = time.perf_counter()
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, body, time.perf_counter() - start
    except urllib.error.HTTPError as err:
        return err.code, err.read(), time.perf_counter() - start
    except OSError:
        return 0, b"", time.perf_counter() - start


def _target_ok(url: str) -> bool:
    status, body, _ = _get(f"{url}/simple/{TARGET}/", {"Accept": JSON_TYPE}, timeout=30)
    return status == 200 and len(json.loads(body)["files"]) == PER_PROJECT


def unread(packages: Path) -> int | None:
    """Files the index has seen but not read yet (read-only look at its database)."""
    state = packages / ".pypibox"
    try:
        name = (state / "index.current").read_text().strip()
        conn = sqlite3.connect(f"file:{state / name}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute("SELECT count(*) FROM files WHERE state = 0")
                       .fetchone()[0])
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return None


def _state_bytes(packages: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(packages / ".pypibox"):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass
    return total


class Server:
    """``python -m pypibox`` on a free port over ``packages``."""

    def __init__(self, workdir: Path, packages: Path, htpasswd: Path, name: str) -> None:
        self.port = servers.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        env = servers.clean_env(PYPI_HOST="127.0.0.1", PYPI_PORT=str(self.port),
                                PYPI_PACKAGES_DIR=str(packages), PYPI_HTPASSWD=str(htpasswd),
                                PYPI_FALLBACK="off", PYTHONPATH=str(ROOT))
        python = ROOT / ".venv" / "bin" / "python"
        with open(self.log, "ab") as handle:
            self.proc = subprocess.Popen([str(python if python.exists() else sys.executable),
                                          "-m", "pypibox"], cwd=workdir, env=env,
                                         stdout=handle, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()

    def wait(self, ok: Any, timeout: float) -> float:
        """Seconds from start until ``ok(url)``."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log.read_text()[-2000:]}")
            if ok(self.url):
                return time.monotonic() - self.started
            time.sleep(0.02)
        raise RuntimeError(f"not ready after {timeout:g} s:\n{self.log.read_text()[-2000:]}")

    def rss(self) -> int:
        return servers.tree_rss(self.proc.pid)

    def pss(self) -> int:
        """Proportional set size of the process tree: shared pages (the workers are forks
        of the master) counted once, not once per process as in the RSS sum."""
        total, todo = 0, [self.proc.pid]
        children = servers._children()
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            try:
                with open(f"/proc/{pid}/smaps_rollup") as handle:
                    for line in handle:
                        if line.startswith("Pss:"):
                            total += int(line.split()[1]) * 1024
                            break
            except OSError:
                pass
        return total

    def stop(self) -> None:
        servers.Running("pypibox", self.proc, self.url, self.log).stop()


def _health(url: str) -> bool:
    return _get(f"{url}/health", timeout=5)[0] == 200


def measure(files: int, workdir: Path, htpasswd: Path, credentials: str,
            seconds: float) -> dict[str, Any]:
    """Every figure of one tree size."""
    packages = tree(files)
    out: dict[str, Any] = {"files": files}
    for path in packages.glob("uploaded*"):
        path.unlink()  # a previous, interrupted run's uploads
    shutil.rmtree(packages / ".pypibox", ignore_errors=True)

    # Empty state: the tree is listed, then read in the background.
    srv = Server(workdir, packages, htpasswd, f"empty-{files}")
    try:
        out["empty_health_s"] = srv.wait(_health, 600)
        out["empty_first_answer_s"] = srv.wait(_target_ok, 600)
        deadline = time.monotonic() + 3600
        while (unread(packages) or 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        out["empty_all_read_s"] = time.monotonic() - srv.started
    finally:
        srv.stop()

    # Warm state: a restart.
    srv = Server(workdir, packages, htpasswd, f"warm-{files}")
    other = None
    try:
        out["warm_health_s"] = srv.wait(_health, 600)
        out["warm_first_answer_s"] = srv.wait(_target_ok, 600)
        # The maintainer compares the tree with the state in the background; the figures
        # below are of the steady state after it.
        out["warm_compared_s"] = srv.wait(
            lambda _url: "the index compared" in srv.log.read_text(errors="replace"), 1200)
        rng = random.Random(files)
        firsts = []
        for _ in range(20):  # projects no worker has been asked for yet
            name = project_name(rng.randrange(files // PER_PROJECT - 1))
            status, _body, took = _get(f"{srv.url}/simple/{name}/", {"Accept": JSON_TYPE})
            assert status == 200, (name, status)
            firsts.append(took)
        out["project_first_ms"] = statistics.median(firsts) * 1000
        wrk.run(f"{srv.url}/simple/{TARGET}/", 1)
        res = wrk.run(f"{srv.url}/simple/{TARGET}/", seconds)
        out["project_warm_rps"], out["project_warm_p50_ms"] = res.rps, res.p50_ms
        out["project_warm_errors"] = res.errors
        for key, path in (("simple", "/simple/"), ("packages", "/packages/")):
            status, body, first = _get(srv.url + path)
            assert status == 200, (path, status)
            again = []
            for _ in range(6):  # both workers have it rendered after a few
                status, _b, took = _get(srv.url + path)
                assert status == 200, (path, status)
                again.append(took)
            out[f"{key}_first_ms"], out[f"{key}_again_ms"] = first * 1000, min(again) * 1000
            out[f"{key}_bytes"] = len(body)

        other = Server(workdir, packages, htpasswd, f"other-{files}")
        other.wait(_target_ok, 600)
        uploads = clients_files(workdir)
        # The first upload a worker sees checks the password (bcrypt, cost 12): not counted.
        for path in uploads[-6:]:  # a new connection each: the kernel spreads them
            clients.upload(srv.url, [path], credentials, connections=1)
        uploads = uploads[:-6]
        res_up = clients.upload(srv.url, uploads[:UPLOADS], credentials, connections=1)
        out["upload_p50_ms"], out["upload_p99_ms"] = res_up.p50_ms, res_up.p99_ms
        out["upload_errors"] = res_up.errors
        seen = []
        for path in uploads[UPLOADS:]:
            res_one = clients.upload(srv.url, [path], credentials, connections=1)
            assert res_one.errors == 0, res_one.note
            start = time.perf_counter()
            project = path.name.split("-")[0].replace("_", "-")
            while _get(f"{other.url}/simple/{project}/", timeout=10)[0] != 200:
                if time.perf_counter() - start > 10:
                    break
                time.sleep(0.001)
            seen.append(time.perf_counter() - start)
        out["other_sees_upload_ms"] = statistics.median(seen) * 1000
        out["other_sees_upload_max_ms"] = max(seen) * 1000
        out["rss_mib"] = srv.rss() / (1 << 20)
        out["pss_mib"] = srv.pss() / (1 << 20)
        out["rss_other_mib"] = other.rss() / (1 << 20)
        out["state_mib"] = _state_bytes(packages) / (1 << 20)
    finally:
        for s in (srv, other):
            if s is not None:
                s.stop()
        for path in packages.glob("uploaded*"):
            path.unlink()
    return out


def clients_files(workdir: Path) -> list[Path]:
    dest = workdir / "upload-src"
    if not dest.exists():
        dest.mkdir()
        for i in range(UPLOADS + 16):
            make_wheel(dest, f"uploaded{i:04d}", "1.0")
    return sorted(dest.glob("*.whl"))


ROWS = [
    ("start to /health, empty state", "empty_health_s", "{:.1f} s"),
    ("start to first answer (project page), empty state", "empty_first_answer_s", "{:.1f} s"),
    ("start until every file is read, empty state", "empty_all_read_s", "{:.0f} s"),
    ("start to /health, warm state", "warm_health_s", "{:.1f} s"),
    ("start to first answer (project page), warm state", "warm_first_answer_s", "{:.1f} s"),
    ("start until the tree is compared with the state (background), warm", "warm_compared_s",
     "{:.1f} s"),
    ("first /simple/<project>/ (not cached), median of 20", "project_first_ms", "{:.1f} ms"),
    ("warm /simple/<project>/, req/s (wrk -c16)", "project_warm_rps", "{:,.0f}"),
    ("warm /simple/<project>/, p50", "project_warm_p50_ms", "{:.2f} ms"),
    ("/simple/ (all projects), first", "simple_first_ms", "{:,.0f} ms"),
    ("/simple/, again (cached page, best of 6)", "simple_again_ms", "{:,.1f} ms"),
    ("/simple/ size", "simple_bytes", "{:,} bytes"),
    ("/packages/ (first page of 20,000), first", "packages_first_ms", "{:,.0f} ms"),
    ("/packages/, again (best of 6)", "packages_again_ms", "{:,.1f} ms"),
    (f"upload latency p50 ({UPLOADS} uploads, one at a time)", "upload_p50_ms", "{:.1f} ms"),
    ("upload latency p99", "upload_p99_ms", "{:.1f} ms"),
    ("a second server on the directory lists the upload, median", "other_sees_upload_ms",
     "{:.1f} ms"),
    ("... slowest of 10", "other_sees_upload_max_ms", "{:.1f} ms"),
    ("resident memory, whole server (master + 2 workers), RSS sum", "rss_mib", "{:.0f} MiB"),
    ("... proportional (PSS: shared pages counted once)", "pss_mib", "{:.0f} MiB"),
    ("state on disk (.pypibox/)", "state_mib", "{:.0f} MiB"),
]


def table(results: list[dict[str, Any]]) -> str:
    """The scaling figures, one column per size."""
    head = "| figure | " + " | ".join(f"{r['files']:,} files" for r in results) + " |\n"
    head += "| --- |" + " ---: |" * len(results) + "\n"
    lines = []
    for label, key, fmt in ROWS:
        cells = []
        for r in results:
            value = r.get(key)
            cells.append("–" if value is None else fmt.format(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def run(sizes: list[int], base: Path, htpasswd: Path, credentials: str,
        seconds: float) -> tuple[list[dict[str, Any]], str]:
    """Measure each size; the results and their table."""
    results = []
    for files in sizes:
        workdir = base / f"scaling-{files}"
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"scaling: {files:,} files", flush=True)
        try:
            results.append(measure(files, workdir, htpasswd, credentials, seconds))
        except (RuntimeError, AssertionError, OSError) as exc:
            results.append({"files": files, "note": f"{type(exc).__name__}: {exc}"[:400]})
        print(f"scaling: {json.dumps(results[-1], default=str)}", flush=True)
    return results, table(results)
