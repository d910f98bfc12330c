"""Password checks are bounded: failures are rate limited per client address and per user
name, one bcrypt check serves every concurrent request with the same new credentials, and a
user name without a password is asked for one (401), so that pip's keyring flow works.

"Attacker" and "user" connect from different loopback addresses (127.0.0.2, 127.0.0.3, ...).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import PASSWORD, add_user, basic, clean_env, http, run
from pkgfactory import make_wheel
from support import cpu_seconds, exchange, raw_request, upload_form

CLOSED = "update,download,list"  # every action needs a password: GET /simple/ is a login


def login(srv, user: str, password: str, source: str | None = None, timeout: float = 15):
    """GET /simple/ with these credentials, from the loopback address ``source``."""
    return exchange(srv.port, raw_request("GET", "/simple/", {
        "Authorization": basic(user, password)}), source=source, timeout=timeout)


def check_429(reply) -> None:
    """A 429 says when to come back, in one plain line that is its reason."""
    assert reply.headers.get("retry-after", "").isdigit(), reply.headers
    assert 1 <= int(reply.headers["retry-after"]) <= 10, reply.headers["retry-after"]
    assert reply.headers.get("content-type", "").startswith("text/plain"), reply.headers
    assert reply.text.count("\n") == 1 and reply.text.strip() == reply.reason, reply.text


def wait_usable(srv, user: str, password: str) -> None:
    """Wait (bounded) until an account added after the start can log in."""
    deadline = time.monotonic() + 10
    while login(srv, user, password).status != 200:
        assert time.monotonic() < deadline, f"{user} never became usable"
        time.sleep(0.2)


# -- rate limits -------------------------------------------------------------------------------
def test_failed_checks_are_limited_per_client_address(server_factory):
    """30 wrong passwords from 127.0.0.2, each for another name: at most the burst of 10
    plus 2 per second are checked (403), the rest get 429 with Retry-After; a user at
    127.0.0.3 logs in meanwhile, and after Retry-After the address is checked again.
    Before the rewrite (e60c6b4): no limit; all 30 are checked and answered 403."""
    srv = server_factory(PYPI_WORKERS="1", PYPI_AUTHENTICATE=CLOSED, PYPI_AUTH_RATE="2")
    start = time.monotonic()
    replies = [login(srv, f"ghost-{i}", "wrong", source="127.0.0.2") for i in range(30)]
    elapsed = time.monotonic() - start
    statuses = [r.status for r in replies]
    refused = [r for r in replies if r.status == 429]
    assert set(statuses) <= {403, 429}, statuses
    assert statuses.count(403) <= 10 + 2 * elapsed + 2, (statuses, f"{elapsed:.1f} s")
    assert refused, statuses
    for reply in refused:
        check_429(reply)
    assert login(srv, "alice", PASSWORD, source="127.0.0.3").status == 200
    time.sleep(int(refused[-1].headers["retry-after"]) + 0.5)
    assert login(srv, "ghost-again", "wrong", source="127.0.0.2").status == 403


def test_failed_checks_are_limited_per_user_name_alike_for_known_and_unknown(server_factory):
    """20 wrong passwords for alice (known) and 20 for ghost (unknown), each from its own
    address: both names get 429 after the burst, with the same number of checks (so the
    answers do not tell which name exists); bob, another name, still logs in.
    Before the rewrite (e60c6b4): no limit; all 40 are checked (403)."""
    srv = server_factory({"alice": PASSWORD, "bob": "bob-Pa55"}, PYPI_WORKERS="1",
                         PYPI_AUTHENTICATE=CLOSED, PYPI_AUTH_RATE="2")
    counts = {}
    for n, name in enumerate(("alice", "ghost")):
        start = time.monotonic()
        replies = [login(srv, name, f"wrong-{i}", source=f"127.0.{n + 1}.{i + 1}")
                   for i in range(20)]
        elapsed = time.monotonic() - start
        statuses = [r.status for r in replies]
        assert set(statuses) <= {403, 429}, statuses
        assert 429 in statuses, f"{name}: {statuses}"
        assert statuses.count(403) <= 10 + 2 * elapsed + 2, (name, statuses)
        for reply in replies:
            if reply.status == 429:
                check_429(reply)
        # What the burst let through, without what the refill added while this name's loop
        # ran (2 a second): the same for both names however long each loop took.
        counts[name] = statuses.count(403) - 2 * elapsed
    assert abs(counts["alice"] - counts["ghost"]) <= 2, counts
    assert login(srv, "bob", "bob-Pa55", source="127.0.3.1").status == 200


#: The attacker: its own process (so that its threads do not slow the test's own client),
#: ``threads`` connections from 127.0.0.2 sending wrong passwords for unknown names for
#: ``seconds``; prints how many answers of each status it got, as JSON.
ATTACKER = r"""
import base64, collections, json, socket, sys, threading, time
port, threads, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
stop = time.monotonic() + seconds
seen = collections.Counter()
def attack(k):
    for i in range(2000):
        if time.monotonic() > stop:
            return
        auth = base64.b64encode(f"ghost-{k}-{i}:wrong".encode()).decode()
        status = "none"
        try:
            with socket.socket() as sock:
                sock.settimeout(10)
                sock.bind(("127.0.0.2", 0))
                sock.connect(("127.0.0.1", port))
                sock.sendall(f"GET /simple/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             f"Authorization: Basic {auth}\r\n\r\n".encode())
                status = sock.recv(12)[9:12].decode() or "none"
        except OSError:
            pass
        seen[status] += 1
workers = [threading.Thread(target=attack, args=(k,)) for k in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
print(json.dumps(seen))
"""


def test_a_wrong_password_flood_holds_up_no_first_login_upload_or_health(server_factory,
                                                                       tmp_path):
    """Row: 256 connections sending wrong passwords (bcrypt cost 12) made first logins,
    uploads and /health take more than 10 s. An attacker process keeps 64 connections from
    127.0.0.2 sending wrong passwords for unknown names (each a cost-12 check) for 8 s;
    from 127.0.0.3, 3 s in, a first login (cost 12), an upload by another first-time user
    and /health each answer within 3 s, and the attacker has been refused (429).
    Before the rewrite (e60c6b4): every check runs bcrypt; the pool is full of them and the
    others wait."""
    srv = server_factory({"probe": PASSWORD}, PYPI_AUTHENTICATE=CLOSED)
    for user in ("bob", "carol"):
        add_user(srv.htpasswd, user, PASSWORD, cost=12)
    add_user(srv.htpasswd, "probe2", PASSWORD, cost=4)
    wait_usable(srv, "probe2", PASSWORD)  # now unknown names cost a cost-12 check too
    wheel = make_wheel(tmp_path / "up", "during-flood", "1.0")
    body, ct = upload_form(wheel.name, wheel.read_bytes())
    checks = {
        "first login": lambda: login(srv, "bob", PASSWORD, source="127.0.0.3",
                                     timeout=3).status,
        "upload": lambda: exchange(srv.port, raw_request("POST", "/", {
            "Content-Type": ct, "Authorization": basic("carol", PASSWORD)}, body),
            source="127.0.0.3", timeout=3).status,
        "/health": lambda: exchange(srv.port, raw_request("GET", "/health"),
                                    source="127.0.0.3", timeout=3).status,
    }
    attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, str(srv.port), "64", "8"],
                                stdout=subprocess.PIPE, text=True)
    results = {}
    try:
        time.sleep(3.0)
        for name, check in checks.items():
            begin = time.monotonic()
            try:
                results[name] = (check(), round(time.monotonic() - begin, 2))
            except (OSError, AssertionError) as exc:
                results[name] = (type(exc).__name__, round(time.monotonic() - begin, 2))
        seen = json.loads(attacker.communicate(timeout=60)[0])
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    print(f"during the flood: {results}; the attacker got {seen}")
    assert {k: v[0] for k, v in results.items()} == {
        "first login": 200, "upload": 200, "/health": 200}, (results, seen)
    assert all(took < 3 for _, took in results.values()), results
    assert seen.get("429"), f"the attacker was never refused: {seen}"


# -- one check for many requests ---------------------------------------------------------------
def test_concurrent_checks_of_the_same_new_credentials_run_bcrypt_once(server_factory):
    """Row: 16 requests at once with the same correct, not yet cached credentials (cost 12):
    all answered after about 2 s, each paying its own check. Here the server's CPU time for
    16 such requests (one worker) is at most 3 times that of a single first login.
    Before the rewrite (e60c6b4): about 16 times."""
    srv = server_factory({"probe": PASSWORD}, PYPI_WORKERS="1", PYPI_AUTHENTICATE=CLOSED)
    for user in ("carol", "dave"):
        add_user(srv.htpasswd, user, PASSWORD, cost=12)
    add_user(srv.htpasswd, "probe2", PASSWORD, cost=4)
    wait_usable(srv, "probe2", PASSWORD)
    pgid = srv.proc.pid

    time.sleep(0.5)
    before = cpu_seconds(pgid)
    assert login(srv, "carol", PASSWORD).status == 200
    time.sleep(0.3)
    one = cpu_seconds(pgid) - before

    gate = threading.Barrier(16)

    def first_login(_: int) -> int:
        gate.wait(10)
        return login(srv, "dave", PASSWORD, timeout=30).status

    before = cpu_seconds(pgid)
    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(first_login, range(16)))
    wall = time.monotonic() - start
    time.sleep(0.3)
    many = cpu_seconds(pgid) - before
    print(f"one first login: {one:.2f} s CPU; 16 at once: {many:.2f} s CPU, {wall:.2f} s")
    assert statuses == [200] * 16
    assert one > 0.05, f"a cost-12 check should cost well over 50 ms of CPU, not {one:.3f} s"
    assert many <= 3 * one, f"16 concurrent first logins used {many:.2f} s of CPU, " \
        f"one used {one:.2f} s"


# -- asking for a password ---------------------------------------------------------------------
def test_a_user_name_without_a_password_gets_401_with_the_challenge(server_factory, tmp_path):
    """An empty or missing password is a request for credentials, not a wrong one: 401 with
    WWW-Authenticate, for a page and for an upload; a wrong password stays 403.
    Before the rewrite (e60c6b4): 403 (pip then never asks its keyring)."""
    srv = server_factory(PYPI_AUTHENTICATE=CLOSED, PYPI_FALLBACK="off")
    wheel = make_wheel(tmp_path / "d", "no-password", "1.0")
    body, ct = upload_form(wheel.name, wheel.read_bytes())
    no_colon = "Basic " + base64.b64encode(b"alice").decode()
    cases = {
        "empty password, page": ("GET", "/simple/", None, basic("alice", ""), 401),
        "no password, page": ("GET", "/simple/", None, no_colon, 401),
        "empty password, upload": ("POST", "/", body, basic("alice", ""), 401),
        "empty password, file list": ("GET", "/packages/", None, basic("alice", ""), 401),
        "nothing at all": ("GET", "/simple/", None, None, 401),
        "wrong password": ("GET", "/simple/", None, basic("alice", "wrong"), 403),
    }
    for what, (method, path, data, auth, status) in cases.items():
        headers = {"Content-Type": ct} if data else {}
        if auth:
            headers["Authorization"] = auth
        resp = http(method, srv.url + path, data, headers)
        assert resp.status == status, f"{what}: {resp.status}"
        if status == 401:
            assert resp.headers.get("www-authenticate", "").startswith("Basic realm="), what
    assert not (srv.packages / wheel.name).exists()


KEYRING_BACKEND = '''"""A keyring backend for tests: one account; lookups go to $KEYRING_LOG."""

import os

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError, PasswordSetError


class Backend(KeyringBackend):
    priority = 1

    def get_password(self, service, username):
        with open(os.environ["KEYRING_LOG"], "a") as log:
            log.write(f"{service} {username}\\n")
        if username == os.environ["KEYRING_USER"]:
            return os.environ["KEYRING_PASSWORD"]
        return None

    def set_password(self, service, username, password):
        raise PasswordSetError("read-only test keyring")

    def delete_password(self, service, username):
        raise PasswordDeleteError("read-only test keyring")
'''


def test_pip_with_a_user_name_in_the_url_gets_the_password_from_its_keyring(server_factory,
                                                                           tmp_path):
    """Row: pip with a keyring and a user name in the URL (as pip's documentation advises)
    sends an empty password, gets 403 and never asks the keyring. Real pip, with
    ``--keyring-provider import`` and a keyring backend module on PYTHONPATH, downloads
    from a closed index with only ``alice@`` in the URL.
    Before the rewrite (e60c6b4): pip gets 403 and fails; the keyring is never asked."""
    srv = server_factory(PYPI_AUTHENTICATE=CLOSED, PYPI_FALLBACK="off")
    wheel = make_wheel(srv.packages, "keyring-pkg", "1.0")
    backend = tmp_path / "backend"
    backend.mkdir()
    (backend / "pypibox_test_keyring.py").write_text(KEYRING_BACKEND)
    log = tmp_path / "keyring.log"
    dest = tmp_path / "dest"
    env = clean_env(PYTHONPATH=str(backend), PYTHON_KEYRING_BACKEND="pypibox_test_keyring.Backend",
                    KEYRING_LOG=str(log), KEYRING_USER="alice", KEYRING_PASSWORD=PASSWORD)
    result = run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(dest),
                  "--keyring-provider", "import",
                  "--index-url", f"http://alice@127.0.0.1:{srv.port}/simple/",
                  "keyring-pkg==1.0"], env=env, timeout=120)
    output = result.stdout + result.stderr
    asked = log.read_text() if log.exists() else ""
    assert result.returncode == 0, f"{output}\nkeyring asked: {asked!r}"
    assert (dest / wheel.name).read_bytes() == wheel.read_bytes()
    assert " alice" in asked, asked
