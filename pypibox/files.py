"""HTTP responses for stored bytes: conditional requests, ranges, HEAD and sendfile."""

from __future__ import annotations

import email.utils
import os
import re
import typing as t

Environ = dict[str, t.Any]
StartResponse = t.Callable[..., t.Any]
Headers = list[tuple[str, str]]

BLOCK = 1 << 16
_RANGE = re.compile(r"^bytes=\s*(\d*)\s*-\s*(\d*)\s*$", re.I)


def etag_matches(header: str | None, etag: str) -> bool:
    """True if an If-None-Match header names ``etag`` (weak comparison) or is ``*``."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(first, last) of a single byte range; None to send everything; "unsatisfiable"."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match:
        return None  # several ranges or another unit: answering with the whole file is allowed
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return (max(0, size - length), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored, as RFC 9110 says
    if start >= size:
        return "unsatisfiable"
    end = int(last) if last else size - 1
    return (start, min(end, size - 1))


def send_bytes(environ: Environ, start_response: StartResponse, body: bytes, etag: str,
               content_type: str, extra: Headers | None = None) -> t.Iterable[bytes]:
    """A small in-memory body with an ETag, answering If-None-Match with 304."""
    headers: Headers = [("ETag", etag)] + (extra or [])
    if etag_matches(environ.get("HTTP_IF_NONE_MATCH"), etag):
        start_response("304 Not Modified", headers)
        return []
    headers += [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    start_response("200 OK", headers)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


class _Limited:
    """Iterates at most ``length`` bytes of an open file, then closes it."""

    def __init__(self, handle: t.BinaryIO, length: int) -> None:
        self.handle = handle
        self.left = length

    def __iter__(self) -> t.Iterator[bytes]:
        while self.left > 0:
            data = self.handle.read(min(BLOCK, self.left))
            if not data:
                break
            self.left -= len(data)
            yield data

    def close(self) -> None:
        self.handle.close()


def send_file(environ: Environ, start_response: StartResponse, path: str, etag: str | None,
              content_type: str = "application/octet-stream") -> t.Iterable[bytes] | None:
    """Serve a file from disk with ranges and conditionals; None if it cannot be opened."""
    try:
        handle = open(path, "rb")
    except OSError:
        return None
    try:
        st = os.fstat(handle.fileno())
        size = st.st_size
        tag = etag or f'"{size:x}-{st.st_mtime_ns:x}"'
        headers: Headers = [("ETag", tag), ("Accept-Ranges", "bytes"),
                            ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))]
        if etag_matches(environ.get("HTTP_IF_NONE_MATCH"), tag):
            handle.close()
            start_response("304 Not Modified", headers)
            return []
        wanted = parse_range(environ.get("HTTP_RANGE"), size)
        if_range = environ.get("HTTP_IF_RANGE")
        if wanted is not None and if_range and if_range.strip() != tag:
            wanted = None  # the client's copy is another version: send the whole file
        if wanted == "unsatisfiable":
            handle.close()
            start_response("416 Range Not Satisfiable",
                           headers + [("Content-Range", f"bytes */{size}"),
                                      ("Content-Length", "0")])
            return []
        if isinstance(wanted, tuple):
            first, last = wanted
            length = last - first + 1
            status = "206 Partial Content"
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        else:
            first, length, status = 0, size, "200 OK"
        headers += [("Content-Type", content_type), ("Content-Length", str(length))]
        start_response(status, headers)
        if environ.get("REQUEST_METHOD") == "HEAD":
            handle.close()
            return []
        if first:
            handle.seek(first)
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is not None:
            return wrapper(handle, BLOCK)  # gunicorn sends Content-Length bytes by sendfile
        return _Limited(handle, length)
    except BaseException:
        handle.close()
        raise
