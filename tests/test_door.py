"""The front door: who may do what, how refusals look, how long they take, what is logged."""

from __future__ import annotations

import base64
import statistics
import time

import pytest
from conftest import PASSWORD, add_user, basic, http, make_server
from pkgfactory import make_wheel
from support import content_type
from support import form as multipart


def form(fields: dict[str, str], filename: str | None = None, content: bytes = b"") -> bytes:
    return multipart(fields, [("content", filename, content)] if filename else [])


CT = {"Content-Type": content_type()}


@pytest.fixture(scope="module")
def closed(tmp_path_factory):
    """A server that wants a password for everything, with one package in it."""
    root = tmp_path_factory.mktemp("door")
    # Many wrong passwords from one address on purpose: no rate limit (PYPI_AUTH_RATE) here.
    srv = make_server(root, None, PYPI_AUTHENTICATE="update,download,list", PYPI_FALLBACK="off",
                      PYPI_AUTH_RATE="1000")
    srv.start()
    wheel = make_wheel(root / "dist", "door-pkg", "1.0")
    body = form({":action": "file_upload"}, wheel.name, wheel.read_bytes())
    ok = http("POST", srv.url + "/", body, {**CT, "Authorization": basic("alice", PASSWORD)})
    assert ok.status == 200
    srv.wheel = wheel
    srv.root = root
    yield srv
    srv.stop()


def actions(srv) -> dict[str, tuple[str, str, bytes | None, dict[str, str]]]:
    """Every protected action: method, path, body, headers."""
    spare = make_wheel(srv.root / "spare", "door-pkg", "2.0")
    return {
        "upload": ("POST", "/", form({":action": "file_upload"}, spare.name,
                                     spare.read_bytes()), CT),
        "remove_pkg": ("POST", "/", form({":action": "remove_pkg", "name": "door-pkg",
                                          "version": "1.0"}), CT),
        "simple-index": ("GET", "/simple/", None, {}),
        "simple-project": ("GET", "/simple/door-pkg/", None, {}),
        "packages-index": ("GET", "/packages/", None, {}),
        "package-file": ("GET", f"/packages/{srv.wheel.name}", None, {}),
    }


ACTIONS = ["upload", "remove_pkg", "simple-index", "simple-project", "packages-index",
           "package-file"]


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("auth", [None, basic("alice", "")])
def test_no_credentials_is_401_with_a_challenge(closed, action, auth):
    """No password at all, or a user name with an empty one (pip's keyring flow then asks)."""
    method, path, body, headers = actions(closed)[action]
    resp = http(method, closed.url + path, body, {**headers, **({"Authorization": auth}
                                                               if auth else {})})
    assert resp.status == 401
    assert resp.headers.get("www-authenticate", "").startswith("Basic realm=")
    assert (closed.packages / closed.wheel.name).exists()


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("who", [("alice", "wrong-password"), ("nobody", PASSWORD),
                                 ("", PASSWORD), ("ALICE", PASSWORD)])
def test_wrong_credentials_are_403(closed, action, who):
    method, path, body, headers = actions(closed)[action]
    resp = http(method, closed.url + path, body, {**headers, "Authorization": basic(*who)})
    assert resp.status == 403
    assert (closed.packages / closed.wheel.name).exists()
    assert not (closed.packages / "door_pkg-2.0-py3-none-any.whl").exists()


def test_reads_with_the_right_password_work(closed):
    """The control for the refusals above: the same requests with alice's password succeed."""
    auth = {"Authorization": basic("alice", PASSWORD)}
    for action in ("simple-index", "simple-project", "packages-index", "package-file"):
        method, path, body, headers = actions(closed)[action]
        assert http(method, closed.url + path, body, {**headers, **auth}).status == 200, action
    got = http("GET", closed.url + f"/packages/{closed.wheel.name}", headers=auth)
    assert got.body == closed.wheel.read_bytes()


def test_refusal_time_does_not_tell_which_users_exist(tmp_path):
    """Unknown users cost a bcrypt check like known users with a wrong password (cost 10)."""
    srv = make_server(tmp_path, {}, PYPI_AUTHENTICATE="update,download,list",
                      PYPI_AUTH_RATE="1000")
    add_user(srv.htpasswd, "alice", PASSWORD, cost=10)
    add_user(srv.htpasswd, "bob", PASSWORD, cost=10)
    srv.start()
    try:
        def attempt(user: str, password: str) -> float:
            start = time.perf_counter()
            resp = http("GET", srv.url + "/simple/",
                        headers={"Authorization": basic(user, password)})
            elapsed = time.perf_counter() - start
            assert resp.status == 403
            return elapsed

        for _ in range(3):  # warm up connections and caches
            attempt("alice", "warm-up"), attempt("ghost", "warm-up")
        known, unknown = [], []
        for i in range(20):  # interleaved, so that load changes hit both alike
            known.append(attempt("alice", f"wrong-{i}"))
            unknown.append(attempt(f"ghost-{i}", f"wrong-{i}"))
        # The lower quartile: load on the machine only adds time, and comes and goes.
        k, u = (statistics.quantiles(x, n=4)[0] for x in (known, unknown))
        print(f"refusal (lower quartile): known user {k * 1000:.1f} ms, "
              f"unknown user {u * 1000:.1f} ms")
        assert k > 0.01, "cost-10 bcrypt should take well over 10 ms; is the check done?"
        assert abs(k - u) <= 0.2 * max(k, u), f"known {k:.4f}s vs unknown {u:.4f}s"
    finally:
        srv.stop()


def test_no_secret_reaches_the_log(tmp_path):
    """Passwords, hashes and Authorization values are never logged, even at debug level."""
    wrong = "Wr0ng-Secret-Value-91"
    ghost_pw = "Gh0st-Secret-Value-17"
    srv = make_server(tmp_path, None, PYPI_AUTHENTICATE="update,download,list",
                      PYPI_LOG_LEVEL="debug")
    srv.start()
    try:
        wheel = make_wheel(tmp_path / "dist", "secret-log", "1.0")
        body = form({":action": "file_upload"}, wheel.name, wheel.read_bytes())
        auth_headers = [basic("alice", PASSWORD), basic("alice", wrong), basic("ghost", ghost_pw),
                        "Basic " + base64.b64encode(b"alice").decode(), "Bearer " + ghost_pw]
        for value in auth_headers:
            http("POST", srv.url + "/", body, {**CT, "Authorization": value})
            http("GET", srv.url + "/simple/secret-log/", headers={"Authorization": value})
            http("GET", srv.url + f"/packages/{wheel.name}", headers={"Authorization": value})
        assert (srv.packages / wheel.name).exists(), "the good upload should have been stored"
        srv.stop()
        log = srv.logtext()
        entry = srv.htpasswd.read_text().strip()
        secrets = [PASSWORD, wrong, ghost_pw, entry, entry.split(":", 1)[1],
                   entry.split(":", 1)[1][7:29]]  # the whole hash and its salt
        secrets += [v.split(" ", 1)[1] for v in auth_headers]
        for secret in secrets:
            assert secret not in log, f"{secret[:6]}... appears in the log"
        assert "authorization" not in log.lower()
        assert "POST / HTTP/1.1" in log, "the log should still record the requests"
    finally:
        if srv.proc.poll() is None:
            srv.stop()
