"""``make bench``: pypibox against nginx and the stock pypiserver image setup, on 127.0.0.1.

Usage: .venv/bin/python bench/run.py [--rounds 3] [--duration 6] [--warmup 2] [--quick]
       .venv/bin/python bench/run.py --only scaling [--scale 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

import bcrypt  # noqa: E402

from bench import cache, clients, deps, report, scaling, servers, trees, wrk  # noqa: E402
from bench.workloads import SCALE_SIZES, Workload, all_workloads, check  # noqa: E402

RESULTS = servers.BENCH / "results"
USER = "bench"
BCRYPT_COST = 12
PIP_PACKAGES = 20


def machine() -> dict[str, Any]:
    """nproc, CPU model, RAM and load: the noise this run had."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        mem = 0
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gib": round(mem / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_start": os.getloadavg()}


class Bench:
    """Trees, credentials and per-round results of one benchmark run."""

    def __init__(self, args: argparse.Namespace, base: Path) -> None:
        self.args, self.base = args, base
        self.password = os.urandom(9).hex()
        self.credentials = servers.basic(USER, self.password)
        self.rounds: report.Rounds = {}
        self.workloads = [w for w in all_workloads() if self._wanted(w)]

    def _wanted(self, wl: Workload) -> bool:
        return not self.args.only or any(wl.key.startswith(k) for k in self.args.only.split(",")
                                         if k != "scaling")

    def prepare(self) -> None:
        """Generate the trees (real files), nginx's static pages and the htpasswd file."""
        t0 = time.monotonic()
        self.htpasswd = self.base / "htpasswd"
        digest = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
        self.htpasswd.write_text(f"{USER}:{digest}\n")
        self.main = trees.main_tree(self.base / "main")
        self.static = {"main": trees.static_index(self.main, self.base / "main" / "static")}
        self.sizes = {role: (self.main.packages / self.main.names[role]).stat().st_size
                      for role in ("wheel", "sdist")}
        self.scale = {}
        for n in SCALE_SIZES:
            if any(w.phase == f"scale-{n}" for w in self.workloads):
                tree = trees.scaling_tree(self.base / f"scale-{n}", n)
                self.scale[n] = tree
                self.static[f"scale-{n}"] = trees.static_index(
                    tree, self.base / f"scale-{n}" / "static")
        self.uploads = trees.upload_files(self.base / "upload-src", self.args.uploads)
        print(f"bench: trees ready in {time.monotonic() - t0:.1f}s under {self.base} "
              f"({self.main.files} files in the main tree)", flush=True)

    def _record(self, wl: Workload, server: str, fig: dict[str, Any]) -> None:
        self.rounds.setdefault(wl.key, {}).setdefault(server, []).append(fig)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in fig.items() if v is not None)
        print(f"  {wl.key:<13} {server:<8} {shown}", flush=True)

    def _start(self, server: str, phase: str, workdir: Path) -> servers.Running:
        if phase.startswith("scale-"):
            tree = self.scale[int(phase.split("-")[1])]
        elif phase == "upload":
            tree = trees.Tree(workdir / "packages", 0, 0)
            tree.packages.mkdir(parents=True)
        else:
            tree = self.main
        return servers.STARTERS[server](
            workdir=workdir, packages=tree.packages,
            static=self.static.get(phase, self.static["main"]), htpasswd=self.htpasswd,
            auth=phase == "auth", stock_venv=self.stock_venv, credentials=self.credentials)

    def _measure(self, srv: servers.Running, wl: Workload) -> dict[str, Any]:
        scaled = wl.phase.startswith("scale-")
        names = self.scale[int(wl.phase[6:])].names if scaled else self.main.names
        headers = {}
        if wl.auth:
            headers["Authorization"] = self.credentials
        if wl.accept:
            headers["Accept"] = wl.accept
        if wl.kind == "pip":
            cpu0 = servers.tree_cpu(srv.proc.pid)
            with servers.PeakRss(srv.proc.pid) as mem:
                res = clients.pip_download(self.python, srv.url + "/simple/",
                                           trees.small_projects(PIP_PACKAGES), self.base)
            cpu = servers.tree_cpu(srv.proc.pid) - cpu0
            return {"rps": res.rate, "seconds": res.seconds, "errors": res.errors, "rss": mem.peak,
                    "cpu_us": cpu / PIP_PACKAGES * 1e6 if cpu > 0 else None,  # below a clock tick
                    "note": res.note or None}
        if wl.kind == "upload":
            cpu0 = servers.tree_cpu(srv.proc.pid)
            with servers.PeakRss(srv.proc.pid) as mem:
                res = clients.upload(srv.url, self.uploads, self.credentials,
                                     self.args.upload_conns)
            cpu = servers.tree_cpu(srv.proc.pid) - cpu0
            return {"rps": res.rate, "seconds": res.seconds, "p50_ms": res.p50_ms,
                    "p99_ms": res.p99_ms, "errors": res.errors, "rss": mem.peak,
                    "cpu_us": cpu / len(self.uploads) * 1e6, "note": res.note or None}
        url = srv.url + wl.path(names)
        why = check(url, wl, headers, self.sizes)
        if why:
            return {"note": why}
        with servers.PeakRss(srv.proc.pid) as mem:
            if self.args.warmup > 0:
                wrk.run(url, self.args.warmup, headers=headers, connections=self.args.connections)
                check(url, wl, headers, self.sizes, timeout=300)  # waits out the warm-up's backlog
            cpu0 = servers.tree_cpu(srv.proc.pid)
            res = wrk.run(url, self.args.duration, headers=headers,
                          connections=self.args.connections)
            cpu = servers.tree_cpu(srv.proc.pid) - cpu0
        if res.requests == 0:
            return {"rps": 0.0, "errors": res.errors, "rss": mem.peak,
                    "warn": f"no response completed in {self.args.duration:g} s"}
        return {"rps": res.rps, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms, "errors": res.errors,
                "rss": mem.peak, "requests": res.requests, "cpu_us": cpu / res.requests * 1e6}

    def run_round(self, number: int) -> None:
        order = list(servers.SERVERS[number % 3:] + servers.SERVERS[:number % 3])
        phases = list(dict.fromkeys(w.phase for w in self.workloads))
        print(f"bench: round {number + 1}/{self.args.rounds} (order: {', '.join(order)})",
              flush=True)
        for server in order:
            if server not in self.args.servers.split(","):
                continue
            for phase in phases:
                todo = [w for w in self.workloads if w.phase == phase and server in w.servers]
                if not todo:
                    continue
                workdir = Path(tempfile.mkdtemp(prefix=f"{server}-{phase}-", dir=self.base))
                try:
                    srv = self._start(server, phase, workdir)
                except RuntimeError as exc:
                    for wl in todo:
                        self._record(wl, server,
                                     {"note": f"server did not start: {str(exc)[:200]}"})
                    continue
                try:
                    for wl in todo:
                        try:
                            fig = self._measure(srv, wl)
                        except (RuntimeError, ValueError, OSError) as exc:
                            fig = {"note": f"{type(exc).__name__}: {str(exc)[:200]}"}
                        self._record(wl, server, fig)
                finally:
                    srv.stop()
                    if phase == "upload":
                        shutil.rmtree(workdir / "packages", ignore_errors=True)

    def run(self) -> None:
        self.stock_venv = deps.ensure_stock_venv()
        self.python = servers.ROOT / ".venv" / "bin" / "python"
        if not self.python.exists():
            self.python = Path(sys.executable)
        if self.workloads:
            self.prepare()
            for number in range(self.args.rounds):
                self.run_round(number)
        self.cache: cache.CacheBench | None = None
        if self.args.cache_rounds > 0 and (
                not self.args.only or "cache" in self.args.only.split(",")):
            self.cache = cache.CacheBench(self.base, self.args.cache_rounds)
            self.cache.run()


