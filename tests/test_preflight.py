"""Configuration and preflight: each failure has its documented message and exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, add_user, clean_env, make_server

# As root, permission bits only bind once the capabilities that override them are gone.
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def start(env: dict[str, str], obey_permissions: bool = False, timeout: float = 20):
    """Run the entrypoint until it exits (preflight failures exit at once)."""
    prefix = NO_OVERRIDE if obey_permissions and os.getuid() == 0 else []
    return subprocess.run([*prefix, sys.executable, "-m", "pypibox"],
                          env=clean_env(PYTHONPATH=str(ROOT), **env),
                          capture_output=True, text=True, timeout=timeout, cwd="/")


def base_env(srv) -> dict[str, str]:
    return {"PYPI_HOST": "127.0.0.1", "PYPI_PORT": str(srv.port),
            "PYPI_PACKAGES_DIR": str(srv.packages), "PYPI_HTPASSWD": str(srv.htpasswd)}


@pytest.mark.parametrize("name, value, words", [
    ("PYPI_PORT", "eighty", "not a whole number"),
    ("PYPI_PORT", "70000", "out of range"),
    ("PYPI_AUTHENTICATE", "update,everything", "must list one or more of"),
    ("PYPI_AUTHENTICATE", "download", "must include update"),
    ("PYPI_OVERWRITE", "maybe", "must be on or off"),
    ("PYPI_FALLBACK_URL", "ftp://example.invalid/", "http:// or https://"),
    ("PYPI_WORKERS", "0", "out of range"),
    ("PYPI_MAX_UPLOAD_SIZE", "lots", "positive size"),
    ("PYPI_LOG_LEVEL", "loud", "must be one of"),
])
def test_malformed_setting_is_a_clear_error_not_a_traceback(tmp_path, name, value, words):
    srv = make_server(tmp_path)
    result = start({**base_env(srv), name: value})
    assert result.returncode == 2
    assert f"{name}={value!r}" in result.stderr and words in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_packages_dir(tmp_path):
    srv = make_server(tmp_path)
    env = {**base_env(srv), "PYPI_PACKAGES_DIR": str(tmp_path / "nowhere")}
    result = start(env)
    assert result.returncode == 3
    assert f"packages directory {tmp_path / 'nowhere'} does not exist" in result.stderr


def test_packages_path_is_a_file(tmp_path):
    srv = make_server(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = start({**base_env(srv), "PYPI_PACKAGES_DIR": str(afile)})
    assert result.returncode == 3 and "is not a directory" in result.stderr


def test_packages_dir_not_writable(tmp_path):
    srv = make_server(tmp_path)
    os.chmod(srv.packages, 0o555)
    result = start(base_env(srv), obey_permissions=True)
    assert result.returncode == 3
    assert "is not writable" in result.stderr


def test_missing_htpasswd(tmp_path):
    srv = make_server(tmp_path)
    srv.htpasswd.unlink()
    result = start(base_env(srv))
    assert result.returncode == 4
    assert f"{srv.htpasswd}: file not found" in result.stderr
    assert "htpasswd -c -B" in result.stderr


def test_empty_htpasswd(tmp_path):
    srv = make_server(tmp_path)
    srv.htpasswd.write_text("")
    result = start(base_env(srv))
    assert result.returncode == 4
    assert "has no users" in result.stderr and "htpasswd -B" in result.stderr


def test_unparsable_htpasswd(tmp_path):
    srv = make_server(tmp_path)
    srv.htpasswd.write_text(srv.htpasswd.read_text() + "this line has no colon\n")
    result = start(base_env(srv))
    assert result.returncode == 4 and "line 2 is not of the form user:hash" in result.stderr


def test_htpasswd_is_a_directory(tmp_path):
    srv = make_server(tmp_path)
    result = start({**base_env(srv), "PYPI_HTPASSWD": str(srv.packages)})
    assert result.returncode == 4 and "is a directory" in result.stderr


def test_unreadable_htpasswd(tmp_path):
    srv = make_server(tmp_path)
    srv.htpasswd.chmod(0o000)
    result = start(base_env(srv), obey_permissions=True)
    assert result.returncode == 4 and "permission denied" in result.stderr


WEAK = {
    "md5user": "$apr1$uuphE3.n$GUCMloK7lmVB4oqvaKq2D1",
    "shauser": "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
    "cryptuser": "rl0uE3Bgfnrwc",
    "plainuser": "password",
}


def test_weak_hashes_are_refused_naming_users_never_hashes(tmp_path):
    srv = make_server(tmp_path)
    with srv.htpasswd.open("a") as fh:
        for user, hashed in WEAK.items():
            fh.write(f"{user}:{hashed}\n")
    result = start(base_env(srv))
    assert result.returncode == 4
    for user, hashed in WEAK.items():
        assert f"{user}:" in result.stderr
        assert f"htpasswd -B {srv.htpasswd} {user}" in result.stderr
        assert hashed not in result.stderr
    assert "alice" not in result.stderr
    assert "MD5 ($apr1$)" in result.stderr and "SHA-1 ({SHA})" in result.stderr


def test_htpasswd_written_by_apache_without_B_is_refused(tmp_path):
    """The seed's add command on a host with Apache's own htpasswd writes MD5."""
    srv = make_server(tmp_path)
    subprocess.run(["htpasswd", "-b", str(srv.htpasswd), "carol", "pw"], check=True, capture_output=True)
    result = start(base_env(srv))
    assert result.returncode == 4 and "carol: MD5" in result.stderr


def test_preflight_never_writes_to_the_accounts_dir(tmp_path):
    srv = make_server(tmp_path)
    before = sorted(p.name for p in srv.htpasswd.parent.iterdir())
    srv.start()
    srv.stop()
    assert sorted(p.name for p in srv.htpasswd.parent.iterdir()) == before


def test_a_good_file_from_debian_htpasswd_starts_the_server(tmp_path):
    srv = make_server(tmp_path, users={})
    add_user(srv.htpasswd, "dave", "pw-of-dave")
    srv.start()
    try:
        assert srv.get("/health").status == 200
    finally:
        srv.stop()


def test_a_port_another_server_listens_on_is_refused(tmp_path):
    """A plain listener (not ours) on the port: a clear message, exit 2, no traceback."""
    srv = make_server(tmp_path)
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", srv.port))
        other.listen()
        result = start(base_env(srv))
    assert result.returncode == 2, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{srv.port}" in out
    assert "PYPI_PORT" in out
    assert "Traceback" not in out


def test_a_second_pypibox_on_the_same_port_is_refused(tmp_path):
    """The workers share their port (SO_REUSEPORT); a second server must not join them."""
    first = make_server(tmp_path).start()
    try:
        second = make_server(tmp_path)
        result = start({**base_env(second), "PYPI_PORT": str(first.port)})
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"cannot listen on 127.0.0.1:{first.port}" in result.stdout + result.stderr
        assert first.get("/health").status == 200
    finally:
        first.stop()
