"""Soak test: many connections mixing index pages, downloads and uploads against a local server.

Starts ``python -m pypibox`` on 127.0.0.1 with temporary directories, runs 32 keep-alive
connections for ``--duration`` seconds, then checks that every acknowledged upload is listed
with the right sha256. Pass: no 5xx, no failed connection, all uploads there, RSS of the
server's processes grown by at most 20% between the first and the last 30 s.
Run: ``make soak`` (``DURATION=30`` to shorten).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pkgfactory import make_wheel  # noqa: E402

from pypibox import htpasswd  # noqa: E402

USER, PASSWORD = "soak", "soak-Pa55word"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BOUNDARY = "soak-boundary-0b1d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_rss(pgid: int) -> int:
    """Resident memory in bytes of every process in the server's process group."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


def upload_body(filename: str, content: bytes) -> bytes:
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
    return head + content + f"\r\n--{BOUNDARY}--\r\n".encode()


class Stats:
    """Counters shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.failed_connections = 0
        self.bad_downloads = 0
        self.errors: list[str] = []
        self.uploaded: dict[str, tuple[str, str]] = {}  # filename -> (project, sha256)

    def record(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            self.status[(kind, status)] += 1
            self.latency[kind].append(seconds)

    def fail(self, message: str) -> None:
        with self.lock:
            self.failed_connections += 1
            if len(self.errors) < 10:
                self.errors.append(message)


def upload(conn: http.client.HTTPConnection, project: str, size: int, stats: Stats,
           work: Path) -> None:
    """Upload a new wheel of ``project`` with ``size`` random bytes; remember it if acknowledged."""
    start = time.perf_counter()
    wheel = make_wheel(work / project, project, "1.0", payload=os.urandom(size))
    data = wheel.read_bytes()
    wheel.unlink()
    conn.request("POST", "/", body=upload_body(wheel.name, data), headers={
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Authorization": AUTH})
    resp = conn.getresponse()
    resp.read()
    stats.record("upload", resp.status, time.perf_counter() - start)
    if resp.status == 200:
        with stats.lock:
            stats.uploaded[wheel.name] = (project, hashlib.sha256(data).hexdigest())


def client(n: int, port: int, deadline: float, stats: Stats, work: Path) -> None:
    """One keep-alive connection issuing a random mix of requests until the deadline."""
    rng = random.Random(n)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    count = 0
    while time.monotonic() < deadline:
        roll = rng.random()
        with stats.lock:
            known = list(stats.uploaded.items())
        try:
            start = time.perf_counter()
            if roll < 0.15 or not known:
                count += 1
                upload(conn, f"soak-{n}-{count}", rng.randint(1_000, 200_000), stats, work)
            elif roll < 0.55:
                filename, (_project, digest) = rng.choice(known)
                conn.request("GET", f"/packages/{filename}")
                resp = conn.getresponse()
                body = resp.read()
                stats.record("download", resp.status, time.perf_counter() - start)
                if resp.status == 200 and hashlib.sha256(body).hexdigest() != digest:
                    with stats.lock:
                        stats.bad_downloads += 1
            else:
                path = "/simple/" if roll < 0.65 else f"/simple/{rng.choice(known)[1][0]}/"
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                stats.record("index", resp.status, time.perf_counter() - start)
        except (OSError, http.client.HTTPException) as exc:
            stats.fail(f"client {n}: {type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.close()


def verify(port: int, stats: Stats) -> list[str]:
    """Every acknowledged upload is listed with its sha256; return the problems."""
    problems = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for filename, (project, digest) in sorted(stats.uploaded.items()):
        conn.request("GET", f"/simple/{project}/")
        resp = conn.getresponse()
        page = resp.read().decode("utf-8", "replace")
        found = re.search(re.escape(filename) + r"#sha256=([0-9a-f]{64})", page)
        if resp.status != 200 or not found or found.group(1) != digest:
            problems.append(f"{filename}: not listed with sha256 {digest[:12]}... ({resp.status})")
    conn.close()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seed-packages", type=int, default=20)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pypibox-soak-"))
    packages, auth, work = tmp / "packages", tmp / "auth", tmp / "work"
    for d in (packages, auth, work):
        d.mkdir()
    htpasswd.set_user(auth / "htpasswd", USER, PASSWORD, 5)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYPI_", "PIP_"))}
    env.update(PYPI_HOST="127.0.0.1", PYPI_PORT=str(port), PYPI_PACKAGES_DIR=str(packages),
               PYPI_HTPASSWD=str(auth / "htpasswd"), PYPI_FALLBACK="off",
               PYPI_LOG_LEVEL="warning", PYTHONPATH=str(ROOT))
    for name in ("PYPI_WORKERS", "PYPI_THREADS"):
        if name in os.environ:
            env[name] = os.environ[name]
    log = open(tmp / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "pypibox"], env=env, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(300):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        else:
            print(f"server did not start; log in {tmp / 'server.log'}")
            return 2

        stats = Stats()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(args.seed_packages):
            upload(conn, f"seed-{i}", 50_000, stats, work)
        conn.close()
        print(f"soak: {args.connections} connections for {args.duration:.0f} s against "
              f"http://127.0.0.1:{port}/ ({len(stats.uploaded)} seed packages)", flush=True)

        samples: list[tuple[float, int]] = []
        begin = time.monotonic()
        deadline = begin + args.duration
        threads = [threading.Thread(target=client, args=(n, port, deadline, stats, work))
                   for n in range(args.connections)]
        for t in threads:
            t.start()
        while time.monotonic() < deadline:
            samples.append((time.monotonic() - begin, group_rss(server.pid)))
            time.sleep(1.0)
        for t in threads:
            t.join()
        elapsed = time.monotonic() - begin
        samples.append((elapsed, group_rss(server.pid)))
        problems = verify(port, stats)
        if server.poll() is not None:
            problems.append(f"the server exited with {server.returncode}")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
        log.close()

    window = min(30.0, elapsed / 3)
    first = [r for t, r in samples if t <= window]
    last = [r for t, r in samples if t >= elapsed - window]
    rss_first, rss_last = statistics.mean(first), statistics.mean(last)
    growth = rss_last / rss_first - 1

    total = sum(stats.status.values())
    five = sum(c for (_k, s), c in stats.status.items() if s >= 500)
    print(f"requests: {total} in {elapsed:.1f} s ({total / elapsed:.0f}/s)")
    for kind in ("index", "download", "upload"):
        lat = sorted(stats.latency.get(kind, [0.0]))
        codes = ", ".join(f"{s}: {c}" for (k, s), c in sorted(stats.status.items()) if k == kind)
        count = len(stats.latency.get(kind, []))
        print(f"  {kind:<9} {count:>7}  p50 {lat[len(lat) // 2] * 1000:7.1f} ms"
              f"  p99 {lat[int(len(lat) * 0.99)] * 1000:7.1f} ms  statuses {{{codes}}}")
    print(f"5xx responses: {five}")
    print(f"failed connections: {stats.failed_connections}")
    print(f"downloads with a wrong sha256: {stats.bad_downloads}")
    print(f"uploads acknowledged: {len(stats.uploaded)}, not listed with the right sha256: "
          f"{len(problems)}")
    print(f"server RSS: first {window:.0f} s {rss_first / 2**20:.1f} MiB, last {window:.0f} s "
          f"{rss_last / 2**20:.1f} MiB, growth {growth * 100:+.1f}% (limit +20%)")
    for line in stats.errors + problems[:10]:
        print(f"  ! {line}")

    failed = (five > 0 or stats.failed_connections > 0 or stats.bad_downloads > 0 or problems
              or growth > 0.20)
    print("SOAK FAILED" if failed else "SOAK PASSED")
    if failed:
        print(f"server log kept in {tmp / 'server.log'}")
    else:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