def code_version() -> str:
    """The commit measured, and whether pypibox/ had uncommitted changes in the work tree."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(servers.ROOT), *args], capture_output=True,
                             text=True)
        return out.stdout.strip()

    dirty = git("status", "--porcelain", "--", "pypibox")
    return git("rev-parse", "--short", "HEAD") + (
        " + uncommitted changes in pypibox/" if dirty else "")


def write(bench: Bench, info: dict[str, Any], started: str) -> str:
    """Print the tables and targets; write results/<timestamp>.json and results/latest.md."""
    med = report.medians(bench.rounds)
    report.add_ratios(med, bench.workloads)
    checks = report.targets(med, bench.workloads)
    a = bench.args
    md = (f"# pypibox benchmark, {started}\n\n"
          f"Machine: {info['machine']['nproc']} CPUs ({info['machine']['cpu']}), "
          f"{info['machine']['ram_gib']} GiB RAM; load average at start "
          f"{info['machine']['loadavg_start'][0]:.2f}, "
          f"at end {info['machine']['loadavg_end'][0]:.2f}.\n"
          f"Command: `{info['command']}`; code measured: {info['code']}.\n"
          f"wrk -t2 -c{a.connections}, {a.warmup:g} s warm-up + {a.duration:g} s per figure; "
          f"each figure the median of {a.rounds} rounds, servers interleaved per round.\n"
          f"Versions: {info['versions']['nginx']}; "
          f"{info['versions']['wrk'].split(' Copyright')[0]}; "
          f"stock: {info['versions']['stock']}.\n"
          "In cells, `(0.50x n, 12x s)` is the figure divided by nginx's and by stock "
          "pypiserver's (for auth and JSON rows nginx's reference is the plain row without "
          "auth). Peak RSS is the sum over the server's process tree; CPU/req is the CPU time "
          "(user + system) the server's process tree used during the measured load, divided by "
          "the requests served (it moves with the machine's load too). p99 includes the "
          "machine's scheduling noise; nginx's own p99 shows how much.\n\n"
          + report.table(med, bench.workloads))
    record: dict[str, Any] = {}
    if bench.cache is not None:
        md += "\n" + bench.cache.table()
        checks = checks + bench.cache.targets()
        record = bench.cache.record()
    md += "\nTargets (pypibox):\n\n" + report.targets_text(checks)
    print("\n" + md)
    RESULTS.mkdir(exist_ok=True)
    stamp = started.replace(":", "").replace("-", "")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(
        {**info, "rounds": bench.rounds, "medians": med, "targets": checks, "cache": record},
        indent=1, default=str))
    (RESULTS / "latest.md").write_text(md)
    print(f"bench: wrote {RESULTS / (stamp + '.json')} and {RESULTS / 'latest.md'}")
    return md


def run_scaling(args: argparse.Namespace, base: Path, info: dict[str, Any], started: str) -> None:
    """The scaling section (bench/scaling.py): its table, results/scaling-<time>.{md,json}."""
    password = os.urandom(9).hex()
    htpasswd = base / "htpasswd-scaling"
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
    htpasswd.write_text(f"{USER}:{digest}\n")
    sizes = sorted(set(scaling.SIZES) | set(args.scale))
    results, table = scaling.run(sizes, base, htpasswd, servers.basic(USER, password),
                                 args.duration)
    machine_now = machine()
    md = (f"# pypibox scaling, {started}\n\n"
          f"Machine: {machine_now['nproc']} CPUs ({machine_now['cpu']}), "
          f"{machine_now['ram_gib']} GiB RAM; load average at end "
          f"{os.getloadavg()[0]:.2f}. Code measured: {info['code']}. "
          f"Trees cached in {scaling.CACHE}; default settings (2 workers).\n\n" + table)
    print("\n" + md)
    RESULTS.mkdir(exist_ok=True)
    stamp = started.replace(":", "").replace("-", "")
    (RESULTS / f"scaling-{stamp}.json").write_text(json.dumps(results, indent=1, default=str))
    (RESULTS / f"scaling-{stamp}.md").write_text(md)
    print(f"bench: wrote {RESULTS / ('scaling-' + stamp + '.md')}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds; each figure is their median")
    p.add_argument("--duration", type=float, default=6, help="seconds of load per figure")
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up load first")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (2 threads)")
    p.add_argument("--uploads", type=int, default=200, help="files uploaded per server and round")
    p.add_argument("--upload-conns", type=int, default=4, help="concurrent upload connections")
    p.add_argument("--servers", default=",".join(servers.SERVERS), help="comma list to run")
    p.add_argument("--only", default="", help="comma list of workload key prefixes")
    p.add_argument("--cache-rounds", type=int, default=None,
                   help="rounds of the cache section (default: --rounds; 0 skips it)")
    p.add_argument("--quick", action="store_true",
                   help="1 round, 2 s load, 1 s warm-up, 50 uploads")
    p.add_argument("--keep", action="store_true", help="keep the temporary trees and logs")
    p.add_argument("--scale", type=int, action="append", default=[],
                   help="also run the scaling section at this many files (e.g. 1000000)")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.uploads = 1, 2, 1, 50
    if args.cache_rounds is None:
        args.cache_rounds = args.rounds
    deps.ensure_tools()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    base = Path(tempfile.mkdtemp(prefix="pypibox-bench-"))
    base.chmod(0o755)  # nginx's worker runs as an unprivileged user when started as root
    bench = Bench(args, base)
    info: dict[str, Any] = {"started": started, "machine": machine(), "args": vars(args),
                            "command": " ".join(["bench/run.py", *(argv or sys.argv[1:])]),
                            "code": code_version()}
    keys = [k for k in args.only.split(",") if k]
    try:
        if not keys or any(k != "scaling" for k in keys):
            bench.run()
            info["versions"] = deps.versions(bench.stock_venv)
            info["machine"]["loadavg_end"] = os.getloadavg()
            write(bench, info, started)
        if not keys or "scaling" in keys:
            run_scaling(args, base, info, started)
    finally:
        if args.keep:
            print(f"bench: kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
