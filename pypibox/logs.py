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
#: gunicorn's access log without ``%(u)s``: user names never reach the log.
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms "%(a)s"'


def setup(level: str) -> None:
    """Send our logs to stdout at ``level``; pypiserver's own chatter only from warnings on."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("pypiserver").setLevel(max(logging.WARNING, root.level))


def _gunicorn_logger_base() -> type:
    from gunicorn.glogging import Logger

    return Logger


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


class AccessLogger(_gunicorn_logger_base()):  # type: ignore[misc]
    """gunicorn's logger with a cheaper access line in ACCESS_FORMAT's layout.

    gunicorn's own access() builds a dict of every header and environ entry and decodes
    the Authorization header per request; this writes the same fields, nothing else.
    """

    def setup(self, cfg) -> None:  # noqa: ANN001
        """gunicorn's setup, then its error log (``errorlog = "-"``) to stdout like ours."""
        super().setup(cfg)
        self.batch = LineBatch(lambda text: sys.stdout.write(text), lambda: sys.stdout.flush())
        for handler in self.error_log.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)

    def access(self, resp, req, environ, request_time) -> None:  # noqa: ANN001
        if not self.cfg.accesslog:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        millis = request_time.seconds * 1000 + request_time.microseconds // 1000
        line = '%s "%s %s %s" %s %s %sms "%s"\n' % (
            environ.get("REMOTE_ADDR", "-"), environ["REQUEST_METHOD"], environ["RAW_URI"],
            environ["SERVER_PROTOCOL"], status, "-" if sent is None else sent, millis,
            environ.get("HTTP_USER_AGENT", "-"))
        if self.cfg.accesslog == "-":
            self.batch.add(line)
        else:
            self.access_log.info("%s", line[:-1])
