"""Medians over rounds, ratios to nginx and stock, the targets, and the markdown table."""

from __future__ import annotations

import statistics
from typing import Any

from .workloads import Workload

MB = 1024 * 1024
FIELDS = ("rps", "p50_ms", "p99_ms", "errors", "rss", "seconds", "cpu_us")
Rounds = dict[str, dict[str, list[dict[str, Any]]]]   # workload -> server -> per-round figures


def medians(rounds: Rounds) -> dict[str, dict[str, dict[str, Any]]]:
    """Each figure the median of its rounds; a note if any round failed."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key, per_server in rounds.items():
        for server, runs in per_server.items():
            ok = [r for r in runs if not r.get("note")]
            fig: dict[str, Any] = {"rounds": len(ok)}
            for name in FIELDS:
                vals = [r[name] for r in ok if r.get(name) is not None]
                fig[name] = statistics.median(vals) if vals else None
            notes = sorted({r.get("note") or r["warn"] for r in runs
                            if r.get("note") or r.get("warn")})
            if notes:
                fig["note"] = "; ".join(notes)
            out.setdefault(key, {})[server] = fig
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def add_ratios(med: dict[str, dict[str, dict[str, Any]]], workloads: list[Workload]) -> None:
    """Every figure of stock and pypibox as a ratio to nginx (its reference) and to stock."""
    for wl in workloads:
        row = med.get(wl.key, {})
        nginx = med.get(wl.ref, {}).get("nginx", {})
        stock = row.get("stock", {})
        for server, fig in row.items():
            for name in ("rps", "p50_ms", "p99_ms", "rss", "seconds", "cpu_us"):
                if server != "nginx":
                    fig[f"{name}_vs_nginx"] = ratio(fig.get(name), nginx.get(name))
                if server == "pypibox":
                    fig[f"{name}_vs_stock"] = ratio(fig.get(name), stock.get(name))


def _fig(med: dict, key: str, server: str, name: str) -> float | None:
    return med.get(key, {}).get(server, {}).get(name)


def targets(med: dict[str, dict[str, dict[str, Any]]], workloads: list[Workload]) -> list[dict]:
    """The targets of the brief, each PASS or MISS (or n/a when not measured)."""
    out: list[dict] = []

    def add(name: str, value: float | None, need: float, higher: bool, unit: str = "") -> None:
        if value is None:
            out.append({"target": name, "status": "n/a", "value": None, "need": need})
            return
        ok = value >= need if higher else value < need
        out.append({"target": name, "status": "PASS" if ok else "MISS", "value": value,
                    "need": need, "text": f"{value:.2f}{unit} (need {'≥' if higher else '<'} "
                                          f"{need:g}{unit})"})

    for key, need in (("project", 10), ("simple", 3), ("wheel", 3), ("sdist", 2)):
        add(f"{key}: req/s vs stock", _fig(med, key, "pypibox", "rps_vs_stock"), need, True, "x")
    for wl in workloads:
        if "pypibox" not in wl.servers or wl.kind == "upload":
            continue
        add(f"{wl.key}: req/s vs nginx{' (' + wl.ref + ')' if wl.nginx_ref else ''}",
            _fig(med, wl.key, "pypibox", "rps_vs_nginx"), 0.25, True, "x")
    for wl in workloads:
        if wl.index and "pypibox" in wl.servers:
            add(f"{wl.key}: p99 at 16 connections", _fig(med, wl.key, "pypibox", "p99_ms"),
                50, False, " ms")
    for wl in workloads:
        if wl.auth:
            add(f"{wl.key}: req/s vs own unauthenticated",
                ratio(_fig(med, wl.key, "pypibox", "rps"), _fig(med, wl.ref, "pypibox", "rps")),
                0.8, True, "x")
    add("scaling: p50 at 10,000 files / at 100 files",
        ratio(_fig(med, "scale-10000", "pypibox", "p50_ms"),
              _fig(med, "scale-100", "pypibox", "p50_ms")),
        2.0001, False, "x")
    rss = [f.get("rss") for row in med.values() for s, f in row.items()
           if s == "pypibox" and f.get("rss") is not None]
    add("memory: peak RSS of pypibox (all workloads)", max(rss) / MB if rss else None, 150,
        False, " MB")
    return out


def _num(v: float | None, unit: str = "", digits: int = 0) -> str:
    if v is None:
        return "n/a"
    if v == 0 or (digits == 0 and abs(v) >= 10):
        return f"{v:,.0f}{unit}"
    return f"{v:,.{max(digits, 1 if abs(v) >= 1 else 2)}f}{unit}"


def _int(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def _x(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}x" if v < 10 else f"{v:.0f}x"


def _cell(fig: dict, name: str, server: str, text: str) -> str:
    if server == "nginx" or fig.get(name) is None:
        return text
    parts = [f"{_x(fig.get(f'{name}_vs_nginx'))} n"]
    if server == "pypibox":
        parts.append(f"{_x(fig.get(f'{name}_vs_stock'))} s")
    return f"{text} ({', '.join(parts)})"


def table(med: dict[str, dict[str, dict[str, Any]]], workloads: list[Workload]) -> str:
    """Markdown tables: the HTTP workloads, then the end-to-end clients."""
    head = ("| workload | server | req/s | p50 | p99 | errors | peak RSS | CPU/req |\n"
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    lines: list[str] = []
    e2e: list[str] = []
    for wl in workloads:
        first = True
        for server in ("nginx", "stock", "pypibox"):
            fig = med.get(wl.key, {}).get(server)
            name = server
            if fig is None and server == "nginx" and wl.nginx_ref:
                fig, name = med.get(wl.ref, {}).get("nginx"), f"nginx (ref: {wl.ref})"
            if fig is None:
                continue
            label = wl.label if first else ""
            first = False
            note = f" ⚠ {fig['note']}" if fig.get("note") else ""
            mb = fig["rss"] / MB if fig.get("rss") else None
            rss = _cell(fig, "rss", server, _num(mb, " MB", 1))
            cpu = _cell(fig, "cpu_us", server, _num(fig.get("cpu_us"), " µs"))
            p50 = _cell(fig, "p50_ms", server, _num(fig["p50_ms"], " ms", 2))
            p99 = _cell(fig, "p99_ms", server, _num(fig["p99_ms"], " ms", 2))
            if wl.kind == "wrk":
                rps = _cell(fig, "rps", server, _num(fig["rps"]))
                lines.append(f"| {label} | {name}{note} | {rps} | "
                             f"{p50} | {p99} | {_int(fig['errors'])} | {rss} | {cpu} |")
            else:
                e2e.append(f"| {label} | {name}{note} | "
                           f"{_cell(fig, 'seconds', server, _num(fig['seconds'], ' s', 2))} | "
                           f"{_cell(fig, 'rps', server, _num(fig['rps'], '/s', 1))} | "
                           f"{p50} | {p99} | {_int(fig['errors'])} | {rss} | {cpu} |")
    out = head + "\n".join(lines) + "\n"
    if e2e:
        out += ("\n| end to end | server | wall time | rate | p50 | p99 | errors | peak RSS "
                "| CPU/item |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
                + "\n".join(e2e) + "\n")
    return out


def targets_text(results: list[dict]) -> str:
    return "\n".join(f"- {r['status']}: {r['target']}"
                     + (f" = {r['text']}" if r.get("text") else "") for r in results) + "\n"
