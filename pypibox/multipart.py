"""A streaming, bounded parser of ``multipart/form-data`` upload forms.

The event loop feeds it the request body as it arrives. The distribution file (the
``content`` part) goes straight into one sink (a temporary file); the few small fields the
write path needs are kept in memory; every other part (twine sends its metadata as fields,
some of them large) is counted and thrown away. Nothing here buffers more than a part's
headers plus one block.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass, field

from .messages import Refusal

#: Parts a form may have: twine sends one field per classifier and requirement.
MAX_PARTS = 1000
#: Bytes of a kept field (``:action``, ``name`` ...) and of a detached signature.
MAX_FIELD = 64 << 10
#: Bytes of one part's headers.
MAX_PART_HEADERS = 8 << 10
#: Fields the write path reads; other fields are counted and dropped as they arrive.
KEPT_FIELDS = frozenset({":action", "name", "version", "sha256_digest", "md5_digest",
                         "filetype", "reason", "status", "user", "role", "filename"})
FILE_PART = "content"
SIGNATURE_PART = "gpg_signature"

_PARAM = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_BOUNDARY = re.compile(
    r'(?i)^multipart/form-data\s*;.*?\bboundary\s*=\s*("[^"]{1,200}"|[^;\s]{1,200})')


class Sink(t.Protocol):
    """Where the content part's bytes go."""

    def write(self, data: bytes) -> t.Any: ...


@dataclass
class Form:
    """What a parsed form holds."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    filename: str | None = None        # of the content part
    size: int = 0                      # bytes of the content part
    signature: tuple[str, bytes] | None = None
    parts: int = 0
    complete: bool = False

    def get(self, name: str) -> str | None:
        """The first value of a kept field."""
        values = self.fields.get(name)
        return values[0] if values else None


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; Refusal 400 if there is none."""
    match = _BOUNDARY.match(content_type.strip())
    if not match:
        if content_type.lower().startswith("multipart/form-data"):
            raise Refusal(400, "Bad request: the multipart form has no boundary")
        raise Refusal(400, "Bad request: an upload must be sent as multipart/form-data "
                           f"(got {content_type[:60] or 'no Content-Type'!r})")
    value = match.group(1).strip('"')
    return value.encode("latin-1")


def _disposition(value: str) -> tuple[str | None, str | None]:
    """The name and filename parameters of a Content-Disposition header."""
    if not value.lower().startswith("form-data"):
        return None, None
    params: dict[str, str] = {}
    for key, raw in _PARAM.findall(value):
        raw = raw.strip()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.setdefault(key.lower(), raw)
    return params.get("name"), params.get("filename")


