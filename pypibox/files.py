"""Responses for stored bytes: conditional requests, ranges and HEAD."""

from __future__ import annotations

import email.utils
import os
import re

from .messages import FileBody, Headers, Request, Response, plain

_RANGE = re.compile(r"^bytes=\s*(\d*)\s*-\s*(\d*)\s*$", re.I)
#: How long a client may keep a stored file without asking again: files never change.
IMMUTABLE = "max-age=31536000, immutable"
#: Index pages change with every upload: a client revalidates (ETag) before each use.
REVALIDATE = "no-cache"


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


def send_bytes(req: Request, body: bytes, etag: str, content_type: str,
               extra: Headers | None = None) -> Response:
    """A small in-memory body with an ETag, answering If-None-Match with 304."""
    headers: Headers = [("ETag", etag)] + (extra or [])
    if etag_matches(req.headers.get("if-none-match"), etag):
        return Response(304, b"", headers)
    headers.append(("Content-Type", content_type))
    return Response(200, body, headers)


def send_file(req: Request, path: str, cache_control: str,
              content_type: str = "application/octet-stream") -> Response | None:
    """A file from disk with ranges and conditionals; None if it cannot be opened."""
    try:
        handle = open(path, "rb")
    except OSError:
        return None
    try:
        st = os.fstat(handle.fileno())
        size = st.st_size
        tag = f'"{size:x}-{st.st_mtime_ns:x}"'
        headers: Headers = [("ETag", tag), ("Accept-Ranges", "bytes"),
                            ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True)),
                            ("Cache-Control", cache_control)]
        if etag_matches(req.headers.get("if-none-match"), tag):
            handle.close()
            return Response(304, b"", headers)
        wanted = parse_range(req.headers.get("range"), size)
        if_range = req.headers.get("if-range")
        if wanted is not None and if_range and if_range.strip() != tag:
            wanted = None  # the client's copy is another version: send the whole file
        if wanted == "unsatisfiable":
            handle.close()
            refusal = plain(416, f"Range not satisfiable: the file has {size} bytes")
            refusal.headers += headers + [("Content-Range", f"bytes */{size}")]
            return refusal
        status, first, length = 200, 0, size
        if isinstance(wanted, tuple):
            first, last = wanted
            length = last - first + 1
            status = 206
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        headers.append(("Content-Type", content_type))
        if first:
            handle.seek(first)
        return Response(status, FileBody(handle, length), headers)
    except BaseException:
        handle.close()
        raise
