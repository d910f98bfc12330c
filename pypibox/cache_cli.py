"""``python -m pypibox cache stats|prune|forget PROJECT``: look after the upstream cache."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .settings import Settings, _size
from .upstream import Upstream, UpstreamError


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp)) if stamp else "never"


def _mib(count: int) -> str:
    return f"{count / (1 << 20):,.1f} MiB"


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one cache command; the exit code."""
    up = Upstream(settings)
    if args.cache_cmd == "stats":
        usage = up.stats()
        if args.json:
            print(json.dumps({**usage.__dict__, "root": up.store.root}))
            return 0
        share = usage.bytes / usage.max_bytes * 100 if usage.max_bytes else 0.0
        print(f"{up.store.root}: {usage.projects} projects, {usage.files} files, "
              f"{_mib(usage.bytes)} of {_mib(usage.max_bytes)} ({share:.0f}%)")
        print(f"least recently used: {_when(usage.oldest_use)}; "
              f"most recently used: {_when(usage.newest_use)}")
        return 0
    if args.cache_cmd == "prune":
        limit = None
        if args.max_size:
            limit = _size("--max-size", args.max_size)
        removed, freed, leftovers = up.prune(limit)
        print(f"evicted {removed} files ({_mib(freed)}); removed {leftovers} leftovers of "
              "interrupted downloads and unused locks")
        return 0
    try:
        removed, freed = up.forget(args.project)
    except UpstreamError as exc:
        print(f"pypibox: error: {args.project!r}: {exc.reason}", file=sys.stderr)
        return 1
    print(f"forgot {args.project}: removed {removed} files ({_mib(freed)}) and its page")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse.ArgumentParser:
    """The ``cache`` subcommand and its own subcommands."""
    sp = sub.add_parser("cache", help="the cache of the upstream index: stats, prune, forget")
    cache = sp.add_subparsers(dest="cache_cmd", required=True)
    stats = cache.add_parser("stats", help="what the cache holds")
    stats.add_argument("--json", action="store_true", help="one JSON object")
    prune = cache.add_parser("prune", help="evict least recently used files down to the limit")
    prune.add_argument("--max-size", help="evict down to this size instead of "
                                          "PYPI_CACHE_MAX_SIZE (e.g. 2G)")
    forget = cache.add_parser("forget", help="remove a project's page and files from the cache")
    forget.add_argument("project")
    return sp
