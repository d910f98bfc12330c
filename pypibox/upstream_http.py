"""A small bounded HTTP client for the upstream index: timeouts, redirects, credentials.

Only ``http`` and ``https`` URLs are fetched; at most ``MAX_REDIRECTS`` redirects are
followed; the upstream's own credentials (from ``PYPI_UPSTREAM`` or a netrc file) are sent
only to the host they belong to and never appear in an error, a log line or a page.
"""

from __future__ import annotations

import base64
import http.client
import logging
import netrc
import socket
import ssl
import threading
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from . import __version__

log = logging.getLogger("pypibox.upstream")

MAX_REDIRECTS = 5
IDLE_PER_HOST = 4
USER_AGENT = f"pypibox/{__version__}"
_REDIRECTS = (301, 302, 303, 307, 308)


class UpstreamError(Exception):
    """The upstream could not give an answer: ``status`` for our client, a one-line reason.

    The reason never holds credentials: URLs in it pass through ``safe_url``.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason.replace("\r", " ").replace("\n", " ")


def safe_url(url: str) -> str:
    """``url`` without user, password, query or fragment: fit for logs and errors."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def strip_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without ``user:password@`` (query kept), and those credentials if present."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return clean, (unquote(user), unquote(password))


def _key(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UpstreamError(502, f"refused a {scheme or 'relative'}: URL from the upstream")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UpstreamError(502, "refused a URL with a bad port from the upstream") from None
    host = parts.hostname
    if not host:
        raise UpstreamError(502, "refused a URL without a host from the upstream")
    return scheme, host, port


@dataclass
class Reply:
    """A response whose head has arrived; read the body with ``read`` or ``read_all``."""

    status: int
    reason: str
    headers: dict[str, str]       # lower-case names
    url: str                      # the final URL, without credentials
    _resp: http.client.HTTPResponse
    _conn: http.client.HTTPConnection
    _release: t.Callable[[bool], None]
    _deadline: float | None = None
    _sock_timeout: float = 15.0
    _done: bool = False

    def _arm(self) -> None:
        timeout = self._sock_timeout
        if self._deadline is not None:
            timeout = self._deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("deadline")
        if self._conn.sock is not None:
            self._conn.sock.settimeout(min(timeout, self._sock_timeout))

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body (b"" at its end); socket errors as UpstreamError."""
        try:
            self._arm()
            data = self._resp.read(size)
        except TimeoutError:
            self.close()
            raise UpstreamError(504, f"{safe_url(self.url)}: the upstream stopped sending "
                                     "(timeout)") from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise UpstreamError(502, f"{safe_url(self.url)}: the upstream's answer broke off "
                                     f"({_describe(exc)})") from None
        if not data:
            self._finish(reuse=True)
        return data

    def read_all(self, limit: int) -> bytes:
        """The whole body, refusing one longer than ``limit`` bytes."""
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            self.close()
            raise UpstreamError(502, f"{safe_url(self.url)}: the upstream's answer is larger "
                                     f"than {limit // (1 << 20)} MiB")
        parts: list[bytes] = []
        total = 0
        while True:
            data = self.read(1 << 16)
            if not data:
                return b"".join(parts)
            total += len(data)
            if total > limit:
                self.close()
                raise UpstreamError(502, f"{safe_url(self.url)}: the upstream's answer is larger"
                                         f" than {limit // (1 << 20)} MiB")
            parts.append(data)

    def drain(self, limit: int = 1 << 16) -> None:
        """Read and drop a small body so the connection can serve the next request."""
        if self._done:
            return
        try:
            left = limit
            while left > 0:
                data = self.read(min(left, 1 << 14))
                if not data:
                    return
                left -= len(data)
        except UpstreamError:
            return
        self.close()   # too much to read for nothing

    def _finish(self, reuse: bool) -> None:
        if not self._done:
            self._done = True
            self._release(reuse and not self._resp.will_close)

    def close(self) -> None:
        """Drop the connection (the body was not read to its end)."""
        self._finish(reuse=False)


def _describe(exc: BaseException) -> str:
    """A short description of a network error that never repeats a URL."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or 'handshake failed'}"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, http.client.IncompleteRead):
        return "incomplete answer"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP: {type(exc).__name__}"
    return type(exc).__name__


