"""Starts the server: gunicorn's master process with our workers (``worker``)."""

from __future__ import annotations

import ctypes
import logging
import os

from .accounts import Accounts
from .settings import Settings
from .storage import clean_stale_uploads
from .worker import GunicornServer, raise_descriptor_limit

log = logging.getLogger("pypibox.server")


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
    files = raise_descriptor_limit()
    clean_stale_uploads(settings.packages_dir.resolve())
    log.info("serving %s on http://%s:%d/ (authenticate: %s; %d open files allowed)",
             settings.packages_dir, settings.host, settings.port,
             ",".join(settings.authenticate), files)
    GunicornServer(settings, Accounts(settings.htpasswd)).run()
