"""In-process, table-driven tests of the small pure parts: routes, ranges, negotiation,
settings, the multipart parser and the login buckets."""

from __future__ import annotations

import io
import time

import pytest
from support import file_field, form_field

from pypibox import files, multipart, simple_api
from pypibox.messages import Refusal, Request, Response, plain
from pypibox.ratelimit import Buckets, LoginLimiter
from pypibox.routes import RouteTable, route
from pypibox.settings import ConfigError, Settings


# -- the route table ----------------------------------------------------------------------
def _named(name: str):
    def handler(req: Request) -> Response:
        return plain(200, name)
    handler.__name__ = name
    return handler


TABLE = RouteTable([
    route("GET", "/health", _named("health")),
    route("GET", "/", _named("front")),
    route("POST", "/", _named("upload"), action="update"),
    route("GET", "/simple/", _named("root")),
    route("GET", "/simple/{project}/", _named("project")),
    route("GET", "/packages/{path:.+}", _named("file")),
    route("GET", "/{project}/", _named("shortcut")),
])

ROUTE_CASES = [
    # method, path, handler name or status, captures
    ("GET", "/health", "health", {}),
    ("HEAD", "/health", "health", {}),
    ("GET", "/", "front", {}),
    ("POST", "/", "upload", {}),
    ("GET", "/simple/", "root", {}),
    ("GET", "/simple/Foo.Bar/", "project", {"project": "Foo.Bar"}),
    ("GET", "/packages/a/b-1.0.tar.gz", "file", {"path": "a/b-1.0.tar.gz"}),
    ("GET", "/foo/", "shortcut", {"project": "foo"}),
    ("GET", "/simple/a/b/", 404, {}),
    ("GET", "/nothing/here/at/all", 404, {}),
    ("PUT", "/", 405, {}),
    ("DELETE", "/simple/x/", 405, {}),
    ("POST", "/health", 405, {}),
]


@pytest.mark.parametrize("method,path,expected,params", ROUTE_CASES,
                         ids=[f"{c[0]} {c[1]}" for c in ROUTE_CASES])
def test_route_table(method, path, expected, params):
    req = Request(method, path, "", {}, "127.0.0.1")
    if isinstance(expected, int):
        with pytest.raises(Refusal) as caught:
            TABLE.match(req)
        assert caught.value.status == expected
        if expected == 405:
            assert dict(caught.value.headers)["Allow"]
        return
    found = TABLE.match(req)
    assert found.handler.__name__ == expected
    assert req.params == params


def test_get_routes_answer_head_and_a_route_is_one_entry():
    entry = route("GET", "/x/{name}", _named("x"))
    assert entry.methods == {"GET", "HEAD"}
    assert RouteTable([entry]).match(Request("HEAD", "/x/y", "", {}, "")) is entry


# -- byte ranges --------------------------------------------------------------------------
RANGE_CASES = [
    (None, 100, None),
    ("bytes=0-9", 100, (0, 9)),
    ("bytes=90-", 100, (90, 99)),
    ("bytes=-10", 100, (90, 99)),
    ("bytes=-200", 100, (0, 99)),
    ("bytes=50-500", 100, (50, 99)),
    ("bytes=100-", 100, "unsatisfiable"),
    ("bytes=-0", 100, "unsatisfiable"),
    ("bytes=9-0", 100, None),
    ("bytes=0-1,5-6", 100, None),
    ("items=0-1", 100, None),
    ("bytes=-", 100, None),
    ("bytes=0-0", 0, "unsatisfiable"),
    ("  BYTES=3 - 4 ", 100, (3, 4)),
    ("bytes = 3-4", 100, None),
]


@pytest.mark.parametrize("header,size,expected", RANGE_CASES)
def test_parse_range(header, size, expected):
    assert files.parse_range(header, size) == expected


ETAG_CASES = [
    (None, '"a"', False), ("*", '"a"', True), ('"a"', '"a"', True), ('W/"a"', '"a"', True),
    ('"b", "a"', '"a"', True), ('"b"', '"a"', False),
]


