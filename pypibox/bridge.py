"""The WSGI application served by gunicorn's asyncio (ASGI) worker.

The event loop parses HTTP and keeps the connections. A request that needs no slow work
(``quick``) is answered in the loop; any other runs the WSGI app (ours and pypiserver's)
in a pool thread, so a bcrypt check or an upload never holds up other requests. Small
responses go back to the loop in one piece; files are read and sent by the loop.
"""

from __future__ import annotations

import asyncio
import logging
import typing as t
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

log = logging.getLogger("pypibox.bridge")

Environ = dict[str, t.Any]
WSGIApp = t.Callable[[Environ, t.Callable[..., t.Any]], t.Iterable[bytes]]
Scope = dict[str, t.Any]
Message = dict[str, t.Any]
Receive = t.Callable[[], t.Awaitable[Message]]
Send = t.Callable[[Message], t.Awaitable[None]]

#: The private header that carries a non-standard reason phrase to the worker's protocol.
REASON_HEADER = b"x-pypibox-reason"
#: Bytes of a file read per step; the first step happens in the request's thread.
FILE_BLOCK = 1 << 18
#: A response body up to this size is collected in the thread and sent in one piece.
COLLECT_LIMIT = 1 << 20
_HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"transfer-encoding", b"upgrade",
                         b"proxy-connection", b"te", b"trailer"))
_PHRASES = {s.value: s.phrase for s in HTTPStatus}


class FileBody:
    """``wsgi.file_wrapper``: an open file the event loop sends, Content-Length bytes of it."""

    def __init__(self, handle: t.BinaryIO, block: int = FILE_BLOCK) -> None:
        self.handle = handle

    def __iter__(self) -> t.Iterator[bytes]:
        """For a caller that iterates it like any WSGI body (not the bridge)."""
        while data := self.handle.read(FILE_BLOCK):
            yield data

    def close(self) -> None:
        self.handle.close()


class _Errors:
    """``wsgi.errors`` into our log (stdout), not stderr."""

    def write(self, text: str) -> int:
        if text.strip():
            log.error("%s", text.rstrip())
        return len(text)

    def writelines(self, lines: t.Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


_ERRORS = _Errors()


class BodyStream:
    """``wsgi.input``: the request body, pulled from the event loop as the app reads it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive) -> None:
        self.loop = loop
        self.receive = receive
        self.buffer = bytearray()
        self.done = False

    def _fill(self) -> None:
        message = asyncio.run_coroutine_threadsafe(self.receive(), self.loop).result()
        if message["type"] == "http.disconnect":
            self.done = True  # the body ends short, as at a socket's EOF: the app says so
            return
        self.buffer += message.get("body", b"")
        if not message.get("more_body", False):
            self.done = True

    def _take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        while not self.done and (size is None or size < 0 or len(self.buffer) < size):
            self._fill()
        return self._take(len(self.buffer) if size is None or size < 0 else size)

    def readline(self, size: int | None = -1) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                wanted = end + 1
                break
            if self.done or (size is not None and 0 <= size <= len(self.buffer)):
                wanted = len(self.buffer)
                break
            self._fill()
        if size is not None and size >= 0:
            wanted = min(wanted, size)
        return self._take(wanted)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> t.Iterator[bytes]:
        return iter(self.readline, b"")


def build_environ(scope: Scope, body: BodyStream) -> Environ:
    """A PEP 3333 environ for an ASGI HTTP scope."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
    query = scope.get("query_string", b"")
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: Environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", ""),
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": (raw_path + (b"?" + query if query else b"")).decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "80",
        "SERVER_PROTOCOL": "HTTP/" + scope.get("http_version", "1.1"),
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": _ERRORS,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileBody,
    }
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper()
        if "_" in key:
            continue  # would be indistinguishable from its dashed twin; gunicorn drops it too
        key = key.replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = environ[key] + "," + text if key in environ else text
    return environ


class _Reply:
    """What the thread hands back to the loop: status, headers and the body still to send."""

    __slots__ = ("status", "headers", "chunks", "file", "left", "streamed")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.file: FileBody | None = None
        self.left = -1  # bytes of ``file`` still to send; -1: to its end
        self.streamed = False


def _status_and_headers(status: str, headers: list[tuple[str, str]]
                        ) -> tuple[int, list[tuple[bytes, bytes]], int]:
    code = int(status[:3])
    reason = status[4:].strip()
    out: list[tuple[bytes, bytes]] = []
    length = -1
    for name, value in headers:
        lname = name.lower().encode("latin-1")
        if lname in _HOP_BY_HOP or lname == REASON_HEADER:
            continue
        if lname == b"content-length" and value.strip().isdigit():
            length = int(value)
        out.append((lname, value.encode("latin-1")))
    if reason and reason != _PHRASES.get(code):
        out.append((REASON_HEADER, reason.encode("latin-1", "replace")))
    return code, out, length


