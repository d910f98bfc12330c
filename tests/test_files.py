"""File downloads from /packages/: ranges, conditional requests, HEAD, and no way out."""

from __future__ import annotations

import http.client as httpclient
import os

import pytest
from conftest import PASSWORD, basic, http
from pkgfactory import make_sdist, make_wheel


@pytest.fixture
def served(server_factory):
    """A server (no fallback) with one ~200 KB wheel; yields (server, wheel path, bytes)."""
    srv = server_factory(PYPI_FALLBACK="off")
    wheel = make_wheel(srv.packages, "ranged", "1.0", payload=os.urandom(200_000))
    return srv, wheel, wheel.read_bytes()


def test_whole_file_with_length_etag_and_accept_ranges(served):
    srv, wheel, data = served
    resp = srv.get(f"/packages/{wheel.name}")
    assert resp.status == 200 and resp.body == data
    assert resp.headers["content-length"] == str(len(data))
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["etag"].startswith('"')
    assert "last-modified" in resp.headers


def test_head_has_the_headers_and_no_body(served):
    srv, wheel, data = served
    resp = http("HEAD", f"{srv.url}/packages/{wheel.name}")
    assert resp.status == 200 and resp.body == b""
    assert resp.headers["content-length"] == str(len(data))
    assert resp.headers["accept-ranges"] == "bytes"
    meta = http("HEAD", f"{srv.url}/packages/{wheel.name}.metadata")
    assert meta.status == 200 and meta.body == b"" and int(meta.headers["content-length"]) > 0


@pytest.mark.parametrize("header, first, last", [
    ("bytes=0-99", 0, 99),
    ("bytes=1000-1999", 1000, 1999),
    ("bytes=150000-", 150000, None),
    ("bytes=-500", -500, None),
    ("bytes=199000-999999999", 199000, None),   # an end past the file is cut at its end
])
def test_single_ranges_are_206_with_the_same_slice(served, header, first, last):
    srv, wheel, data = served
    resp = srv.get(f"/packages/{wheel.name}", headers={"Range": header})
    expected = data[first:] if last is None else data[first:last + 1]
    assert resp.status == 206
    assert resp.body == expected
    start = first if first >= 0 else len(data) + first
    assert resp.headers["content-range"] == f"bytes {start}-{start + len(expected) - 1}/{len(data)}"
    assert resp.headers["content-length"] == str(len(expected))


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=-0"])
def test_unsatisfiable_range_is_416(served, header):
    srv, wheel, data = served
    resp = srv.get(f"/packages/{wheel.name}", headers={"Range": header})
    assert resp.status == 416
    assert resp.headers["content-range"] == f"bytes */{len(data)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "lines=1-2", "bytes=9-2", "garbage"])
def test_other_range_headers_get_the_whole_file(served, header):
    srv, wheel, data = served
    resp = srv.get(f"/packages/{wheel.name}", headers={"Range": header})
    assert resp.status == 200 and resp.body == data


