"""What handlers take and give back: a Request, a Response, or a Refusal."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs

Headers = list[tuple[str, str]]
#: The standard reason phrase of each status code.
PHRASES: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
PLAIN = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who makes a request: an account, an account through one of its tokens, or the CLI.

    ``scope`` is the set of (normalised) projects a token is limited to; None means every
    project its user may act on. ``operator`` is the command line on the server's own
    volumes, which may do anything.
    """

    user: str
    token: str | None = None
    scope: frozenset[str] | None = None
    operator: bool = False

    @classmethod
    def cli(cls, name: str) -> Identity:
        """The command line, acting for the person ``name``."""
        return cls(user="cli:" + (name or "unknown"), operator=True)

    @property
    def actor(self) -> str:
        """The name the audit trail records: ``alice``, ``token:ci-web`` or ``cli:alice``."""
        return f"token:{self.token}" if self.token else self.user


@dataclass(eq=False, slots=True)
class FileBody:
    """An open file to send: ``length`` bytes from its current position; closed when sent."""

    handle: t.BinaryIO
    length: int

    def close(self) -> None:
        """Close the file."""
        self.handle.close()


Body = bytes | FileBody | t.Iterator[bytes]


@dataclass(eq=False, slots=True)
class Response:
    """A status, headers and a body: bytes, a file, or chunks produced as they are sent."""

    status: int
    body: Body = b""
    headers: Headers = field(default_factory=list)
    reason: str | None = None  # None: the standard phrase of ``status``

    def status_line_reason(self) -> str:
        """The reason phrase, printable ASCII only (it goes into the status line as is)."""
        text = self.reason if self.reason is not None else PHRASES.get(self.status, "Unknown")
        return "".join(c if " " <= c <= "~" else "?" for c in text[:200])


class Refusal(Exception):
    """A request that is not done: ``status`` with a one-line ``reason`` the user can act on.

    Rendered once, by ``plain``: the same reason in the status line and, as the body, in
    plain text.
    """

    def __init__(self, status: int, reason: str, headers: Headers | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = " ".join(reason.split())  # one line
        self.headers = headers or []

    def response(self) -> Response:
        """The refusal as a response."""
        return plain(self.status, self.reason, self.headers)


def plain(status: int, text: str, headers: Headers | None = None) -> Response:
    """A one-line ``text/plain`` answer whose reason phrase is the same line."""
    line = " ".join(text.split())
    return Response(status, (line + "\n").encode("utf-8"),
                    [("Content-Type", PLAIN)] + (headers or []), reason=line)


def moved(location: str) -> Response:
    """A 301 to ``location`` (a canonical name, a trailing slash), said in the body too."""
    return plain(301, f"Moved permanently: see {location}", [("Location", location)])


@dataclass(eq=False, slots=True)
class Request:
    """One HTTP request as the route table sees it (the body, if any, is read by the server)."""

    method: str
    path: str                     # percent-decoded, UTF-8
    query_string: str
    headers: dict[str, str]       # lower-case names; repeated headers joined with ","
    client: str                   # the peer's address
    scheme: str = "http"
    version: str = "1.1"
    params: dict[str, str] = field(default_factory=dict)   # what the route's pattern captured
    identity: Identity | None = None
    form: t.Any = None            # the parsed upload form (writepath), for POST /
    upload: t.Any = None          # where the form's file part went (writepath.Receiver)
    _query: dict[str, list[str]] | None = None

    @property
    def head(self) -> bool:
        """True for HEAD: the answer has headers only."""
        return self.method == "HEAD"

    @property
    def host(self) -> str:
        """The Host header, or the local address when there is none."""
        return self.headers.get("host") or "localhost"

    @property
    def url_root(self) -> str:
        """This server's address as the client used it, ending in ``/``."""
        return f"{self.scheme}://{self.host}/"

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string's parameters."""
        if self._query is None:
            try:
                self._query = parse_qs(self.query_string, max_num_fields=32)
            except ValueError:
                raise Refusal(400, "Bad request: too many query parameters") from None
        return self._query

    def arg(self, name: str, default: str = "") -> str:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default
