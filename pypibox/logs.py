"""Logging to stdout, with nothing secret in it."""

from __future__ import annotations

import logging
import sys

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