def test_if_range_with_another_etag_sends_everything(served):
    srv, wheel, data = served
    etag = srv.get(f"/packages/{wheel.name}").headers["etag"]
    same = srv.get(f"/packages/{wheel.name}", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert same.status == 206 and same.body == data[:10]
    other = srv.get(f"/packages/{wheel.name}", headers={"Range": "bytes=0-9", "If-Range": '"x"'})
    assert other.status == 200 and other.body == data


def test_if_none_match_gives_304_for_files_and_metadata(served):
    srv, wheel, data = served
    for path in (f"/packages/{wheel.name}", f"/packages/{wheel.name}.metadata"):
        etag = srv.get(path).headers["etag"]
        resp = srv.get(path, headers={"If-None-Match": etag})
        assert resp.status == 304 and resp.body == b""
        assert srv.get(path, headers={"If-None-Match": f'"nope", {etag}'}).status == 304
        assert srv.get(path, headers={"If-None-Match": '"nope"'}).status == 200


def test_a_replaced_file_gets_a_new_etag(server_factory, tmp_path):
    srv = server_factory(PYPI_FALLBACK="off", PYPI_OVERWRITE="on")
    sdist = make_sdist(srv.packages, "changing", "1.0")
    etag = srv.get(f"/packages/{sdist.name}").headers["etag"]
    other = make_sdist(tmp_path, "changing", "1.0", payload=b"new content")
    os.replace(other, sdist)
    resp = srv.get(f"/packages/{sdist.name}", headers={"If-None-Match": etag})
    assert resp.status == 200 and resp.body == sdist.read_bytes()


def raw_get(srv, path: str) -> tuple[int, bytes]:
    """Send ``path`` byte for byte (no client-side normalisation of ../ or %2f)."""
    conn = httpclient.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_paths_cannot_leave_the_packages_directory(served):
    srv, wheel, data = served
    secret = srv.packages.parent / "secret-1.0.tar.gz"
    secret.write_bytes(b"outside the packages directory")
    (srv.packages / "sub").mkdir()
    make_wheel(srv.packages / "sub", "inner", "1.0")
    hidden = srv.packages / ".hidden-1.0.tar.gz"
    hidden.write_bytes(b"a dot file")
    attempts = [
        "/packages/../secret-1.0.tar.gz",
        "/packages/..%2fsecret-1.0.tar.gz",
        "/packages/..%2Fsecret-1.0.tar.gz",
        "/packages/%2e%2e/secret-1.0.tar.gz",
        "/packages/sub/../../secret-1.0.tar.gz",
        "/packages/sub%2f..%2f..%2fsecret-1.0.tar.gz",
        "/packages/..\\secret-1.0.tar.gz",
        "/packages/..%5csecret-1.0.tar.gz",
        f"/packages/{srv.packages.parent}/secret-1.0.tar.gz",
        "/packages//etc/passwd",
        "/packages/%2fetc%2fpasswd",
        f"/packages/{wheel.name}%00",
        "/packages/.hidden-1.0.tar.gz",
        "/packages/.pypibox/stamp",
        "/packages/./" + wheel.name,
    ]
    for path in attempts:
        status, body = raw_get(srv, path)
        assert status in (400, 404), (path, status)
        assert b"outside the packages" not in body and b"a dot file" not in body
        assert b"root:" not in body
    assert raw_get(srv, "/packages/sub/inner-1.0-py3-none-any.whl")[0] == 200
    assert "Traceback" not in srv.logtext()


def test_downloads_need_credentials_when_protected(server_factory):
    srv = server_factory(PYPI_AUTHENTICATE="update,download", PYPI_FALLBACK="off")
    wheel = make_wheel(srv.packages, "locked", "1.0")
    path = f"/packages/{wheel.name}"
    no = srv.get(path, headers={"Range": "bytes=0-9"})
    assert no.status == 401 and no.headers["www-authenticate"] == 'Basic realm="pypi"'
    assert http("HEAD", srv.url + path).status == 401
    assert srv.get(path, headers={"Authorization": basic("alice", "bad")}).status == 403
    ok = srv.get(path, headers={"Authorization": basic("alice", PASSWORD), "Range": "bytes=0-9"})
    assert ok.status == 206 and ok.body == wheel.read_bytes()[:10]


def test_unknown_file_is_404(served):
    srv, wheel, data = served
    assert srv.get("/packages/nothing-1.0.tar.gz").status == 404
    assert srv.get("/packages/nothing-1.0.tar.gz.metadata").status == 404


def test_non_ascii_file_name_dropped_by_hand_is_served(server_factory):
    srv = server_factory(PYPI_FALLBACK="off")
    odd = srv.packages / "caf\u00e9-1.0.tar.gz"
    odd.write_bytes(b"not really a tarball")
    resp = srv.get("/packages/caf%C3%A9-1.0.tar.gz")
    assert resp.status == 200 and resp.body == b"not really a tarball"
