"""HTTP/1.1 connections of one worker process, on asyncio and httptools (llhttp).

Every limit a client could otherwise stretch lives here: the size and time of request
headers, idle keep-alive time, a request body that stops or trickles, the number of open
connections, pipelined requests waiting. The app (``app.App``) decides what a request
means; this module only moves bytes and enforces the bounds.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import logging
import socket
import time
import typing as t
from collections import deque
from urllib.parse import unquote_to_bytes

import httptools

from .messages import FileBody, Refusal, Request, Response, plain

if t.TYPE_CHECKING:
    from .app import App

log = logging.getLogger("pypibox.http")

#: Request line plus headers, in bytes; more gets 431.
MAX_HEAD = 32 << 10
#: The request target, in bytes; longer gets 414.
MAX_URL = 8 << 10
#: Header fields of one request; more gets 431.
MAX_HEADERS = 100
#: Bytes of one header field (name and value), as gunicorn's and Apache's default.
MAX_FIELD = 8190
#: Request body bytes held in memory before reading from the client pauses.
BODY_BUFFER = 256 << 10
#: A body must bring this much (or its remainder) in every PYPI_BODY_TIMEOUT window.
BODY_WINDOW_BYTES = 16 << 10
#: Unread body left after a response: drained to keep the connection up to this much,
#: beyond it the connection is closed (after a lingering read, so the answer arrives).
DRAIN_LIMIT = 1 << 20
#: Seconds a closing connection keeps reading (and dropping) what the client still sends.
LINGER = 2.0
#: Pipelined requests queued on one connection before reading from it pauses.
MAX_PIPELINE = 8
#: Files up to this size are read and written in one piece; larger go block by block.
SMALL_FILE = 256 << 10
#: Bytes read and written per step of a larger file.
FILE_BLOCK = 256 << 10
#: Seconds between two log lines about a full connection table or failing accepts.
NOTE_EVERY = 60.0


class BodyTimeout(Exception):
    """A request body stopped or trickled below the minimum rate."""


class ClientGone(Exception):
    """The client closed (or half-closed) its side before its body was complete."""


_date_cache: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    """The Date header line, formatted once per second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, b"Date: " + email.utils.formatdate(now, usegmt=True).encode()
                       + b"\r\n")
    return _date_cache[1]


