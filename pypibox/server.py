"""Runs the WSGI application under gunicorn, configured from Settings."""

from __future__ import annotations

import ctypes
import logging
import os
import typing as t

from gunicorn.app.base import BaseApplication

from . import logs
from .accounts import Accounts
from .settings import Settings
from .storage import clean_stale_uploads

log = logging.getLogger("pypibox.server")


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with options from our settings; each worker builds its own app after fork.

    Each worker is gunicorn's asyncio worker: its event loop keeps the connections and
    parses HTTP, and the WSGI app runs in a pool of PYPI_THREADS threads (``bridge``).

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
            "asgi_lifespan": "off",
            "reuse_port": True,
            "timeout": 120,
            "graceful_timeout": 10,
            "keepalive": 5,
            "preload_app": False,
            "accesslog": "-",
            "errorlog": "-",
            "access_log_format": logs.ACCESS_FORMAT,
            "logger_class": "pypibox.logs.AccessLogger",
            "loglevel": s.log_level,
            "proc_name": "pypibox",
            "forwarded_allow_ips": "127.0.0.1",
            "worker_tmp_dir": "/dev/shm" if _is_dir("/dev/shm") else None,
            "control_socket_disable": True,
        }

    def load_config(self) -> None:
        known = self.cfg.settings
        for key, value in self.options().items():
            if key in known and value is not None:
                self.cfg.set(key, value)

    def load(self) -> t.Callable[..., t.Any]:
        from .bridge import WsgiBridge
        from .webapp import build_app

        logs.setup(self.settings.log_level)
        self.accounts.after_fork()
        app, reader = build_app(self.settings, self.accounts, with_reader=True)
        return WsgiBridge(app, self.settings.threads, quick=reader.quick)


def _is_dir(path: str) -> bool:
    import os

    return os.path.isdir(path) and os.access(path, os.W_OK)


def limit_malloc_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas (one per thread by default, which fragments memory).

    What ``MALLOC_ARENA_MAX`` does, unless that is set already; nothing on musl (Alpine).
    Forked workers inherit it. True if the cap was applied.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_arena_max = -8  # from glibc's malloc.h
    return bool(mallopt(m_arena_max, count))


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; gunicorn stops gracefully on either."""
    limit_malloc_arenas()
    clean_stale_uploads(settings.packages_dir.resolve())
    log.info("serving %s on http://%s:%d/ (authenticate: %s)", settings.packages_dir,
             settings.host, settings.port, ",".join(settings.authenticate))
    GunicornServer(settings, Accounts(settings.htpasswd)).run()
