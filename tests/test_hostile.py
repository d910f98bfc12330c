"""Hostile input against one running server: every bad request gets a 4xx and leaves no file.

Requests are written byte by byte over raw sockets, so nothing normalises a path, a file name
or a header on the way. After each one the server must still answer /health and the whole
temporary root of the server (packages, accounts, and their parent) must be unchanged.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import socket
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORD, make_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pkgfactory import make_sdist, make_wheel
from support import BOUNDARY as SUPPORT_BOUNDARY
from support import exchange, file_field, twine_upload
from support import form_field as field
from support import join_form as form
from support import raw_request as request

LIMIT = 1 << 20  # PYPI_MAX_UPLOAD_SIZE of the server under attack
BOUNDARY = SUPPORT_BOUNDARY.encode()
AUTH = b"Basic " + base64.b64encode(f"alice:{PASSWORD}".encode())


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """One server for the whole module, with a 1M upload limit."""
    root = tmp_path_factory.mktemp("hostile")
    srv = make_server(root, None, PYPI_MAX_UPLOAD_SIZE="1M", PYPI_FALLBACK="off")
    srv.start()
    srv.root = root
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, bytes]:
    """Real archives to cut, rename and mislabel."""
    d = tmp_path_factory.mktemp("dists")
    return {
        "wheel": make_wheel(d / "w", "victim", "1.0").read_bytes(),
        "other_wheel": make_wheel(d / "o", "other-project", "1.0").read_bytes(),
        "wheel_v2": make_wheel(d / "v", "victim", "2.0").read_bytes(),
        "wheel_payload": make_wheel(d / "p", "victim", "1.0", payload=b"x" * 100_000).read_bytes(),
        "sdist": make_sdist(d / "s", "victim", "1.0").read_bytes(),
        "other_sdist": make_sdist(d / "os", "other-project", "1.0").read_bytes(),
    }


# -- requests (raw HTTP and form builders: tests/support.py) ---------------------------------
def upload(filename: bytes | str, content: bytes, auth: bytes | None = AUTH,
           action: bytes = b"file_upload") -> bytes:
    if isinstance(filename, str):
        filename = filename.encode()
    body = form(field(b":action", action), field(b"name", b"victim"),
                field(b"version", b"1.0"), file_field(filename, content))
    return post(body, auth)


def post(body: bytes, auth: bytes | None = AUTH, ctype: bytes | None = None,
         length: int | None = None, extra: dict[str, bytes | str] | None = None) -> bytes:
    headers: dict[str, bytes | str] = {
        "Content-Type": ctype or b"multipart/form-data; boundary=" + BOUNDARY}
    if auth is not None:
        headers["Authorization"] = auth
    headers.update(extra or {})
    return request("POST", "/", headers, body, length)


def chunked(body: bytes, size: int = 65536) -> bytes:
    out = b"".join(b"%x\r\n" % len(body[i:i + size]) + body[i:i + size] + b"\r\n"
                   for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def gzip_of(data: bytes) -> bytes:
    return gzip.compress(data)


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# -- the table ---------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    build: Callable[[dict[str, bytes]], bytes]
    status: tuple[int, ...] = (400,)
    half_close: bool = False


WHL = "victim-1.0-py3-none-any.whl"
PKG_INFO = b"Metadata-Version: 2.1\nName: victim\nVersion: 1.0\n\n"

CASES = [
    Case("missing-action", lambda d: post(form(file_field(WHL.encode(), d["wheel"])))),
    Case("unknown-action", lambda d: upload(WHL, d["wheel"], action=b"frobnicate")),
    Case("doc-upload-junk", lambda d: upload("docs.zip", b"not a zip", action=b"doc_upload")),
    Case("missing-content", lambda d: post(form(field(b":action", b"file_upload")))),
    Case("content-not-a-file",
         lambda d: post(form(field(b":action", b"file_upload"), field(b"content", d["wheel"])))),
    Case("dotdot-slash", lambda d: upload("../" + WHL, d["wheel"])),
    Case("dotdot-deep", lambda d: upload("../../../tmp/" + WHL, d["wheel"])),
    Case("dotdot-encoded", lambda d: upload("..%2f" + WHL, d["wheel"])),
    Case("absolute-path", lambda d: upload("/tmp/" + WHL, d["wheel"])),
    Case("backslash", lambda d: upload("..\\" + WHL, d["wheel"])),
    Case("nul-in-name", lambda d: upload(b"victim-1.0-py3-none-any.whl\0.txt", d["wheel"])),
    Case("nul-alone", lambda d: upload(b"\0", d["wheel"])),
    Case("newline-in-name", lambda d: upload(b"victim-1.0.tar.gz\n", d["sdist"])),
    Case("dot-dot-name", lambda d: upload("..", d["wheel"])),
    Case("not-a-package-name", lambda d: upload("notes.txt", b"hello")),
    Case("no-version", lambda d: upload("victim.tar.gz", d["sdist"])),
    Case("bad-wheel-name", lambda d: upload("victim-1.0.whl", d["wheel"])),
    Case("invalid-version", lambda d: upload("victim-one-py3-none-any.whl", d["wheel"])),
    Case("300-char-name", lambda d: upload("v" * 270 + "-1.0-py3-none-any.whl", d["wheel"])),
    Case("leading-dot", lambda d: upload(".victim-1.0.tar.gz", d["sdist"])),
    Case("legacy-egg", lambda d: upload("victim-1.0-py3.11.egg", d["wheel"])),
    Case("legacy-bz2", lambda d: upload("victim-1.0.tar.bz2", d["sdist"])),
    Case("wheel-of-other-project", lambda d: upload(WHL, d["other_wheel"])),
    Case("wheel-of-other-version", lambda d: upload(WHL, d["wheel_v2"])),
    Case("sdist-of-other-project", lambda d: upload("victim-1.0.tar.gz", d["other_sdist"])),
    Case("sdist-pkg-info-mismatch", lambda d: upload(
        "victim-1.0.tar.gz", tar_gz({"victim-1.0/PKG-INFO": PKG_INFO.replace(b"1.0", b"9.9")}))),
    Case("wheel-not-a-zip", lambda d: upload(WHL, b"PK\x03\x04 this is not a zip" * 100)),
    Case("wheel-is-a-sdist", lambda d: upload(WHL, d["sdist"])),
    Case("wheel-without-metadata", lambda d: upload(WHL, zip_of({"victim/__init__.py": b""}))),
    Case("wheel-damaged-inside",
         lambda d: upload(WHL, flip(d["wheel_payload"], b"payload.bin", 300))),
    Case("wheel-truncated", lambda d: upload(WHL, d["wheel"][: len(d["wheel"]) // 2])),
    Case("gzip-not-a-tar", lambda d: upload("victim-1.0.tar.gz", gzip_of(b"plain text " * 500))),
    Case("tar-gz-not-gzip", lambda d: upload("victim-1.0.tar.gz", b"\x1f\x8b but not gzip")),
    Case("tar-gz-truncated", lambda d: upload("victim-1.0.tar.gz", d["sdist"][:-40])),
    Case("zip-sdist-not-a-zip", lambda d: upload("victim-1.0.zip", d["sdist"])),
    Case("gzip-bomb", lambda d: upload("victim-1.0.tar.gz", bomb())),
    Case("signature-for-nothing", lambda d: post(form(
        field(b":action", b"file_upload"), file_field(WHL.encode(), d["wheel"]),
        file_field(b"other-1.0.tar.gz.asc", b"-----BEGIN PGP SIGNATURE-----", b"gpg_signature")))),
    Case("empty-body", lambda d: post(b"")),
    Case("json-content-type",
         lambda d: post(b'{":action": "file_upload"}', ctype=b"application/json")),
    Case("urlencoded-upload", lambda d: post(b":action=file_upload&content=x",
                                             ctype=b"application/x-www-form-urlencoded")),
    Case("multipart-without-boundary", lambda d: post(
        form(field(b":action", b"file_upload"), file_field(WHL.encode(), d["wheel"])),
        ctype=b"multipart/form-data")),
    Case("multipart-no-closing-boundary", lambda d: post(
        form(field(b":action", b"file_upload"), file_field(WHL.encode(), d["wheel"]),
             close=False))),
    Case("body-shorter-than-length", lambda d: post(
        form(field(b":action", b"file_upload"), file_field(WHL.encode(), d["wheel"])),
        length=len(d["wheel"]) * 2), half_close=True),
    Case("cut-inside-the-file", lambda d: post(
        form(field(b":action", b"file_upload"),
             file_field(WHL.encode(), d["wheel"]))[: len(d["wheel"]) // 2],
        length=len(d["wheel"]) + 400), half_close=True),
    Case("bad-content-length", lambda d: post(b"x", length=None, extra={"Content-Length": "abc"})),
    Case("huge-header", lambda d: request("GET", "/simple/", {"X-Big": "a" * 20000}), (400, 431)),
    Case("many-headers", lambda d: request(
        "GET", "/simple/", {f"X-H{i}": "v" for i in range(200)}), (400, 431)),
    Case("huge-request-line", lambda d: request("GET", "/simple/" + "a" * 9000), (400, 414)),
    Case("over-limit-content-length", lambda d: post(b"x" * 4096, length=LIMIT + 1), (413,)),
    Case("over-limit-chunked", lambda d: post(
        chunked(form(field(b":action", b"file_upload"),
                     file_field(WHL.encode(), os.urandom(LIMIT + 65536)))),
        extra={"Transfer-Encoding": "chunked"}, length=-1), (411,)),
    Case("upload-without-credentials", lambda d: upload(WHL, d["wheel"], auth=None), (401,)),
    Case("upload-unknown-user", lambda d: upload(
        WHL, d["wheel"], auth=b"Basic " + base64.b64encode(b"mallory:" + PASSWORD.encode())),
         (403,)),
    Case("upload-garbage-authorization", lambda d: upload(WHL, d["wheel"], auth=b"Basic !!!"),
         (401, 403)),
    Case("upload-binary-authorization", lambda d: upload(
        WHL, d["wheel"], auth=b"Basic " + base64.b64encode(b"\xff\xfe:\x80\x81")), (401, 403)),
    Case("remove-without-credentials", lambda d: upload(WHL, b"", auth=None, action=b"remove_pkg"),
         (401,)),
    Case("remove-wrong-password", lambda d: upload(
        WHL, b"", auth=b"Basic " + base64.b64encode(b"alice:wrong"), action=b"remove_pkg"), (403,)),
    Case("remove-missing-fields", lambda d: post(form(field(b":action", b"remove_pkg")))),
    Case("remove-unknown-package", lambda d: upload(WHL, b"", action=b"remove_pkg"), (404,)),
    Case("rpc2-without-method", lambda d: request(
        "POST", "/RPC2", {"Content-Type": "text/xml"}, b'<?xml version="1.0"?><methodCall/>')),
    Case("rpc2-xml-bomb", lambda d: request("POST", "/RPC2", {"Content-Type": "text/xml"},
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        b"<methodCall><methodName>&b;</methodName></methodCall>")),
    Case("get-dotdot", lambda d: request("GET", "/packages/../../etc/passwd"), (400, 404)),
    Case("get-dotdot-encoded", lambda d: request("GET", "/packages/%2e%2e/%2e%2e/etc/passwd"),
         (400, 404)),
    Case("get-dotdot-slash-encoded",
         lambda d: request("GET", "/packages/..%2f..%2f..%2fetc%2fpasswd"),
         (400, 404)),
    Case("get-dotdot-all-encoded",
         lambda d: request("GET", "/packages/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd"), (400, 404)),
    Case("get-dotdot-backslash", lambda d: request("GET", "/packages/..\\..\\..\\etc\\passwd"),
         (400, 404)),
    Case("get-absolute-encoded", lambda d: request("GET", "/packages/%2fetc%2fpasswd"), (400, 404)),
    Case("get-nul", lambda d: request("GET", "/packages/victim%00.whl"), (400, 404)),
    Case("get-simple-dotdot", lambda d: request("GET", "/simple/../../etc/passwd"), (400, 404)),
    Case("get-own-log", lambda d: request("GET", "/packages/../server.log"), (400, 404)),
    Case("get-htpasswd", lambda d: request("GET", "/packages/%2e%2e/auth/htpasswd"), (400, 404)),
]


def flip(data: bytes, after: bytes, offset: int) -> bytes:
    """``data`` with one byte inverted ``offset`` bytes after the first ``after``."""
    out = bytearray(data)
    out[data.index(after) + offset] ^= 0xFF
    return bytes(out)


def zip_of(files: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def bomb() -> bytes:
    """A small .tar.gz whose one member claims 2 GiB and holds 40 MiB of zeros (40 KiB gzip'd)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as gz:
        info = tarfile.TarInfo("victim-1.0/big")
        info.size = 2 << 30
        gz.write(info.tobuf())
        zeros = bytes(1 << 20)
        for _ in range(40):  # enough to pass the budget check, small enough for the limit
            gz.write(zeros)
    data = buf.getvalue()
    assert len(data) < LIMIT - 4096
    return data


STATE_DIR = ".pypibox"  # the server's own index state inside the packages directory


def stored(packages: Path) -> list[str]:
    """The names in the packages directory, without the server's own state."""
    return sorted(p.name for p in packages.iterdir() if p.name != STATE_DIR)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every directory and file under root except the server's log and state; files with
    size and mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != STATE_DIR]
        out.update({str(Path(dirpath, d).relative_to(root)): (0, 0) for d in dirnames})
        for name in filenames:
            path = Path(dirpath, name)
            if path.name != "server.log":
                st = path.lstat()
                out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def outside_snapshot(base: Path) -> set[str]:
    """Files named for the victim where an escaping upload could land: /, /tmp, the test tree."""
    found = {n for n in os.listdir("/") + os.listdir("/tmp") if "victim" in n}
    for dirpath, _dirs, filenames in os.walk(base):
        if not any(part.startswith("dists") for part in Path(dirpath).parts):  # our own
            found |= {os.path.join(dirpath, n) for n in filenames if "victim" in n}
    return found