class Incoming:
    """One request on its way in: parsed headers, and the body as it arrives."""

    __slots__ = ("conn", "request", "length", "chunked", "keep_alive", "expect_continue",
                 "chunks", "buffered", "received", "complete", "waiter", "window_start",
                 "window_bytes", "draining", "started", "timeout")

    def __init__(self, conn: Connection, request: Request, length: int, chunked: bool,
                 keep_alive: bool, expect_continue: bool) -> None:
        self.conn = conn
        self.request = request
        self.length = length            # Content-Length, or -1
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.received = 0
        self.complete = False
        self.waiter: asyncio.Future[None] | None = None
        self.window_start = 0.0
        self.window_bytes = 0
        self.draining = False           # the answer is sent; the rest of the body is dropped
        self.started = time.perf_counter()
        self.timeout = 10.0

    @property
    def has_body(self) -> bool:
        """True if the request announced a body."""
        return self.chunked or self.length > 0

    def push(self, data: bytes) -> None:
        """Body bytes from the parser."""
        self.received += len(data)
        self.window_bytes += len(data)
        if self.draining:
            return
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > BODY_BUFFER:
            self.conn.pause_reading()
        self._wake()

    def finish(self) -> None:
        """The parser saw the end of the message."""
        self.complete = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end.

        Raises BodyTimeout when a window of ``timeout`` seconds brought less than
        BODY_WINDOW_BYTES (or the rest), ClientGone when the client went away.
        """
        if not self.window_start:
            self.window_start = time.monotonic()
        while not self.chunks:
            if self.complete:
                return b""
            if self.conn.gone:
                raise ClientGone()
            self.conn.resume_reading()
            now = time.monotonic()
            deadline = self.window_start + self.timeout
            if now >= deadline:
                left = self.length - self.received if self.length >= 0 else BODY_WINDOW_BYTES
                if self.window_bytes < min(BODY_WINDOW_BYTES, left):
                    raise BodyTimeout()
                self.window_start, self.window_bytes = now, 0
                continue
            self.waiter = self.conn.loop.create_future()
            try:
                await asyncio.wait_for(self.waiter, deadline - now)
            except TimeoutError:
                pass
            finally:
                self.waiter = None
        data = self.chunks.popleft()
        self.buffered -= len(data)
        if self.buffered < BODY_BUFFER // 2:
            self.conn.resume_reading()
        return data

    def drop_body(self) -> None:
        """From now on the body is dropped as it arrives."""
        self.draining = True
        self.chunks.clear()
        self.buffered = 0
        self.conn.resume_reading()


class Connection(asyncio.Protocol):
    """One client connection: httptools parses, the app answers, requests in order."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.app = server.app
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.url = bytearray()
        self.header_list: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.in_head = False
        self.parsing: Incoming | None = None
        self.queue: deque[Incoming] = deque()
        self.active: Incoming | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_kind = ""            # "header", "idle" or "drain"
        self.gone = False
        self.closing = False
        self.lingering = False
        self.reading_paused = False
        self.writing_paused = False
        self.write_waiter: asyncio.Future[None] | None = None
        self.requests = 0
        self.idle_since = self.loop.time()
        self.upgrade = False

    # -- asyncio protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "unix"
        self.server.connections.add(self)
        self._arm("header", self.server.header_timeout, self._header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.lingering or self.closing:
            return
        if self.timer_kind == "idle":
            # The keep-alive wait ends: a request begins, and its headers are timed.
            self._arm("header", self.server.header_timeout, self._header_timeout)
        if self.parsing is None or self.in_head:
            # Head bytes are counted before the parser sees (and buffers) them.
            end = _head_end(data)
            size = self.head_bytes + (len(data) if end < 0 else end)
            if size > MAX_HEAD:
                self._fail(plain(431, f"Request header fields too large (more than {MAX_HEAD} "
                                      "bytes)"))
                return
            self.head_bytes = size if end < 0 else 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgrade = True  # answered like any request, then the connection closes
            for incoming in (self.active, self.parsing, *self.queue):
                if incoming is not None:
                    incoming.keep_alive = False
        except Refusal as refusal:
            self._fail(refusal.response())
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._fail(cause.response() if isinstance(cause, Refusal)
                       else plain(400, "Bad request: malformed HTTP request"))
            return
        except httptools.HttpParserError as exc:
            self._fail(plain(400, f"Bad request: malformed HTTP request ({_parser_reason(exc)})"))

    def eof_received(self) -> bool | None:
        if self.lingering or self.closing:
            return None  # the client is done too: close now, freeing the slot
        incoming = self.active or self.parsing
        if incoming is not None and not incoming.complete:
            self.gone = True  # its body ended early: the app answers, then we close
            incoming._wake()
            return True
        if self.active is not None:
            self.gone = True
            return True  # finish the answer in progress
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.closing = True
        self._disarm()
        for incoming in (self.active, self.parsing):
            if incoming is not None:
                incoming._wake()
        waiter = self.write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.server.forget(self)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        waiter = self.write_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.url.clear()
        self.header_list = []
        if self.timer_kind != "header":
            self._arm("header", self.server.header_timeout, self._header_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL:
            raise Refusal(414, f"URI too long (more than {MAX_URL} bytes)")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > MAX_FIELD:
            raise Refusal(431, f"Request header fields too large (a field of more than "
                               f"{MAX_FIELD} bytes)")
        self.header_list.append((name, value))
        if len(self.header_list) > MAX_HEADERS:
            raise Refusal(431, f"Request header fields too large (more than {MAX_HEADERS} "
                               "fields)")

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.active is None and not self.queue:
            self._disarm()
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.header_list)
        if size > MAX_HEAD:
            raise Refusal(431, f"Request header fields too large (more than {MAX_HEAD} bytes)")
        incoming = self._incoming()
        self.parsing = incoming
        self.queue.append(incoming)
        self.requests += 1
        if len(self.queue) > MAX_PIPELINE:
            self.pause_reading()
        if self.active is None:
            self._next()

    def on_body(self, body: bytes) -> None:
        incoming = self.parsing
        if incoming is not None:
            incoming.push(body)

    def on_message_complete(self) -> None:
        incoming = self.parsing
        self.parsing = None
        if incoming is None:
            return
        incoming.finish()
        if incoming.draining and self.active is incoming:
            self._disarm()
            self._after(incoming)

    # -- requests ----------------------------------------------------------------------------
    def _incoming(self) -> Incoming:
        parser = self.parser
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.header_list:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1").strip()
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        try:
            parsed = httptools.parse_url(bytes(self.url))
        except httptools.HttpParserInvalidURLError:
            raise Refusal(400, "Bad request: malformed request target") from None
        try:
            path = unquote_to_bytes(parsed.path or b"/").decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal(400, "Bad request: the path is not UTF-8") from None
        query = (parsed.query or b"").decode("latin-1")
        version = parser.get_http_version()
        scheme = "http"
        forwarded = headers.get("x-forwarded-proto", "")
        if forwarded in ("http", "https") and self.peer in self.server.trusted_proxies:
            scheme = forwarded
        request = Request(method=parser.get_method().decode("latin-1"), path=path,
                          query_string=query, headers=headers, client=self.peer,
                          scheme=scheme, version=version)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length_text = headers.get("content-length", "")
        length = int(length_text) if length_text.isdigit() else (-1 if chunked else 0)
        incoming = Incoming(self, request, length, chunked,
                            keep_alive=parser.should_keep_alive() and not self.upgrade,
                            expect_continue=headers.get("expect", "").lower() == "100-continue")
        incoming.timeout = self.server.body_timeout
        incoming.complete = not incoming.has_body  # nothing more to wait for
        return incoming

    def _next(self) -> None:
        """Start answering the oldest request not yet answered."""
        if self.closing or not self.queue:
            return
        incoming = self.queue.popleft()
        self.active = incoming
        if len(self.queue) <= MAX_PIPELINE:
            self.resume_reading()
        self.app.start(self, incoming)

    def _after(self, incoming: Incoming) -> None:
        """The answer to ``incoming`` is sent: go on, wait, or close."""
        if self.closing:
            return
        if not incoming.complete:
            left = incoming.length - incoming.received
            if incoming.keep_alive and not self.gone and not incoming.chunked \
                    and 0 <= left <= DRAIN_LIMIT:
                incoming.drop_body()  # on_message_complete comes back here
                incoming.window_bytes = 0
                self._arm("drain", self.server.body_timeout, self._drain_timeout)
                return
            self.close(linger=True)
            return
        self.active = None
        if not incoming.keep_alive or self.gone or self.server.stopping:
            self.close(linger=False)
            return
        self.idle_since = self.loop.time()
        if self.queue:
            self._next()
            return
        self.resume_reading()
        if not self.in_head:  # else the next request's headers are on their way, and timed
            self._arm("idle", self.server.keepalive_timeout, self._idle_timeout)

    # -- answering ---------------------------------------------------------------------------
    def write_continue(self) -> None:
        """``100 Continue`` for a client that waits for it before sending its body."""
        if self.transport is not None and not self.closing:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _head(self, incoming: Incoming, response: Response, length: int | None,
              chunked: bool = False) -> bytes:
        keep = incoming.keep_alive and not self.server.stopping and not self.gone
        if not incoming.complete:
            left = incoming.length - incoming.received
            keep = keep and not incoming.chunked and 0 <= left <= DRAIN_LIMIT
        incoming.keep_alive = keep
        status = response.status
        parts = [b"HTTP/1.1 %d %s\r\n" % (status, response.status_line_reason().encode("ascii"))]
        for name, value in response.headers:
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                continue  # a header cannot smuggle another
            parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        if length is not None and status not in (204, 304) and status >= 200:
            parts.append(b"Content-Length: %d\r\n" % length)
        elif chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(_date_header())
        if not keep:
            parts.append(b"Connection: close\r\n")
        elif incoming.request.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def respond_now(self, incoming: Incoming, response: Response) -> None:
        """Send a response whose body is at hand (bytes, a small file); else start a task."""
        body = response.body
        if isinstance(body, bytes):
            self._write(self._head(incoming, response, len(body)))
            if body and not incoming.request.head and response.status not in (204, 304):
                self._write(body)
            self._sent(incoming, response, len(body))
            return
        if isinstance(body, FileBody) and (body.length <= SMALL_FILE or incoming.request.head):
            try:
                data = b"" if incoming.request.head else body.handle.read(body.length)
            finally:
                body.close()
            self._write(self._head(incoming, response, body.length))
            self._write(data)
            self._sent(incoming, response, body.length)
            return
        self.loop.create_task(self.respond(incoming, response))

    async def respond(self, incoming: Incoming, response: Response) -> None:
        """Send any response, waiting for the client to take it."""
        body = response.body
        if isinstance(body, (bytes, FileBody)) and (
                not isinstance(body, FileBody) or body.length <= SMALL_FILE):
            self.respond_now(incoming, response)
            return
        sent = 0
        try:
            if isinstance(body, FileBody):
                self._write(self._head(incoming, response, body.length))
                if not incoming.request.head and self.transport is not None:
                    # Block by block, as fast as the client takes them. loop.sendfile used
                    # less CPU but served 25% fewer 10 MB files a second (make bench).
                    left = body.length
                    read = body.handle.read
                    while left > 0 and not self.gone:
                        data = read(min(FILE_BLOCK, left))
                        if not data:
                            break
                        left -= len(data)
                        sent += len(data)
                        self._write(data)
                        await self._drain()
                    if left:
                        incoming.keep_alive = False  # the file shrank: never a short body
                        self.close(linger=False)
            else:
                length = _declared_length(response)
                # Without a length: chunked (HTTP/1.1), so that a body cut short by an error
                # never looks complete; an HTTP/1.0 client gets one that ends with the
                # connection.
                chunked = length is None and incoming.request.version != "1.0"
                if length is None and not chunked:
                    incoming.keep_alive = False
                self._write(self._head(incoming, response, length, chunked))
                pool = self.app.pool
                while not self.gone and not incoming.request.head:
                    chunk = await self.loop.run_in_executor(pool, next, body, b"")
                    if not chunk:
                        break
                    self._write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    sent += len(chunk)
                    await self._drain()
                if chunked and not incoming.request.head:
                    self._write(b"0\r\n\r\n")
                if length is not None and sent != length and not incoming.request.head:
                    incoming.keep_alive = False  # the client must not take a short body
                    self.close(linger=False)
        except (ConnectionError, RuntimeError, OSError):
            self.close(linger=False)
        except Exception as exc:
            # Mid-body: the only honest signal left is to close short of the end.
            refusal = getattr(exc, "reason", None)
            if refusal:
                log.warning("%s %s broke off: %s", incoming.request.method,
                            incoming.request.path, refusal)
            else:
                log.exception("error sending %s %s", incoming.request.method,
                              incoming.request.path)
            incoming.keep_alive = False
            self.close(linger=False)
        finally:
            if isinstance(body, FileBody):
                body.close()
            else:
                close = getattr(body, "close", None)
                if close is not None:
                    await self.loop.run_in_executor(self.app.pool, close)
        self._sent(incoming, response, sent)

    async def _drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        while self.writing_paused and not self.gone:
            self.write_waiter = self.loop.create_future()
            try:
                await self.write_waiter
            finally:
                self.write_waiter = None

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing() and data:
            self.transport.write(data)

    def _sent(self, incoming: Incoming, response: Response, size: int) -> None:
        self.app.log_access(incoming, response, size)
        self._after(incoming)

    def _fail(self, response: Response) -> None:
        """A request we cannot read further: answer (if nothing is in flight) and close."""
        if self.closing:
            return
        if self.active is None and self.transport is not None:
            dummy = Request("GET", "-", "", {}, self.peer)
            incoming = Incoming(self, dummy, 0, False, False, False)
            incoming.complete = True
            self._write(self._head(incoming, response, len(t.cast(bytes, response.body))))
            self._write(t.cast(bytes, response.body))
            self.app.log_access(incoming, response, len(t.cast(bytes, response.body)))
        self.close(linger=True)

    # -- flow control, timers, closing --------------------------------------------------------
    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closing:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closing:
            self.reading_paused = False
            self.transport.resume_reading()

    def _arm(self, kind: str, delay: float, callback: t.Callable[[], None]) -> None:
        self._disarm()
        self.timer_kind = kind
        self.timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_kind = ""

    def _header_timeout(self) -> None:
        self.timer = None
        self.timer_kind = ""
        if self.active is not None:
            return  # the headers of a pipelined request wait for the answer in progress
        if self.in_head or self.requests == 0:
            if self.in_head:
                self._fail(plain(408, "Request timeout: the request headers took longer than "
                                      f"{self.server.header_timeout:g} s"))
            else:
                self.close(linger=False)  # connected and sent nothing

    def _drain_timeout(self) -> None:
        """While a body is dropped, it must still arrive at the minimum rate."""
        self.timer = None
        self.timer_kind = ""
        incoming = self.active
        if incoming is None or incoming.complete or self.closing:
            return
        left = incoming.length - incoming.received
        if incoming.window_bytes < min(BODY_WINDOW_BYTES, left):
            self.close(linger=False)
            return
        incoming.window_bytes = 0
        self._arm("drain", self.server.body_timeout, self._drain_timeout)

    def _idle_timeout(self) -> None:
        self.timer = None
        self.timer_kind = ""
        if self.active is None and not self.in_head:
            self.close(linger=False)

    @property
    def idle(self) -> bool:
        """Waiting for a request, with none of it received: may be closed to make room."""
        return self.active is None and not self.in_head and not self.queue and not self.closing

    def close(self, linger: bool) -> None:
        """Close; with ``linger``, first stop writing and drop what the client still sends,
        so that a client still sending its body reads our answer instead of a reset."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self._disarm()
        transport = self.transport
        if linger and not self.gone and transport.can_write_eof():
            self.lingering = True
            self.resume_reading_for_linger()
            try:
                transport.write_eof()
            except OSError:
                transport.close()
                return
            self.timer = self.loop.call_later(LINGER, transport.close)
            return
        transport.close()

    def resume_reading_for_linger(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()


def _head_end(data: bytes) -> int:
    """Where a request's head ends in ``data`` (after its blank line), or -1."""
    ends = [at + len(mark) for mark in (b"\r\n\r\n", b"\n\n")
            if (at := data.find(mark)) >= 0]
    return min(ends) if ends else -1


def _declared_length(response: Response) -> int | None:
    for name, value in response.headers:
        if name.lower() == "content-length" and value.isdigit():
            response.headers = [(n, v) for n, v in response.headers
                                if n.lower() != "content-length"]
            return int(value)
    return None


def _parser_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:80]