class FormParser:
    """Feed it the body with ``feed``; ``finish`` returns the Form or refuses the request.

    ``open_file(filename)`` is called when the content part starts and returns the sink for
    its bytes; it may raise Refusal (a bad file name) to stop the upload early.
    """

    _PREAMBLE, _DELIMITER, _HEADERS, _DATA, _DONE = range(5)

    def __init__(self, boundary: bytes, open_file: t.Callable[[str], Sink]) -> None:
        # LF, not CRLF: distutils' `register` ends its lines with a bare LF. A CR before
        # the LF belongs to the line end and is taken off the part's data (see _data_end).
        self.delimiter = b"\n--" + boundary
        self.open_file = open_file
        self.form = Form()
        self.buffer = bytearray(b"\n")  # so that the first boundary looks like the others
        self.state = self._PREAMBLE
        self._target: str = "drop"  # "file", "signature", "field" or "drop"
        self._name = ""
        self._value = bytearray()
        self._sink: Sink | None = None
        self._preamble = 0

    # -- feeding -------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Parse the next bytes of the body."""
        if self.state == self._DONE:
            return  # an epilogue after the closing boundary is ignored, as RFC 2046 says
        self.buffer += data
        while self._step():
            pass

    def _step(self) -> bool:
        buf = self.buffer
        if self.state == self._PREAMBLE:
            at = buf.find(self.delimiter)
            if at < 0:
                self._preamble += max(0, len(buf) - len(self.delimiter))
                if self._preamble > MAX_PART_HEADERS:
                    raise Refusal(400, "Bad request: the form data does not start with its "
                                       "boundary")
                del buf[: max(0, len(buf) - len(self.delimiter))]
                return False
            return self._after_delimiter(at)
        if self.state == self._DELIMITER:
            return self._delimiter_end()
        if self.state == self._HEADERS:
            found = _BLANK_LINE.search(buf)
            if found is None:
                if len(buf) > MAX_PART_HEADERS:
                    raise Refusal(400, "Bad request: a form part's headers are too long")
                return False
            self._start_part(bytes(buf[: found.start()]))
            del buf[: found.end()]
            self.state = self._DATA
            return True
        if self.state == self._DATA:
            at = buf.find(self.delimiter)
            if at < 0:
                keep = len(self.delimiter)  # a delimiter may begin here, with its CR
                if len(buf) > keep:
                    self._part_data(bytes(buf[: len(buf) - keep]))
                    del buf[: len(buf) - keep]
                return False
            end = at - 1 if at and buf[at - 1] == 0x0D else at
            self._part_data(bytes(buf[:end]))
            self._end_part()
            return self._after_delimiter(at)
        return False

    def _after_delimiter(self, at: int) -> bool:
        """Drop what comes before and including the delimiter found at ``at``."""
        del self.buffer[: at + len(self.delimiter)]
        self.state = self._DELIMITER
        return True

    def _delimiter_end(self) -> bool:
        """After a delimiter: ``--`` closes the form, a line end starts the next part."""
        if len(self.buffer) < 2:
            return False
        tail = bytes(self.buffer[:2])
        if tail == b"--":
            self.state = self._DONE
            self.form.complete = True
            self.buffer.clear()
            return False
        if tail == b"\r\n":
            del self.buffer[:2]
        elif tail[:1] == b"\n":
            del self.buffer[:1]
        else:
            raise Refusal(400, "Bad request: malformed multipart boundary line")
        self.state = self._HEADERS
        return True

    # -- parts ---------------------------------------------------------------------------------
    def _start_part(self, raw: bytes) -> None:
        form = self.form
        form.parts += 1
        if form.parts > MAX_PARTS:
            raise Refusal(400, f"Bad request: the form has more than {MAX_PARTS} parts")
        name = filename = None
        for line in re.split(r"\r?\n", raw.decode("utf-8", "surrogateescape")):
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == "content-disposition":
                name, filename = _disposition(value.strip())
        self._name = name or ""
        self._value = bytearray()
        if filename is not None and self._name == FILE_PART:
            if form.filename is not None:
                raise Refusal(400, "Bad request: the form has more than one 'content' file")
            form.filename = filename
            self._sink = self.open_file(filename)
            self._target = "file"
        elif filename is not None and self._name == SIGNATURE_PART:
            if form.signature is not None:
                raise Refusal(400, "Bad request: the form has more than one signature")
            self._target = "signature"
            form.signature = (filename, b"")
        elif filename is None and self._name in KEPT_FIELDS:
            self._target = "field"
        else:
            self._target = "drop"

    def _part_data(self, data: bytes) -> None:
        if not data or self._target == "drop":
            return
        if self._target == "file":
            assert self._sink is not None
            self._sink.write(data)
            self.form.size += len(data)
            return
        self._value += data
        if len(self._value) > MAX_FIELD:
            raise Refusal(400, f"Bad request: the form field {self._name[:40]!r} is larger "
                               f"than {MAX_FIELD} bytes")

    def _end_part(self) -> None:
        form = self.form
        if self._target == "field":
            try:
                text = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise Refusal(400, f"Bad request: the form field {self._name[:40]!r} is not "
                                   "UTF-8") from None
            form.fields.setdefault(self._name, []).append(text)
        elif self._target == "signature" and form.signature is not None:
            form.signature = (form.signature[0], bytes(self._value))
        self._target = "drop"
        self._sink = None

    def finish(self) -> Form:
        """The whole body was fed: the form, or Refusal 400 if it did not end properly."""
        if self.state == self._PREAMBLE and self.form.parts == 0:
            raise Refusal(400, "Bad request: the form data is empty")
        if not self.form.complete:
            raise Refusal(400, "Upload incomplete: the form data has no closing boundary; "
                               "nothing was stored")
        return self.form
