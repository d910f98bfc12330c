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


def _gunicorn_logger_base() -> type:
    from gunicorn.glogging import Logger

    return Logger


class AccessLogger(_gunicorn_logger_base()):  # type: ignore[misc]
    """gunicorn's logger with a cheaper access line in ACCESS_FORMAT's layout.

    gunicorn's own access() builds a dict of every header and environ entry and decodes
    the Authorization header per request; this writes the same fields, nothing else.
    """

    def setup(self, cfg) -> None:  # noqa: ANN001
        """gunicorn's setup, then its error log (``errorlog = "-"``) to stdout like ours."""
        super().setup(cfg)
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
        self.access_log.info(
            '%s "%s %s %s" %s %s %sms "%s"',
            environ.get("REMOTE_ADDR", "-"), environ["REQUEST_METHOD"], environ["RAW_URI"],
            environ["SERVER_PROTOCOL"], status, "-" if sent is None else sent, millis,
            environ.get("HTTP_USER_AGENT", "-"))