def healthy(srv) -> None:
    reply = exchange(srv.port, request("GET", "/health"))
    assert reply.status == 200, f"/health answered {reply.status} {reply.reason}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_request_is_refused_and_leaves_nothing(target, dists, case):
    before = snapshot(target.root)
    base = target.root.parent
    outside = outside_snapshot(base)
    reply = exchange(target.port, case.build(dists), half_close=case.half_close)
    assert reply.status in case.status, f"{reply.status} {reply.reason}: {reply.body[:300]!r}"
    assert b"root:" not in reply.body
    healthy(target)
    assert snapshot(target.root) == before
    assert stored(target.packages) == []
    assert outside_snapshot(base) == outside


def test_refusal_reasons_are_clear(target, dists):
    """The reason phrase (what twine prints) says what is wrong."""
    cases = {
        "not a valid zip": upload(WHL, b"junk"),
        "holds project": upload(WHL, dists["other_wheel"]),
        "starts with a dot": upload(".victim-1.0.tar.gz", dists["sdist"]),
        "longer than": upload("v" * 270 + "-1.0-py3-none-any.whl", dists["wheel"]),
        "gzip-compressed tar": upload("victim-1.0.tar.gz", gzip_of(b"text")),
        "larger than the limit of 1048576 bytes": post(b"x", length=LIMIT + 1),
        "no closing boundary": post(form(field(b":action", b"file_upload"),
                                         file_field(WHL.encode(), dists["wheel"]), close=False)),
    }
    for needle, raw in cases.items():
        reply = exchange(target.port, raw)
        assert reply.status in (400, 413)
        assert needle in reply.reason, reply.reason


