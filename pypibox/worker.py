"""gunicorn's asyncio (ASGI) worker, with the reason phrases our error responses carry.

twine and ``setup.py upload`` show a failed upload's reason phrase ("400 File already
exists: ..."), and an ASGI response has only a status code. The app puts its phrase in a
private header (``bridge.REASON_HEADER``); the protocol here moves it into the status line.
"""

from __future__ import annotations

import typing as t

from gunicorn.asgi import protocol as _protocol
from gunicorn.workers import gasgi

from .bridge import REASON_HEADER

_SAFE = bytes(range(0x20, 0x7F))


def _reason_text(value: bytes) -> bytes:
    """The phrase as printable ASCII: it goes into the status line as it is."""
    return bytes(c if c in _SAFE else 0x3F for c in value[:200])


class ReasonPhraseProtocol(_protocol.ASGIProtocol):  # type: ignore[misc]
    """gunicorn's HTTP/1.1 protocol; a response with REASON_HEADER gets that reason phrase.

    A client that half-closes its side while its request body is being read still gets
    the answer (an error saying the body ended early), as from gunicorn's WSGI workers.
    """

    def eof_received(self) -> bool | None:
        receiver = self._body_receiver
        if receiver is None:
            return None  # between requests: close, as gunicorn does
        receiver.signal_disconnect()
        return True  # keep our side open for the reply

    def _send_response_start(self, status: int, headers: t.Any, request: t.Any,
                             close: bool = False) -> None:
        reason = None
        for name, value in headers:
            if name == REASON_HEADER:
                reason = value
                break
        if reason is None:
            super()._send_response_start(status, headers, request, close)
            return
        headers = [(n, v) for n, v in headers if n != REASON_HEADER]
        super()._send_response_start(status, headers, request, close)
        version = request.version
        standard = _protocol._get_cached_status_line(version, status)
        buffered = self._response_buffer
        if buffered.startswith(standard):
            line = b"HTTP/%d.%d %d %s\r\n" % (version[0], version[1], status,
                                               _reason_text(reason))
            self._response_buffer = line + buffered[len(standard):]


class Worker(gasgi.ASGIWorker):  # type: ignore[misc]
    """gunicorn's ASGI worker serving connections with ReasonPhraseProtocol."""

    def init_process(self) -> None:
        # gasgi builds each connection's protocol from its module-level name.
        gasgi.ASGIProtocol = ReasonPhraseProtocol
        super().init_process()
