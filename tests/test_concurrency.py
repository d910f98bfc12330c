"""One worker serves many clients at once: slow work (bcrypt, an upload) holds up no one else."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import time

from conftest import PASSWORD, add_user, basic, http
from pkgfactory import make_wheel
from support import raw_request, upload_form, wait_for

SLOW_COST = "14"  # about a second per bcrypt check on this kind of machine


def _in_background(fn, results: list, count: int) -> list[threading.Thread]:
    threads = [threading.Thread(target=lambda: results.append(fn())) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_password_checks_in_progress_hold_up_no_other_request(server_factory, tmp_path):
    """While wrong passwords are being checked (bcrypt every time), others are answered."""
    srv = server_factory(PYPI_WORKERS="1", PYPI_AUTHENTICATE="download,list,update")
    add_user(srv.htpasswd, "slow", "slow-password", cost=int(SLOW_COST))
    srv.wait_ready()
    make_wheel(srv.packages, "quickpkg", "1.0")
    good = {"Authorization": basic("alice", PASSWORD)}
    assert srv.get("/simple/quickpkg/", headers=good).status == 200  # now in the cache
    for _ in range(40):  # the account change is seen within the reload interval
        if http("GET", srv.url + "/simple/", headers={
                "Authorization": basic("slow", "slow-password")}).status == 200:
            break

    finished: list[str] = []
    lock = threading.Lock()

    def wrong() -> int:
        status = http("GET", srv.url + "/simple/", timeout=60,
                      headers={"Authorization": basic("slow", "not-it")}).status
        with lock:
            finished.append("wrong")
        return status

    slow: list[int] = []
    threads = _in_background(wrong, slow, 3)
    try:
        page = srv.get("/simple/quickpkg/", headers=good)
        health = srv.get("/health")
        with lock:
            done_before = list(finished)
    finally:
        for thread in threads:
            thread.join(60)
    assert page.status == 200 and b"quickpkg-1.0-py3-none-any.whl" in page.body
    assert health.status == 200
    assert done_before == [], "the other requests waited for the password checks"
    assert slow == [403, 403, 403]


def test_a_slow_upload_holds_up_no_download(server_factory):
    """An upload whose body trickles in leaves the worker free; then it completes whole."""
    srv = server_factory(PYPI_WORKERS="1", PYPI_THREADS="2")
    wheel = make_wheel(srv.packages.parent, "trickle", "1.0", payload=b"\x01" * 300_000)
    make_wheel(srv.packages, "present", "1.0")
    data = wheel.read_bytes()
    body, ctype = upload_form(wheel.name, data)
    head = raw_request("POST", "/", {"Authorization": basic("alice", PASSWORD),
                                     "Content-Type": ctype}, length=len(body))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(head + body[: len(body) // 2])
        # Half the body is in; the worker must go on serving everyone else.
        for _ in range(5):
            assert srv.get("/simple/present/").status == 200
            got = srv.get("/packages/present-1.0-py3-none-any.whl")
            assert got.status == 200 and got.body[:2] == b"PK"
        assert srv.get("/simple/trickle/").status != 200  # nothing half-stored shows
        sock.sendall(body[len(body) // 2:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    stored = srv.get("/packages/" + wheel.name)
    assert stored.status == 200
    assert hashlib.sha256(stored.body).hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_page_larger_than_a_megabyte_from_pypiserver_arrives_whole(server_factory):
    """pypiserver's own /packages/ listing, over 1 MB here, streams out complete."""
    srv = server_factory()
    names = [f"bulkproject{i:05d}-1.0.{i}.tar.gz" for i in range(16000)]
    for name in names:
        (srv.packages / name).write_bytes(b"")
    # 16,000 files copied in at once are indexed in the background: wait until every one
    # is listed (the two-second bound is for a file, not for a burst of this size).
    pages: list = []

    def listed() -> set[str]:
        pages.append(srv.get("/packages/", timeout=120))
        assert pages[-1].status == 200, pages[-1].status
        return set(re.findall(r'href="([^"]+)"', pages[-1].text))

    wait_for(lambda: set(names) <= listed(), timeout=90, what="all 16,000 files in /packages/")
    assert len(pages[-1].body) > 1 << 20
    assert pages[-1].body.rstrip().endswith(b"</html>")


def test_every_request_of_a_burst_is_in_the_access_log(server_factory):
    """Access lines are written in batches under load: none is lost, each shows promptly."""
    srv = server_factory(PYPI_WORKERS="2")
    make_wheel(srv.packages, "logged", "1.0")
    paths = [f"/simple/logged/?n={i}" for i in range(400)]

    def fetch(part: list[str]) -> None:
        for path in part:
            assert srv.get(path).status == 200

    threads = [threading.Thread(target=fetch, args=(paths[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        missing = [p for p in paths if f'"GET {p} HTTP/1.1" 200' not in srv.logtext()]
        if not missing:
            break
        time.sleep(0.1)
    assert missing == []


def test_malloc_arenas_are_capped_unless_the_environment_says_otherwise():
    """On glibc the server caps malloc arenas (threads fragment memory); MALLOC_ARENA_MAX wins."""
    import subprocess
    import sys

    from conftest import ROOT, clean_env

    code = "from pypibox.server import limit_malloc_arenas as f; print(f())"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=clean_env(PYTHONPATH=str(ROOT)), check=True)
    assert plain.stdout.strip() == "True"  # the host (Debian) is glibc
    preset = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=clean_env(PYTHONPATH=str(ROOT), MALLOC_ARENA_MAX="4"), check=True)
    assert preset.stdout.strip() == "False"