class WsgiBridge:
    """An ASGI application that runs a WSGI application in a pool of threads.

    ``quick(environ)`` may name requests that need no slow work (a cached page, a file
    with no password check to make): those run in the event loop itself, with no thread
    switch. They must not read a request body.
    """

    def __init__(self, app: WSGIApp, threads: int,
                 quick: t.Callable[[Environ], bool] | None = None) -> None:
        self.app = app
        self.quick = quick
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="pypibox")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off (server.py); a websocket handshake is refused
        loop = asyncio.get_running_loop()
        environ = build_environ(scope, BodyStream(loop, receive))
        if self.quick is not None and self.quick(environ):
            reply = self._run(environ, loop, send, inline=True)
        else:
            reply = await loop.run_in_executor(self.pool, self._run, environ, loop, send)
        if reply.streamed:
            return
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": reply.headers})
        chunks = reply.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if reply.file is None:
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await self._send_file(reply.file, reply.left, send)
        finally:
            reply.file.close()

    async def _send_file(self, file: FileBody, left: int, send: Send) -> None:
        """The rest of a file, block by block, as fast as the client takes it."""
        read = file.handle.read
        while left != 0:
            data = read(FILE_BLOCK if left < 0 else min(FILE_BLOCK, left))
            if not data:
                break
            left -= len(data) if left > 0 else 0
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    # -- in the pool thread ---------------------------------------------------------------
    def _run(self, environ: Environ, loop: asyncio.AbstractEventLoop, send: Send,
             inline: bool = False) -> _Reply:
        """Call the app (in a pool thread, or ``inline`` in the loop) and gather its answer."""
        reply = _Reply()
        started: list[tuple[str, list[tuple[str, str]]]] = []
        written: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: t.Any = None) -> t.Callable[[bytes], None]:
            if exc_info is not None and reply.streamed:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [(status, headers)]
            return written.append

        try:
            result = self.app(environ, start_response)
        except Exception:
            log.exception("error in %s %s", environ["REQUEST_METHOD"], environ["RAW_URI"])
            return _failure(reply)
        if not started:
            _close(result)
            log.error("no response for %s %s", environ["REQUEST_METHOD"], environ["RAW_URI"])
            return _failure(reply)
        reply.status, reply.headers, length = _status_and_headers(*started[0])
        if isinstance(result, FileBody):
            reply.chunks = written
            reply.file = result
            reply.left = length
            if length != 0:
                first = result.handle.read(FILE_BLOCK if length < 0 else min(FILE_BLOCK, length))
                reply.chunks.append(first)
                reply.left = -1 if length < 0 else length - len(first)
            if reply.left == 0:
                result.close()
                reply.file = None
            return reply
        try:
            self._collect(result, written, reply, loop, send, inline)
        except Exception:
            if reply.streamed:
                raise
            log.exception("error in %s %s", environ["REQUEST_METHOD"], environ["RAW_URI"])
            return _failure(reply)
        finally:
            _close(result)
        return reply

    def _collect(self, result: t.Iterable[bytes], written: list[bytes], reply: _Reply,
                 loop: asyncio.AbstractEventLoop, send: Send, inline: bool) -> None:
        """Gather a small body; past COLLECT_LIMIT, stream it to the client from the thread."""
        chunks = written
        size = sum(len(c) for c in chunks)

        def push(message: Message) -> None:
            asyncio.run_coroutine_threadsafe(send(message), loop).result()

        for chunk in result:
            if not chunk:
                continue
            if reply.streamed:
                push({"type": "http.response.body", "body": chunk, "more_body": True})
                continue
            chunks.append(chunk)
            size += len(chunk)
            if size > COLLECT_LIMIT and not inline:
                reply.streamed = True
                push({"type": "http.response.start", "status": reply.status,
                      "headers": reply.headers})
                push({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
                chunks = []
        if reply.streamed:
            push({"type": "http.response.body", "body": b""})
        else:
            reply.chunks = chunks


def _close(result: t.Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _failure(reply: _Reply) -> _Reply:
    reply.status = 500
    reply.headers = [(b"content-type", b"text/plain; charset=utf-8"),
                     (b"content-length", b"22")]
    reply.chunks = [b"Internal Server Error\n"]
    reply.file = None
    return reply
