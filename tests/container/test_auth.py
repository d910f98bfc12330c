"""auth/Makefile against the real engine: interact and adduser at a terminal, deluser, list,
check, install into the volume a running server reads without a restart."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import PASSWORD, htpasswd_bin
from pkgfactory import make_wheel

from .harness import (
    AUTH_IMAGE,
    Terminal,
    copy_repo,
    make,
    make_terminal,
    out,
    unique,
    upload_status,
)

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

NEW_PASSWORD = "n3w-Pa55-word"


def hashes(path: Path) -> dict[str, str]:
    lines = [line.split(":", 1) for line in path.read_text().splitlines() if ":" in line]
    return {user: digest for user, digest in lines}


def type_password(term: Terminal, password: str) -> None:
    term.expect(r"New password:")
    term.send(password)
    term.expect(r"Re-type new password:")
    term.send(password)


def interact_session(term: Terminal, first: str, second: str) -> None:
    """At the interact shell: create the file with ``first`` (-c -B), add ``second`` without
    -B, leave."""
    term.expect(r"Inside: ")
    term.send("echo READY$((6*7))")
    term.expect(r"READY42")
    term.send(f"htpasswd -c -B auth/htpasswd {first}")
    type_password(term, NEW_PASSWORD)
    term.expect(rf"Adding password for user {first}")
    term.send(f"htpasswd auth/htpasswd {second}")
    type_password(term, NEW_PASSWORD)
    term.expect(rf"Adding password for user {second}")
    term.send("exit")


def test_interact_writes_the_file_as_the_caller_and_install_is_live(deploy, tmp_path):
    dep = deploy()  # running, with alice
    started = dep.inspect("{{.State.StartedAt}}")
    htpasswd = dep.repo / "auth" / "htpasswd"

    term = make_terminal(dep.engine, "-C", "auth", "interact", f"AUTH_IMAGE={AUTH_IMAGE}",
                         cwd=dep.repo)
    try:
        interact_session(term, "bob", "carol")
        assert term.wait() == 0, term.text
    finally:
        term.close()
    assert htpasswd.stat().st_uid == os.getuid()  # the uid make passed with --user
    accounts = hashes(htpasswd)
    assert set(accounts) == {"bob", "carol"}  # -c started a new file: alice is gone
    assert accounts["bob"].startswith("$2y$")
    assert accounts["carol"].startswith("$2y$12$")  # no -B typed: bcrypt at the image's cost

    install = dep.make("-C", "auth", "install")
    assert install.returncode == 0, out(install)
    assert "installed 2 accounts" in install.stdout
    wheel = make_wheel(tmp_path / "dist", unique("live"), "1.0")
    deadline = time.monotonic() + 2.0  # README: the server rereads the file within a second
    while (status := upload_status(dep.url, wheel, "bob", NEW_PASSWORD)) != 200:
        assert time.monotonic() < deadline, f"bob still refused ({status}) 2s after install"
        time.sleep(0.1)
    assert upload_status(dep.url, make_wheel(tmp_path / "d2", unique("gone"), "1.0"),
                         "alice", PASSWORD) == 403
    assert dep.inspect("{{.State.StartedAt}} {{.RestartCount}}") == f"{started} 0"


@pytest.fixture
def nonroot_repo(session):
    """A repository copy and a home owned by an unused uid/gid that may reach the socket."""
    uid = session.nonroot
    base = Path(tempfile.mkdtemp(prefix="pypibox-nonroot-"))
    try:
        repo = copy_repo(base / "repo")
        (base / "home").mkdir()
        for path in [base, *base.rglob("*")]:
            os.lchown(path, uid, uid)
        yield uid, repo, base / "home"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_interact_as_a_non_root_user_writes_a_file_that_user_owns(engine, nonroot_repo):
    uid, repo, home = nonroot_repo
    term = make_terminal(engine, "-C", "auth", "interact", f"AUTH_IMAGE={AUTH_IMAGE}",
                         cwd=repo, as_user=uid, home=home)
    try:
        interact_session(term, "dora", "emil")
        assert term.wait() == 0, term.text
    finally:
        term.close()
    htpasswd = repo / "auth" / "htpasswd"
    assert (htpasswd.stat().st_uid, htpasswd.stat().st_gid) == (uid, uid)
    assert all(h.startswith("$2y$") for h in hashes(htpasswd).values())
    check = make(engine, "-C", "auth", "check", cwd=repo, as_user=uid, home=home)
    assert check.returncode == 0 and "2 users, all bcrypt" in check.stdout, out(check)


def test_adduser_deluser_list_check_install_through_the_image(engine, tmp_path):
    repo = copy_repo(tmp_path / "repo")
    volume = unique("auth")
    # HTPASSWD_BIN= : as on a machine without Apache's htpasswd, the image does the work.
    names = [f"AUTH_IMAGE={AUTH_IMAGE}", f"AUTH_VOLUME={volume}", "HTPASSWD_BIN="]
    try:
        for user in ("frank", "gina"):
            term = make_terminal(engine, "-C", "auth", "adduser", f"USER={user}", *names, cwd=repo)
            try:
                type_password(term, NEW_PASSWORD)
                assert term.wait() == 0, term.text
            finally:
                term.close()
        htpasswd = repo / "auth" / "htpasswd"
        assert set(hashes(htpasswd)) == {"frank", "gina"}
        assert all(h.startswith("$2y$12$") for h in hashes(htpasswd).values())
        verify = subprocess.run([htpasswd_bin(), "-vb", str(htpasswd), "gina", NEW_PASSWORD],
                                capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr

        listed = make(engine, "-C", "auth", "list", *names, cwd=repo)
        assert listed.returncode == 0 and listed.stdout.split() == ["frank", "gina"], out(listed)
        deleted = make(engine, "-C", "auth", "deluser", "USER=frank", *names, cwd=repo)
        assert deleted.returncode == 0, out(deleted)
        assert set(hashes(htpasswd)) == {"gina"}
        missing = make(engine, "-C", "auth", "deluser", "USER=frank", *names, cwd=repo)
        assert missing.returncode != 0 and "no user frank" in missing.stderr

        check = make(engine, "-C", "auth", "check", *names, cwd=repo)
        assert check.returncode == 0 and "1 users, all bcrypt" in check.stdout, out(check)
        install = make(engine, "-C", "auth", "install", *names, cwd=repo)
        assert install.returncode == 0, out(install)
        inside = engine.docker("run", "--rm", "-v", f"{volume}:/data/auth", AUTH_IMAGE, "sh", "-c",
                               "stat -c '%u:%g:%a' /data/auth /data/auth/htpasswd; "
                               "cat /data/auth/htpasswd").stdout.splitlines()
        assert inside[:2] == ["0:9898:750", "0:9898:640"]
        assert inside[2:] == htpasswd.read_text().splitlines()

        subprocess.run([htpasswd_bin(), "-bm", str(htpasswd), "hank", "md5-pass"], check=True,
                       capture_output=True)
        weak = make(engine, "-C", "auth", "install", *names, cwd=repo)
        assert weak.returncode != 0 and "user hank has a MD5" in weak.stderr, out(weak)
        still = engine.docker("run", "--rm", "-v", f"{volume}:/data/auth", AUTH_IMAGE,
                              "cat", "/data/auth/htpasswd").stdout
        assert "hank" not in still  # the volume keeps the last good file
    finally:
        engine.docker("volume", "rm", "-f", volume, check=False)
