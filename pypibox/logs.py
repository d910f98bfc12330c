"""Logging to stdout, with nothing secret in it."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import typing as t
from collections import deque

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: str) -> None:
    """Send our logs to stdout at ``level``; pypiserver's own chatter only from warnings on."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pypiserver").setLevel(max(logging.WARNING, root.level))


class LineBatch:
    """Access lines gathered in memory and written together, at least every ``interval`` s.

    A line that comes after a quiet ``interval`` is written at once; under load, one write
    per batch instead of a locked, flushed write per request. Every line shows within
    ``interval`` seconds, and what is gathered is written at exit.
    """

    def __init__(self, write: t.Callable[[str], t.Any], flush: t.Callable[[], t.Any],
                 interval: float = 0.2, most: int = 512) -> None:
        self._write = write
        self._flush = flush
        self.interval = interval
        self.most = most
        self.lines: deque[str] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = 0
        self._last = 0.0

    def add(self, line: str) -> None:
        """Gather ``line``; write at once if nothing was written for ``interval`` seconds."""
        if self._pid != os.getpid():  # first line in this (forked) process
            self._start()
        self.lines.append(line)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.write_out()
        elif len(self.lines) >= self.most:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.lines = deque()
            self._wake = threading.Event()
            threading.Thread(target=self._run, name="access-log", daemon=True).start()
            atexit.register(self.write_out)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.write_out()

    def write_out(self) -> None:
        """Write every gathered line now."""
        with self._lock:
            pending = self.lines
            lines = [pending.popleft() for _ in range(len(pending))]
            if lines:
                try:
                    self._write("".join(lines))
                    self._flush()
                except (OSError, ValueError):
                    pass  # stdout gone (closed pipe): nothing else to do with an access line


def short_agent(agent: str) -> str:
    """A user agent as client name and version: pip's JSON and the rest are left out."""
    first = agent.split(" ", 1)[0]
    return first[:60] or "-"


class AccessLog:
    """One line per answered request, written in batches to stdout (see LineBatch)."""

    def __init__(self) -> None:
        self.batch = LineBatch(lambda text: sys.stdout.write(text), lambda: sys.stdout.flush())

    def line(self, client: str, method: str, path: str, query: str, version: str,
             status: int, size: int, millis: float, agent: str) -> None:
        """Log a request (printable ASCII only: a path cannot forge a log line)."""
        target = path + ("?" + query if query else "")
        shown = "".join(c if " " < c <= "~" else "?" for c in target[:300])
        self.batch.add(f'{client} "{method[:16]} {shown} HTTP/{version}" {status} {size} '
                       f'{millis:.1f}ms "{short_agent(agent)}"\n')
