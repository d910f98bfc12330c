"""Accounts: the runtime's own user commands, Apache's htpasswd, and hot reload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from conftest import PASSWORD, ROOT, add_user, basic, clean_env, make_server
from pkgfactory import make_wheel
from support import upload_form
from test_server import post


def pypibox(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pypibox", *args], input=stdin, text=True,
                          capture_output=True, env=clean_env(PYTHONPATH=str(ROOT), **env), timeout=60)


def apache_verifies(path, user: str, password: str) -> bool:
    result = subprocess.run(["htpasswd", "-vb", str(path), user, password], capture_output=True)
    return result.returncode == 0


def test_adduser_creates_a_bcrypt_file_that_apache_verifies(tmp_path):
    htp = tmp_path / "htpasswd"
    result = pypibox("adduser", "erin", "--file", str(htp), "--cost", "5", "--password-stdin",
                     stdin="erins-password\n")
    assert result.returncode == 0, result.stderr
    assert htp.read_text().startswith("erin:$2y$05$")
    assert apache_verifies(htp, "erin", "erins-password")
    assert not apache_verifies(htp, "erin", "wrong")


def test_adduser_uses_the_cost_setting_and_never_drops_others(tmp_path):
    htp = tmp_path / "htpasswd"
    add_user(htp, "alice", PASSWORD)
    before = htp.read_text()
    result = pypibox("adduser", "frank", "--password-stdin", stdin="pw\n",
                     PYPI_HTPASSWD=str(htp), PYPI_BCRYPT_COST="6")
    assert result.returncode == 0, result.stderr
    text = htp.read_text()
    assert text.startswith(before) and "frank:$2y$06$" in text
    assert apache_verifies(htp, "alice", PASSWORD)


def test_adduser_changes_an_existing_password(tmp_path):
    htp = tmp_path / "htpasswd"
    add_user(htp, "alice", "old")
    assert pypibox("adduser", "alice", "--file", str(htp), "--cost", "5", "--password-stdin",
                   stdin="new\n").returncode == 0
    assert apache_verifies(htp, "alice", "new") and not apache_verifies(htp, "alice", "old")
    assert htp.read_text().count("alice:") == 1


def test_adduser_refuses_empty_password_and_bad_names(tmp_path):
    htp = tmp_path / "htpasswd"
    empty = pypibox("adduser", "gina", "--file", str(htp), "--password-stdin", stdin="\n")
    assert empty.returncode == 1 and "empty password" in empty.stderr and not htp.exists()
    bad = pypibox("adduser", "a:b", "--file", str(htp), "--password-stdin", stdin="x\n")
    assert bad.returncode == 1 and "not a valid user name" in bad.stderr


def test_users_lists_names_only_and_deluser_removes(tmp_path):
    htp = tmp_path / "htpasswd"
    add_user(htp, "alice", "a")
    add_user(htp, "bob", "b")
    listed = pypibox("users", "--file", str(htp))
    assert listed.stdout.split() == ["alice", "bob"] and "$2y$" not in listed.stdout
    assert pypibox("deluser", "alice", "--file", str(htp)).returncode == 0
    assert pypibox("users", "--file", str(htp)).stdout.split() == ["bob"]
    missing = pypibox("deluser", "zed", "--file", str(htp))
    assert missing.returncode == 1 and "no user named 'zed'" in missing.stderr


def test_check_names_weak_users(tmp_path):
    htp = tmp_path / "htpasswd"
    add_user(htp, "alice", "a")
    assert pypibox("check", "--file", str(htp)).returncode == 0
    subprocess.run(["htpasswd", "-bm", str(htp), "mallory", "pw"], check=True, capture_output=True)
    result = pypibox("check", "--file", str(htp))
    assert result.returncode == 1 and "mallory: MD5" in result.stderr and "alice" not in result.stderr


def wait_until(predicate, timeout: float = 2.0) -> bool:
    """Poll for up to ``timeout`` seconds (the documented bound for account changes)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def upload_status(srv, tmp_path, user, password, version, project="reload-pkg"):
    wheel = make_wheel(tmp_path / version, project, version)
    return post(srv, upload_form(wheel.name, wheel.read_bytes()), (user, password)).status


def test_added_and_removed_users_take_effect_within_two_seconds(tmp_path):
    srv = make_server(tmp_path).start()
    try:
        assert upload_status(srv, tmp_path, "bob", "bobs-pw", "0.1") == 403
        add_user(srv.htpasswd, "bob", "bobs-pw")
        versions = iter(f"1.{i}" for i in range(1000))
        assert wait_until(lambda: upload_status(srv, tmp_path, "bob", "bobs-pw", next(versions)) == 200)
        subprocess.run(["htpasswd", "-D", str(srv.htpasswd), "bob"], check=True, capture_output=True)
        assert wait_until(lambda: upload_status(srv, tmp_path, "bob", "bobs-pw", next(versions)) == 403)
        # alice is still in (reload-pkg is bob's project, so she uploads her own).
        assert upload_status(srv, tmp_path, "alice", PASSWORD, "9.0", "alice-pkg") == 200
    finally:
        srv.stop()


def test_broken_or_missing_file_keeps_the_last_good_accounts(tmp_path):
    srv = make_server(tmp_path).start()
    try:
        good = srv.htpasswd.read_text()
        auth = {"Authorization": basic("alice", PASSWORD)}
        for broken in ("", "garbage without colon\n", good[: len(good) // 2]):
            srv.htpasswd.write_text(broken)
            time.sleep(1.2)  # let the server look at the broken file
            assert srv.get("/simple/", headers=auth).status == 200
            assert upload_status(srv, tmp_path, "alice", PASSWORD, f"2.{len(broken)}") == 200
        srv.htpasswd.unlink()
        time.sleep(1.2)
        assert upload_status(srv, tmp_path, "alice", PASSWORD, "3.0") == 200
        assert "keeping the last good accounts" in srv.logtext()
        assert "Traceback" not in srv.logtext()
        srv.htpasswd.write_text(good)
    finally:
        srv.stop()


def test_a_worker_restarted_while_the_file_is_broken_keeps_the_last_good_accounts(tmp_path):
    srv = make_server(tmp_path, PYPI_WORKERS="1").start()
    try:
        srv.htpasswd.write_text("broken, no colon\n")
        pid = srv.proc.pid
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
        assert len(children) == 1
        os.kill(int(children[0]), signal.SIGKILL)  # gunicorn starts a new worker
        assert wait_until(lambda: "Booting worker" in srv.logtext().split(children[0])[-1], 10)
        srv.wait_ready()
        assert upload_status(srv, tmp_path, "alice", PASSWORD, "4.0") == 200
        assert srv.proc.poll() is None
    finally:
        srv.stop()