@pytest.mark.parametrize("header,etag,expected", ETAG_CASES)
def test_etag_matches(header, etag, expected):
    assert files.etag_matches(header, etag) is expected


# -- content negotiation ------------------------------------------------------------------
JSON, V1, HTML = simple_api.JSON, simple_api.V1_HTML, simple_api.TEXT_HTML
NEGOTIATION_CASES = [
    (None, HTML),
    ("", HTML),
    ("*/*", HTML),
    ("text/html", HTML),
    (JSON, JSON),
    (f"{JSON}, {V1};q=0.2, {HTML};q=0.01", JSON),      # what pip sends
    (f"{V1}, {JSON};q=0.5", V1),
    ("application/vnd.pypi.simple.latest+json", JSON),
    ("application/*", JSON),
    ("image/png", None),
    (f"{JSON};q=0", None),
    (f"{JSON};q=oops, text/html", HTML),
]


@pytest.mark.parametrize("accept,expected", NEGOTIATION_CASES)
def test_negotiate(accept, expected):
    assert simple_api.negotiate(accept) == expected


# -- settings -----------------------------------------------------------------------------
def test_settings_defaults():
    s = Settings.from_env({})
    assert (s.port, s.workers, s.threads, s.max_uploads) == (8080, 2, 8, 8)
    assert (s.header_timeout, s.keepalive_timeout, s.body_timeout) == (20.0, 15.0, 10.0)
    assert s.max_connections == 1000 and s.auth_rate == 2.0
    assert s.authenticate == ("update",) and s.max_upload_size == 100 << 20


SETTING_CASES = [
    ("PYPI_HEADER_TIMEOUT", "2.5", "header_timeout", 2.5),
    ("PYPI_HEADER_TIMEOUT", "30s", "header_timeout", 30.0),
    ("PYPI_KEEPALIVE_TIMEOUT", "0.5", "keepalive_timeout", 0.5),
    ("PYPI_MAX_UPLOAD_SIZE", "2G", "max_upload_size", 2 << 30),
    ("PYPI_MAX_UPLOAD_SIZE", "512k", "max_upload_size", 512 << 10),
    ("PYPI_AUTHENTICATE", "list, update", "authenticate", ("update", "list")),
    ("PYPI_OVERWRITE", "yes", "overwrite", True),
    ("PYPI_AUTH_RATE", "0.5", "auth_rate", 0.5),
]


@pytest.mark.parametrize("name,raw,attr,value", SETTING_CASES)
def test_settings_values(name, raw, attr, value):
    assert getattr(Settings.from_env({name: raw}), attr) == value


BAD_SETTINGS = [
    ("PYPI_HEADER_TIMEOUT", "soon"), ("PYPI_HEADER_TIMEOUT", "0"), ("PYPI_HEADER_TIMEOUT", "nan"),
    ("PYPI_BODY_TIMEOUT", "-1"), ("PYPI_MAX_CONNECTIONS", "3"), ("PYPI_MAX_UPLOADS", "0"),
    ("PYPI_AUTH_RATE", "0"), ("PYPI_MAX_UPLOAD_SIZE", "0"), ("PYPI_AUTHENTICATE", "list"),
    ("PYPI_PORT", "70000"), ("PYPI_FALLBACK_URL", "ftp://x/"),
]


@pytest.mark.parametrize("name,raw", BAD_SETTINGS)
def test_bad_settings_name_the_variable(name, raw):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: raw})
    assert name in str(caught.value)


# -- the multipart parser -----------------------------------------------------------------
B = b"bNd"


def _part(name: str, value: bytes, filename: str | None = None, eol: bytes = b"\r\n") -> bytes:
    if filename:
        return file_field(filename, value, name, B, eol, ctype=None)
    return form_field(name, value, B, eol)


