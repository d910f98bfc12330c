"""Nothing is lost or half-stored under faults: SIGKILL mid-upload, races, a full disk,
two servers on one directory, restarts, read-only and vanishing accounts."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PASSWORD, ROOT, Server, basic, clean_env, free_port, http, make_server
from pkgfactory import make_wheel
from support import start_with_prefix, upload_form

AUTH = {"Authorization": basic("alice", PASSWORD)}
STATE_DIR = ".pypibox"


def form(filename: str, content: bytes) -> tuple[bytes, dict[str, str]]:
    body, ctype = upload_form(filename, content)
    return body, {"Content-Type": ctype, **AUTH}


def upload(srv: Server, path: Path) -> int:
    body, headers = form(path.name, path.read_bytes())
    return http("POST", srv.url + "/", data=body, headers=headers, timeout=60).status


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def names(packages: Path) -> list[str]:
    """Everything in the packages directory but the server's own state."""
    return sorted(p.name for p in packages.iterdir() if p.name != STATE_DIR)


def killpg(srv: Server) -> None:
    """SIGKILL the server's whole process group (master and workers) and reap it."""
    os.killpg(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(10)


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        reason = f"{what} needs root (a private mount namespace with unshare --mount)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)


@pytest.fixture
def stopper():
    """Servers registered here are killed at the end of the test, whatever happened."""
    servers: list[Server] = []
    yield servers.append
    for srv in servers:
        if srv.proc is not None and srv.proc.poll() is None:
            try:
                os.killpg(srv.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            srv.proc.wait(10)


# -- SIGKILL in the middle of an upload --------------------------------------------------------
def test_sigkill_mid_upload_leaves_no_trace_and_the_upload_then_succeeds(tmp_path, stopper):
    spool = tmp_path / "spool"  # the server's TMPDIR, where bottle spools request bodies
    spool.mkdir()
    srv = make_server(tmp_path, None, TMPDIR=str(spool))
    stopper(srv)
    srv.start()
    wheel = make_wheel(tmp_path / "dist", "killed-upload", "1.0", payload=os.urandom(50 << 20))
    body, headers = form(wheel.name, wheel.read_bytes())
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()

    # 1. Killed while the body is half sent (sent slowly, in small pieces).
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    sock.sendall(head)
    half, sent = len(body) // 2, 0
    while sent < half:
        sock.sendall(body[sent:sent + (1 << 20)])
        sent += 1 << 20
        time.sleep(0.01)
    time.sleep(0.3)
    killpg(srv)
    sock.close()
    assert names(srv.packages) == [], "a half-received upload left a named file behind"
    assert list(spool.iterdir()) == [], "the request spool left a named file behind"

    # 2. Killed while the complete file is being written under its temporary name.
    srv.start()
    caught = None
    for attempt in range(5):
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        sock.sendall(head + body[:-4096])
        sock.sendall(body[-4096:])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and caught is None:
            temps = [n for n in os.listdir(srv.packages) if n.startswith(".upload-")]
            if temps:
                killpg(srv)
                caught = temps[0]
            elif wheel.name in os.listdir(srv.packages):
                break  # the upload won the race against our poll; try again
        sock.close()
        if caught:
            break
        killpg(srv)
        (srv.packages / wheel.name).unlink(missing_ok=True)
        srv.start()
    assert caught, "never saw the temporary upload file in 5 attempts"
    leftovers = [n for n in os.listdir(srv.packages) if n.startswith(".upload-")]
    assert leftovers, "the temporary file should survive a SIGKILL until the restart"

    # 3. After a restart: the temporary file is gone, nothing is listed or downloadable.
    srv.start()
    assert [n for n in os.listdir(srv.packages) if n.startswith(".upload-")] == []
    if wheel.name in names(srv.packages):
        # The link happened before the kill: then the stored file must be complete.
        assert sha((srv.packages / wheel.name).read_bytes()) == sha(wheel.read_bytes())
        pytest.fail("the kill came after the file was linked into place; no half state seen")
    assert wheel.name not in srv.get("/simple/killed-upload/").text
    assert srv.get(f"/packages/{wheel.name}").status == 404
    assert "removed 1 unfinished upload" in srv.logtext()

    # 4. The same upload now succeeds and is served whole.
    assert upload(srv, wheel) == 200
    got = srv.get(f"/packages/{wheel.name}", timeout=60)
    assert got.status == 200 and sha(got.body) == sha(wheel.read_bytes())
    assert names(srv.packages) == [wheel.name]


def test_startup_cleanup_spares_uploads_that_another_server_is_writing(tmp_path, stopper):
    """Leftovers are found by their lock, not by process id: a live writer's file stays."""
    srv = make_server(tmp_path, None)
    stopper(srv)
    busy = srv.packages / ".upload-otherhost-1-aaaaaaaaaaaa"
    dead = srv.packages / ".upload-otherhost-2-bbbbbbbbbbbb"
    busy.write_bytes(b"being written by another server")
    dead.write_bytes(b"left by a killed server")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\n"
         "f = open(sys.argv[1], 'rb'); fcntl.flock(f, fcntl.LOCK_EX)\n"
         "print('locked', flush=True); time.sleep(120)", str(busy)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        srv.start()
        assert busy.exists(), "the upload of a live writer was removed"
        assert not dead.exists(), "the leftover of a dead writer was kept"
    finally:
        holder.kill()
        holder.wait()
    srv.stop()
    srv.start()
    assert not busy.exists()
    assert names(srv.packages) == []


# -- races -------------------------------------------------------------------------------------
def test_simultaneous_uploads_of_one_new_name_have_exactly_one_winner_50_times(server_factory,
                                                                                tmp_path):
    srv = server_factory(PYPI_WORKERS="2", PYPI_THREADS="4")
    rounds = 50
    pairs = []
    for i in range(rounds):
        a = make_wheel(tmp_path / f"a{i}", "race-pkg", f"1.{i}", payload=b"A" * 50_000)
        b = make_wheel(tmp_path / f"b{i}", "race-pkg", f"1.{i}", payload=b"B" * 50_000)
        pairs.append((form(a.name, a.read_bytes()), form(b.name, b.read_bytes()), a, b))

    for (fa, fb, a, b) in pairs:
        gate = threading.Barrier(2)
        statuses: dict[str, int] = {}

        def send(key: str, payload: tuple[bytes, dict[str, str]]) -> None:
            gate.wait()
            statuses[key] = http("POST", srv.url + "/", data=payload[0], headers=payload[1]).status

        threads = [threading.Thread(target=send, args=(k, f)) for k, f in (("a", fa), ("b", fb))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses.values()) == [200, 409], statuses
        winner = a if statuses["a"] == 200 else b
        stored = (srv.packages / a.name).read_bytes()
        assert sha(stored) == sha(winner.read_bytes())
        served = srv.get(f"/packages/{a.name}")
        assert served.status == 200 and sha(served.body) == sha(winner.read_bytes())
    assert len(names(srv.packages)) == rounds
    assert not [n for n in os.listdir(srv.packages) if n.startswith(".upload-")]


# -- a full disk -------------------------------------------------------------------------------
def test_full_disk_gives_507_stores_nothing_and_keeps_serving(tmp_path, stopper):
    need_root("a small tmpfs as the packages directory")
    srv = make_server(tmp_path, None)
    stopper(srv)
    mount = ('mount -t tmpfs -o size=4m pypibox-full "$PYPI_PACKAGES_DIR" '
             '&& exec "$@"')
    start_with_prefix(srv, ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount,
                            "sh"])
    inside = Path(f"/proc/{srv.proc.pid}/root") / srv.packages.relative_to("/")
    assert os.statvfs(inside).f_blocks * os.statvfs(inside).f_frsize <= 4 << 20, "not the tmpfs"

    small = make_wheel(tmp_path / "s", "fits", "1.0", payload=os.urandom(200_000))
    assert upload(srv, small) == 200
    big = make_wheel(tmp_path / "b", "too-big", "1.0", payload=os.urandom(6 << 20))
    body, headers = form(big.name, big.read_bytes())
    resp = http("POST", srv.url + "/", data=body, headers=headers, timeout=60)
    assert resp.status == 507, resp
    assert names(inside) == [small.name], "a partial file was left on the full disk"
    assert not [n for n in os.listdir(inside) if n.startswith(".upload-")]
    assert srv.get("/health").status == 200
    assert big.name not in srv.get("/simple/too-big/").text
    after = make_wheel(tmp_path / "a", "after-full", "1.0", payload=os.urandom(500_000))
    assert upload(srv, after) == 200, "the space of the refused upload was not given back"
    got = srv.get(f"/packages/{small.name}")
    assert got.status == 200 and sha(got.body) == sha(small.read_bytes())
    assert "Traceback" not in srv.logtext()


# -- two servers, restarts ---------------------------------------------------------------------
def test_two_servers_on_one_directory_see_each_others_uploads(tmp_path, stopper):
    one = make_server(tmp_path, None)
    two = Server(port=free_port(), packages=one.packages, htpasswd=one.htpasswd,
                 log=tmp_path / "two.log")
    for srv in (one, two):
        stopper(srv)
        srv.start()
    for i, (up, down) in enumerate(((one, two), (two, one))):
        wheel = make_wheel(tmp_path / f"d{i}", "shared-dir", f"1.{i}", payload=os.urandom(1000))
        assert upload(up, wheel) == 200
        deadline = time.monotonic() + 2.0
        while True:
            listed = wheel.name in down.get("/simple/shared-dir/").text
            got = down.get(f"/packages/{wheel.name}")
            if listed and got.status == 200:
                break
            assert time.monotonic() < deadline, f"{wheel.name} not on the other server in 2 s"
            time.sleep(0.05)
        assert sha(got.body) == sha(wheel.read_bytes())


def test_packages_survive_a_restart_and_a_sigkill(tmp_path, stopper):
    srv = make_server(tmp_path, None)
    stopper(srv)
    srv.start()
    wheels = [make_wheel(tmp_path / f"r{i}", "survivor", f"2.{i}", payload=os.urandom(5000))
              for i in range(3)]
    for w in wheels:
        assert upload(srv, w) == 200
    assert srv.stop() == 0
    srv.start()
    killpg(srv)
    srv.start()
    page = srv.get("/simple/survivor/").text
    for w in wheels:
        assert f"{w.name}#sha256={sha(w.read_bytes())}" in page
        got = srv.get(f"/packages/{w.name}")
        assert got.status == 200 and got.body == w.read_bytes()


# -- accounts ----------------------------------------------------------------------------------
def test_accounts_on_a_read_only_mount_are_read_but_never_written(tmp_path, stopper):
    srv = make_server(tmp_path, None)
    stopper(srv)
    auth_dir = srv.htpasswd.parent
    if os.geteuid() == 0:
        script = 'mount --bind -o ro "$AUTH_DIR" "$AUTH_DIR" && exec "$@"'
        start_with_prefix(srv, ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                script, "sh"], AUTH_DIR=str(auth_dir))
        same_place = ["nsenter", "-t", str(srv.proc.pid), "-m"]
    else:
        auth_dir.chmod(0o555)
        srv.start()
        same_place = []
    try:
        wheel = make_wheel(tmp_path / "w", "ro-accounts", "1.0")
        assert upload(srv, wheel) == 200, "the server cannot read its read-only accounts"
        # The same user, in the same mount namespace as the server, cannot write there.
        attempt = subprocess.run(
            [*same_place, sys.executable, "-m", "pypibox", "adduser", "mallory", "--cost", "4",
             "--password-stdin", "--file", str(srv.htpasswd)],
            input="pw\n", capture_output=True, text=True, env=clean_env(PYTHONPATH=str(ROOT)),
            timeout=60)
        assert attempt.returncode != 0
        assert "Read-only file system" in attempt.stderr or "Permission denied" in attempt.stderr
        touch = subprocess.run([*same_place, "touch", str(auth_dir / "new-file")],
                               capture_output=True, text=True)
        assert touch.returncode != 0
        assert "mallory" not in srv.htpasswd.read_text()
        assert srv.get("/health").status == 200
    finally:
        auth_dir.chmod(0o755)


def test_deleting_or_breaking_the_htpasswd_keeps_the_last_good_accounts(server, tmp_path):
    first = make_wheel(tmp_path / "1", "kept-accounts", "1.0")
    assert upload(server, first) == 200
    server.htpasswd.unlink()
    time.sleep(1.2)  # longer than the accounts' recheck interval
    second = make_wheel(tmp_path / "2", "kept-accounts", "1.1")
    assert upload(server, second) == 200
    body, headers = form(second.name, second.read_bytes())
    wrong = http("POST", server.url + "/", data=body,
                 headers={**headers, "Authorization": basic("alice", "nope")})
    assert wrong.status == 403
    for path in ("/", "/simple/", "/simple/kept-accounts/", f"/packages/{first.name}", "/health"):
        assert server.get(path).status == 200, path
    # A file that comes back broken is not taken either.
    server.htpasswd.write_text("this is not an htpasswd line\n")
    time.sleep(1.2)
    third = make_wheel(tmp_path / "3", "kept-accounts", "1.2")
    assert upload(server, third) == 200
    assert server.get("/simple/kept-accounts/").status == 200
    assert "Traceback" not in server.logtext()
    assert "keeping the last good accounts" in server.logtext()
