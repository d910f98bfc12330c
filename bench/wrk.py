"""Runs wrk against one URL and reads its report: requests/s, latency percentiles, errors."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class WrkResult:
    """One wrk run: throughput, latency in milliseconds, and failed requests."""

    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int
    socket_errors: int

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + self.socket_errors


def _ms(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def parse(text: str) -> WrkResult:
    """Read wrk's ``--latency`` output."""
    pct = {int(p): _ms(n, u) for p, n, u in
           re.findall(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    total = re.search(r"^\s*(\d+) requests in", text, re.M)
    if not (rps and total and 50 in pct and 99 in pct):
        raise ValueError(f"unexpected wrk output:\n{text}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        rps=float(rps.group(1)), requests=int(total.group(1)),
        p50_ms=pct[50], p99_ms=pct[99],
        non_2xx_3xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0)


def run(url: str, seconds: float, threads: int = 2, connections: int = 16,
        headers: dict[str, str] | None = None, timeout: float = 10) -> WrkResult:
    """``wrk -t2 -c16 -d<seconds>s --latency`` with the given headers."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
           "--latency", f"--timeout={int(timeout)}s"]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse(out.stdout)
