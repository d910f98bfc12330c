"""The WSGI application: pypiserver's app with our storage, accounts and guards around it."""

from __future__ import annotations

import functools
import html
import logging
import re
import typing as t

import pypiserver
from pypiserver.backend import BackendProxy
from pypiserver.bottle_wrapper.bottle import HTTPError, HTTPResponse, request

from .accounts import Accounts
from .readpath import ReadPath
from .settings import Settings
from .storage import AtomicFileBackend
from .welcome import WELCOME_TEMPLATE

log = logging.getLogger("pypibox.webapp")

Environ = dict[str, t.Any]
StartResponse = t.Callable[..., t.Any]
WSGIApp = t.Callable[[Environ, StartResponse], t.Iterable[bytes]]


def build_pypiserver(settings: Settings, accounts: Accounts) -> WSGIApp:
    """pypiserver's bottle app, configured from our settings, with our backend and auther."""
    config = pypiserver.Config.default_with_overrides(
        roots=[settings.packages_dir.resolve()],
        authenticate=list(settings.authenticate),
        password_file=str(settings.htpasswd),
        auther=accounts.check,
        overwrite=settings.overwrite,
        disable_fallback=not settings.fallback,
        fallback_url=settings.fallback_url,
        hash_algo="sha256",
        backend_arg="simple-dir",
        health_endpoint="/health",
        welcome_msg=WELCOME_TEMPLATE,
    )
    config.backend = BackendProxy(AtomicFileBackend(config))
    app = pypiserver.app_from_config(config)
    app = pypiserver.setup_routes_from_config(app, config)
    refuse_unparsable_forms(app)
    return app


def refuse_unparsable_forms(app: t.Any) -> None:
    """Answer 400, not 500, to a POST whose form data bottle cannot parse.

    Wraps each POST route of pypiserver's bottle app (outside its auth check, so nothing is
    parsed before the password is). An error raised before the form was parsed is the
    client's fault; any later error is left alone and stays a 500. (Moved here from
    validate.py, which no longer depends on bottle; the new write path replaces it.)
    """
    for route in app.routes:
        if route.method == "POST":
            route.callback = _parse_guard(route.callback)
            route.reset()


def _parse_guard(callback: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
    @functools.wraps(callback)
    def guarded(*args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return callback(*args, **kwargs)
        except HTTPResponse:
            raise
        except Exception as exc:
            if "bottle.request.post" in request.environ:
                raise
            limit_hit = getattr(exc, "http_status", None)
            if limit_hit:
                raise HTTPError(limit_hit, str(exc)) from None
            log.warning("refused a malformed form: %s", type(exc).__name__)
            raise HTTPError(400, "Bad request: the form data could not be parsed "
                                 f"({type(exc).__name__})") from None

    return guarded


class _LimitedInput:
    """A request body that refuses to yield more than ``limit`` bytes."""

    def __init__(self, stream: t.Any, limit: int) -> None:
        self.stream = stream
        self.left = limit + 1

    def _take(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left <= 0:
            raise UploadTooLarge()
        return data

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.left
        return self._take(self.stream.read(min(size, self.left)))

    def readline(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.left
        return self._take(self.stream.readline(min(size, self.left)))


class UploadTooLarge(Exception):
    """A request body went past PYPI_MAX_UPLOAD_SIZE."""


def _plain(start_response: StartResponse, status: str, text: str,
           headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (text + "\n").encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))] + (headers or []))
    return [body]


_PRE = re.compile(rb"<pre>(.*?)</pre>", re.S)


def _reason_from_body(body: bytes) -> str | None:
    """The first line of bottle's error message, fit for an HTTP reason phrase."""
    match = _PRE.search(body)
    if not match:
        return None
    text = html.unescape(match.group(1).decode("utf-8", "replace")).strip().splitlines()
    if not text:
        return None
    reason = re.sub(r"[^\x20-\x7e]", "?", text[0].strip())[:200]
    return reason or None


_PLAIN_REASONS = {401: "Unauthorized: this index needs a user name and password",
                  403: "Forbidden: wrong user name or password"}


def explain_errors(app: WSGIApp) -> WSGIApp:
    """Put the error message of a failed upload into the reason phrase, which twine prints."""

    def wrapped(environ: Environ, start_response: StartResponse) -> t.Iterable[bytes]:
        captured: list[t.Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None):
            captured[:] = [status, headers, exc_info]
            return lambda data: None

        chunks = list(app(environ, capture))
        status, headers, exc_info = captured
        code = int(status[:3])
        if code >= 400:
            reason = _reason_from_body(b"".join(chunks))
            if reason in (None, "None"):  # bottle's text for an error raised without one
                reason = _PLAIN_REASONS.get(code)
            if reason:
                status = f"{code} {reason}"
        start_response(status, headers, exc_info)
        return chunks

    return wrapped


class Guard:
    """Limits what reaches pypiserver: oversized uploads are refused before they are read."""

    def __init__(self, inner: WSGIApp, settings: Settings) -> None:
        self.inner = inner
        self.max_upload = settings.max_upload_size
        self.explained = explain_errors(inner)

    def __call__(self, environ: Environ, start_response: StartResponse) -> t.Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            length = environ.get("CONTENT_LENGTH") or ""
            too_large = f"Upload refused: larger than the limit of {self.max_upload} bytes"
            if length.isdigit() and int(length) > self.max_upload:
                return _plain(start_response, f"413 {too_large}", too_large)
            if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                # bottle cannot read a chunked body; say so instead of a parse error.
                text = "Upload refused: send a Content-Length (chunked bodies are not supported)"
                return _plain(start_response, f"411 {text}", text)
            environ["wsgi.input"] = _LimitedInput(environ["wsgi.input"], self.max_upload)
            try:
                return self.explained(environ, start_response)
            except UploadTooLarge:
                return _plain(start_response, f"413 {too_large}", too_large)
        return self.inner(environ, start_response)


@t.overload
def build_app(settings: Settings, accounts: Accounts | None = None) -> WSGIApp: ...
@t.overload
def build_app(settings: Settings, accounts: Accounts | None, with_reader: t.Literal[True]
              ) -> tuple[WSGIApp, ReadPath]: ...


def build_app(settings: Settings, accounts: Accounts | None = None,
              with_reader: bool = False) -> t.Any:
    """The complete WSGI application for one worker process (and its ReadPath if asked)."""
    accounts = accounts or Accounts(settings.htpasswd)
    reader = ReadPath(build_pypiserver(settings, accounts), settings, accounts)
    app = Guard(reader, settings)
    return (app, reader) if with_reader else app