class HttpClient:
    """GET with keep-alive connections per host, redirects followed within bounds."""

    def __init__(self, timeout: float, credentials: dict[tuple[str, int], tuple[str, str]]
                 | None = None, netrc_path: Path | None = None) -> None:
        self.timeout = timeout
        self.credentials = dict(credentials or {})
        self._netrc: netrc.netrc | None = None
        if netrc_path is not None:
            try:
                self._netrc = netrc.netrc(str(netrc_path))
            except (OSError, netrc.NetrcParseError) as exc:
                # The message of a parse error may quote the file: only its position is shown.
                where = f"line {exc.lineno}" if isinstance(exc, netrc.NetrcParseError) else \
                    (exc.strerror or "unreadable")
                log.warning("netrc file %s not used (%s)", netrc_path, where)
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._ssl = ssl.create_default_context()

    def auth_for(self, host: str, port: int) -> tuple[str, str] | None:
        """Credentials for a host: PYPI_UPSTREAM's own first, then the netrc file."""
        found = self.credentials.get((host, port))
        if found is not None:
            return found
        if self._netrc is not None:
            entry = self._netrc.authenticators(host)
            if entry is not None and entry[0] is not None and entry[2] is not None:
                return entry[0], entry[2]
        return None

    def _connect(self, key: tuple[str, str, int], timeout: float) -> http.client.HTTPConnection:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        scheme, host, port = key
        if scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _give_back(self, key: tuple[str, str, int], conn: http.client.HTTPConnection,
                   reuse: bool) -> None:
        if reuse:
            with self._lock:
                idle = self._idle.setdefault(key, [])
                if len(idle) < IDLE_PER_HOST:
                    idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()

    def get(self, url: str, headers: dict[str, str] | None = None,
            deadline: float | None = None) -> Reply:
        """GET ``url``; the reply's head, after redirects. Raises UpstreamError (502/504)."""
        url, inline = strip_userinfo(url)
        for _ in range(MAX_REDIRECTS + 1):
            reply = self._once(url, headers or {}, deadline, inline)
            if reply.status not in _REDIRECTS or "location" not in reply.headers:
                return reply
            reply.close()
            target = urljoin(url, reply.headers["location"])
            target, inline_next = strip_userinfo(target)
            _key(target)  # refuses file:, ftp: and the like before anything else
            # Credentials given inline go only to the host they were given for.
            inline = inline_next if inline_next else (
                inline if _key(target)[1:] == _key(url)[1:] else None)
            url = target
        raise UpstreamError(502, f"{safe_url(url)}: more than {MAX_REDIRECTS} redirects")

    def _once(self, url: str, headers: dict[str, str], deadline: float | None,
              inline: tuple[str, str] | None) -> Reply:
        key = _key(url)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        send = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
        auth = inline or self.auth_for(key[1], key[2])
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            send["Authorization"] = f"Basic {token}"
        for attempt in (0, 1):
            timeout = self.timeout
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    raise UpstreamError(504, f"{safe_url(url)}: no answer within "
                                             f"{self.timeout:g} s")
            conn = self._connect(key, timeout)
            reused = conn.sock is not None
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                else:
                    conn.timeout = timeout
                conn.request("GET", target, headers=send)
                resp = conn.getresponse()
            except TimeoutError:
                conn.close()
                raise UpstreamError(504, f"{safe_url(url)}: no answer within "
                                         f"{self.timeout:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue  # a kept-alive connection the server had closed: once more
                raise UpstreamError(502, f"{safe_url(url)}: cannot reach the upstream "
                                         f"({_describe(exc)})") from None
            break
        head = {k.lower(): v for k, v in resp.getheaders()}

        def release(reuse: bool, conn: http.client.HTTPConnection = conn) -> None:
            self._give_back(key, conn, reuse)

        return Reply(resp.status, resp.reason, head, url, resp, conn, release, deadline,
                     self.timeout)