def _parse(body: bytes, step: int = 7) -> tuple[multipart.Form, bytes]:
    sink = io.BytesIO()
    parser = multipart.FormParser(B, lambda filename: sink)
    for i in range(0, len(body), step):
        parser.feed(body[i:i + step])
    return parser.finish(), sink.getvalue()


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "lf"])
@pytest.mark.parametrize("step", [1, 3, 64, 100000])
def test_multipart_fields_file_and_line_ends(eol, step):
    content = bytes(range(256)) * 40 + b"\r\n--bN"  # almost a boundary, inside the file
    body = (_part(":action", b"file_upload", eol=eol)
            + _part("description", b"x" * 200_000, eol=eol)
            + _part("content", content, "a-1.0.tar.gz", eol=eol)
            + b"--" + B + b"--" + eol)
    form, data = _parse(body, step)
    assert form.get(":action") == "file_upload"
    assert "description" not in form.fields  # dropped, not kept
    assert data == content and form.filename == "a-1.0.tar.gz" and form.parts == 3


MULTIPART_REFUSALS = [
    (b"", "empty"),
    (_part(":action", b"x"), "no closing boundary"),
    (_part(":action", b"x" * (multipart.MAX_FIELD + 1)) + b"--" + B + b"--", "larger than"),
    (b"".join(_part(f"f{i}", b"") for i in range(multipart.MAX_PARTS + 1)), "more than"),
    (_part("content", b"1", "a.whl") + _part("content", b"2", "b.whl"), "more than one"),
    (_part(":action", b"\xff\xfe") + b"--" + B + b"--", "not UTF-8"),
    (b"--" + B + b"XX", "malformed"),
    (b"no boundary here at all " * 1000, "does not start"),
]


@pytest.mark.parametrize("body,reason", MULTIPART_REFUSALS)
def test_multipart_refusals(body, reason):
    with pytest.raises(Refusal) as caught:
        _parse(body, 1000)
    assert caught.value.status == 400 and reason in caught.value.reason


BOUNDARY_CASES = [
    ("multipart/form-data; boundary=abc", b"abc"),
    ('multipart/form-data; boundary="a b"', b"a b"),
    ("Multipart/Form-Data; charset=utf-8; boundary=x1", b"x1"),
]


@pytest.mark.parametrize("value,boundary", BOUNDARY_CASES)
def test_boundary_of(value, boundary):
    assert multipart.boundary_of(value) == boundary


@pytest.mark.parametrize("value", ["multipart/form-data", "application/json", ""])
def test_boundary_missing_is_400(value):
    with pytest.raises(Refusal) as caught:
        multipart.boundary_of(value)
    assert caught.value.status == 400


# -- login buckets ------------------------------------------------------------------------
def test_buckets_refill_and_refund():
    # A slow refill (one every 100 s): no stall of a loaded machine refills it mid-test.
    buckets = Buckets(rate=0.01, burst=3.0)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0.0  # another key has its own bucket
    buckets.give_back("a")
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    fast = Buckets(rate=10.0, burst=1.0)
    assert fast.take("a") == 0.0          # empty now: only a refill lets the next one in
    time.sleep(0.15)
    assert fast.take("a") == 0.0


def test_buckets_are_bounded():
    buckets = Buckets(rate=1.0, burst=1.0, max_keys=100)
    for i in range(1000):
        buckets.take(f"k{i}")
    assert len(buckets._state) == 100


def test_login_limiter_by_address_and_by_user():
    limiter = LoginLimiter(rate=1.0)   # burst 5
    for i in range(5):
        assert limiter.take("10.0.0.1", f"user{i}") == 0
    assert limiter.take("10.0.0.1", "someone") >= 1      # the address is spent
    for i in range(5):
        assert limiter.take(f"10.0.1.{i}", "alice") == 0
    assert limiter.take("10.0.2.1", "alice") >= 1         # alice's name is spent
    limiter.succeeded("10.0.2.1", "alice")
    assert limiter.take("10.0.2.1", "alice") == 0        # a success gives back
