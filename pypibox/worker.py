"""Everything pypibox takes from gunicorn, in one file: the master process and its workers.

gunicorn forks and watches the worker processes (restarts, heartbeats, graceful stops).
Each worker runs our own HTTP server (``httpserver``) in an asyncio event loop. The names
used here are gunicorn's documented extension points (``BaseApplication``, a custom
``worker_class`` built on ``workers.base.Worker``, a custom ``logger_class``) plus a few of
the worker's attributes; ``tests/test_gunicorn_contract.py`` fails with a plain message
when a gunicorn release changes any of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import sys
import typing as t

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from gunicorn.workers import base

from .settings import Settings

if t.TYPE_CHECKING:
    from .accounts import Accounts
    from .app import App

log = logging.getLogger("pypibox.worker")

#: Descriptors a worker keeps for itself (files being sent, sockets, the log, threads).
RESERVED_FDS = 64
#: The gunicorn names pypibox relies on (checked by tests/test_gunicorn_contract.py).
CONTRACT = {
    "gunicorn.app.base.BaseApplication": ("load_config", "load", "run", "cfg"),
    "gunicorn.workers.base.Worker": ("init_process", "init_signals", "run", "notify", "alive",
                                     "sockets", "ppid", "cfg", "wsgi", "log", "load_wsgi"),
    "gunicorn.glogging.Logger": ("setup", "info", "error_log"),
}


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn configured from our settings; each worker builds its own App after fork.

    The accounts are loaded once, before the workers fork: a worker that (re)starts while
    the htpasswd file is broken keeps the last good accounts instead of failing to boot.
    """

    def __init__(self, settings: Settings, accounts: Accounts) -> None:
        self.settings = settings
        self.accounts = accounts
        super().__init__()

    def options(self) -> dict[str, t.Any]:
        """gunicorn settings derived from ours."""
        s = self.settings
        return {
            "bind": [f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}"],
            "workers": s.workers,
            "worker_class": "pypibox.worker.Worker",
            "reuse_port": True,
            "timeout": 120,
            "graceful_timeout": 10,
            "preload_app": False,
            "accesslog": None,
            "errorlog": "-",
            "logger_class": "pypibox.worker.GunicornLogger",
            "loglevel": s.log_level,
            "proc_name": "pypibox",
            "worker_tmp_dir": "/dev/shm" if _writable_dir("/dev/shm") else None,
            "control_socket_disable": True,
        }

    def load_config(self) -> None:
        known = self.cfg.settings
        for key, value in self.options().items():
            if key in known and value is not None:
                self.cfg.set(key, value)
        GunicornLogger.listen_address = f"http://{self.settings.host}:{self.settings.port}"

    def load(self) -> App:
        from . import logs
        from .app import App
        from .routes import build

        logs.setup(self.settings.log_level)
        self.accounts.after_fork()
        return App(self.settings, self.accounts, build(self.settings, self.accounts))


class Worker(base.Worker):  # type: ignore[misc]
    """A gunicorn worker process serving HTTP with our asyncio server."""

    def init_process(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        super().init_process()  # loads the app (self.wsgi), then calls run()

    def init_signals(self) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        self.loop.add_signal_handler(signal.SIGTERM, self._stop)
        self.loop.add_signal_handler(signal.SIGQUIT, self._stop)
        self.loop.add_signal_handler(signal.SIGINT, self._stop)
        self.loop.add_signal_handler(signal.SIGUSR1, lambda: None)

    def _stop(self) -> None:
        self.alive = False

    def run(self) -> None:
        from .httpserver import HTTPServer

        app: App = self.wsgi
        settings = app.settings
        server = HTTPServer(app, self.loop, max_connections=connection_cap(settings),
                            header_timeout=settings.header_timeout,
                            keepalive_timeout=settings.keepalive_timeout,
                            body_timeout=settings.body_timeout)
        server.start(s.sock for s in self.sockets)
        try:
            self.loop.run_until_complete(self._watch(server))
        finally:
            self.loop.close()
        sys.exit(0)

    async def _watch(self, server: t.Any) -> None:
        """Heartbeat to the master until told to stop, then stop gracefully."""
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                log.info("the master process is gone: stopping")
                break
            await asyncio.sleep(1.0)
        await server.stop(float(self.cfg.graceful_timeout))


class GunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, writing its error log to stdout like ours, with a real address."""

    listen_address = ""

    def setup(self, cfg: t.Any) -> None:
        """gunicorn's setup, then its error log (``errorlog = "-"``) to stdout like ours."""
        super().setup(cfg)
        for handler in self.error_log.handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)

    def info(self, msg: str, *args: t.Any, **kwargs: t.Any) -> None:
        """gunicorn's info line, with the address filled in where it has none to say."""
        if msg.startswith("Listening at: ") and args and not args[0]:
            args = (self.listen_address, *args[1:])
        super().info(msg, *args, **kwargs)


def raise_descriptor_limit() -> int:
    """Raise the soft limit of open files to the hard one; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(settings: Settings) -> int:
    """PYPI_MAX_CONNECTIONS, kept below what the descriptor limit allows."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    room = max(8, soft - RESERVED_FDS - settings.threads * 2)
    if settings.max_connections > room:
        log.warning("PYPI_MAX_CONNECTIONS=%d is above what %d open files allow: using %d",
                    settings.max_connections, soft, room)
        return room
    return settings.max_connections


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK)