class HTTPServer:
    """The listening sockets and open connections of one worker."""

    def __init__(self, app: App, loop: asyncio.AbstractEventLoop, *, max_connections: int,
                 header_timeout: float, keepalive_timeout: float, body_timeout: float,
                 trusted_proxies: frozenset[str] = frozenset({"127.0.0.1", "::1"})) -> None:
        self.app = app
        self.loop = loop
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.body_timeout = body_timeout
        self.trusted_proxies = trusted_proxies
        self.connections: set[Connection] = set()
        self.stopping = False
        self._room = asyncio.Event()
        self._noted: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, sockets: t.Iterable[socket.socket]) -> None:
        """Accept connections on each socket."""
        for sock in sockets:
            sock.setblocking(False)
            self._tasks.append(self.loop.create_task(self._accept(sock)))

    def forget(self, conn: Connection) -> None:
        """A connection closed: its slot is free."""
        self.connections.discard(conn)
        if len(self.connections) < self.max_connections:
            self._room.set()

    def _note(self, what: str, message: str, *args: object) -> None:
        """Log ``message`` at most once a minute for each kind of trouble."""
        now = time.monotonic()
        if now - self._noted.get(what, -NOTE_EVERY) >= NOTE_EVERY:
            self._noted[what] = now
            log.warning(message, *args)

    def _make_room(self) -> bool:
        """Close the longest idle connection; False if none is idle."""
        idle = [c for c in self.connections if c.idle]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since)
        oldest.close(linger=False)
        self.connections.discard(oldest)
        return True

    async def _accept(self, sock: socket.socket) -> None:
        loop = self.loop
        while not self.stopping:
            if len(self.connections) >= self.max_connections:
                self._note("full", "%d connections open (PYPI_MAX_CONNECTIONS): closing idle "
                                   "ones, new connections wait", len(self.connections))
                if not self._make_room():
                    self._room.clear()
                    try:
                        await asyncio.wait_for(self._room.wait(), 1.0)
                    except TimeoutError:
                        pass
                    continue
            try:
                conn, _ = await loop.sock_accept(sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._note("accept", "cannot accept connections: %s (%d open); closing "
                                         "idle ones", exc.strerror, len(self.connections))
                    self._make_room()
                    await asyncio.sleep(0.1)
                    continue
                if self.stopping:
                    return
                await asyncio.sleep(0.01)
                continue
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            try:
                await loop.connect_accepted_socket(lambda: Connection(self), conn)
            except OSError:
                conn.close()

    async def stop(self, grace: float) -> None:
        """Stop accepting, close idle connections, let requests in flight finish."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        deadline = time.monotonic() + grace
        while self.connections and time.monotonic() < deadline:
            for conn in list(self.connections):
                if conn.idle:
                    conn.close(linger=False)
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