def test_valid_uploads_still_work_after_the_attacks(target, dists):
    """The control: the same server stores real files (and they can be removed again)."""
    for name, key in ((WHL, "wheel"), ("victim-1.0.tar.gz", "sdist")):
        reply = exchange(target.port, upload(name, dists[key]))
        assert reply.status == 200, reply.reason
        got = exchange(target.port, request("GET", f"/packages/{name}"))
        assert got.status == 200 and got.body == dists[key]
    gone = exchange(target.port, upload(WHL, b"", action=b"remove_pkg"))
    assert gone.status == 200
    assert stored(target.packages) == []


# -- fuzzing -----------------------------------------------------------------------------------
names = st.one_of(
    st.text(min_size=0, max_size=300),
    st.binary(min_size=0, max_size=120),
    st.sampled_from([WHL, "victim-1.0.tar.gz", "victim-1.0.zip", "..", ".", "a.whl"]),
)


def _encode(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogatepass")


@settings(max_examples=600, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    filename=names,
    content=st.binary(max_size=4096),
    action=st.sampled_from([b"file_upload", b"remove_pkg", b"doc_upload", b"", b"\xff"]),
    extra=st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=64)),
                   max_size=3),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=5000)),
)
def test_fuzz_upload_parser_never_5xx(target, filename, content, action, extra, cut):
    body = form(field(b":action", action),
                *(field(k.replace(b'"', b""), v) for k, v in extra),
                file_field(_encode(filename).replace(b"\r", b"").replace(b"\n", b""), content))
    if cut is not None:
        body = body[:cut]
    reply = exchange(target.port, post(body))
    assert reply.status < 500, f"{reply.status} {reply.reason}"
    healthy(target)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=st.binary(min_size=1, max_size=2048), ctype=st.binary(max_size=80))
