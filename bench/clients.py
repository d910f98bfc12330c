"""End-to-end clients: ``pip download`` of named packages, and twine-like uploads."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .servers import clean_env


@dataclass
class ClientResult:
    """Wall time of a client run, per-request latencies and failures."""

    seconds: float
    count: int
    errors: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def pip_download(python: Path, index: str, names: list[str], workdir: Path) -> ClientResult:
    """``pip download --no-deps`` of ``names`` from ``index`` with a fresh cache; wall time."""
    tmp = Path(tempfile.mkdtemp(prefix="pipdl-", dir=workdir))
    dest = tmp / "dest"
    cmd = [str(python), "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--index-url", index, "--cache-dir", str(tmp / "cache"), "-d", str(dest), *names]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=600)
    seconds = time.perf_counter() - start
    got = len(os.listdir(dest)) if dest.is_dir() else 0
    shutil.rmtree(tmp, ignore_errors=True)
    note = "" if out.returncode == 0 else (out.stderr or out.stdout).strip().splitlines()[-1:][0]
    return ClientResult(seconds, got, len(names) - got, note=note)


def _multipart(path: Path, boundary: str) -> bytes:
    """The form twine posts for one file (legacy upload API)."""
    data = path.read_bytes()
    name, version = path.name.split("-")[:2]
    fields = {
        ":action": "file_upload", "protocol_version": "1", "metadata_version": "2.1",
        "name": name, "version": version, "filetype": "bdist_wheel", "pyversion": "py3",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
    }
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{path.name}"'
        f"\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def upload(url: str, files: list[Path], credentials: str, connections: int = 4) -> ClientResult:
    """POST every file as twine does, over ``connections`` keep-alive connections."""
    boundary = "benchboundary" + os.urandom(8).hex()
    bodies = [_multipart(f, boundary) for f in files]
    target = urllib.parse.urlsplit(url)
    queue = list(range(len(bodies)))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def worker() -> None:
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
        while True:
            with lock:
                if not queue:
                    break
                i = queue.pop()
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/", body=bodies[i], headers={
                    "Authorization": credentials,
                    "Content-Type": f"multipart/form-data; boundary={boundary}"})
                resp = conn.getresponse()
                resp.read()
                ok = 200 <= resp.status < 400
                why = f"{resp.status} {resp.reason}"
            except (OSError, http.client.HTTPException) as exc:
                ok, why = False, repr(exc)
                conn.close()
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
            with lock:
                latencies.append((time.perf_counter() - t0) * 1000)
                if not ok:
                    failures.append(why)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None
    return ClientResult(seconds, len(files) - len(failures), len(failures),
                        p50_ms=statistics.median(latencies) if latencies else None, p99_ms=p99,
                        note=failures[0] if failures else "")