def test_fuzz_raw_bodies_never_5xx(target, raw, ctype):
    reply = exchange(target.port, post(raw, ctype=ctype.replace(b"\r", b"").replace(b"\n", b"")
                                       or b"multipart/form-data; boundary=" + BOUNDARY))
    assert reply.status < 500, f"{reply.status} {reply.reason}"
    healthy(target)


def test_fuzzing_stored_nothing_and_logged_no_traceback(target):
    """Nothing that was fuzzed is a valid distribution, so nothing may be stored."""
    time.sleep(0.2)
    assert stored(target.packages) == []
    assert "Traceback" not in target.logtext()


def test_twine_prints_the_reason_of_a_refusal(target, tmp_path):
    """The refusal reaches the user: twine shows the reason phrase of the 400."""
    # A valid wheel that twine accepts but the server refuses: its name is too long.
    wheel = make_wheel(tmp_path, "v" * 185, "1.0")
    result = twine_upload(target, [wheel])
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "400" in output and "longer than 200 characters" in output, output
    assert stored(target.packages) == []


def test_abandoned_upload_leaves_nothing(target, dists):
    """8 MB announced, 3 MB sent, then the client goes away: nothing is stored or listed."""
    payload = dists["wheel"] + os.urandom(8 << 20)
    raw = post(form(field(b":action", b"file_upload"), file_field(WHL.encode(), payload)),
               length=len(payload) + 500)
    with socket.create_connection(("127.0.0.1", target.port), timeout=15) as sock:
        sock.sendall(raw[: 3 << 20])
    time.sleep(0.5)
    healthy(target)
    assert stored(target.packages) == []
    assert WHL not in exchange(target.port, request("GET", "/simple/victim/")).body.decode()
