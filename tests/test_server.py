"""The real entrypoint over real HTTP: upload with twine, install with pip, auth, overwrite."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import pytest
from conftest import PASSWORD, basic, clean_env, http, run
from pkgfactory import make_sdist, make_wheel
from support import twine_upload, upload_form


def test_upload_with_twine_install_with_pip_and_import(server, tmp_path):
    dist = tmp_path / "dist"
    wheel = make_wheel(dist, "hello-pypibox", "1.0.0")
    sdist = make_sdist(dist, "hello-pypibox", "1.0.0")
    result = twine_upload(server, [wheel, sdist])
    assert result.returncode == 0, result.stdout + result.stderr

    listing = server.get("/simple/hello-pypibox/").text
    for path in (wheel, sdist):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{path.name}#sha256={digest}" in listing
        assert (server.packages / path.name).read_bytes() == path.read_bytes()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps",
               "--extra-index-url", server.url + "/simple/", "hello-pypibox==1.0.0"])
    assert pip.returncode == 0, pip.stdout + pip.stderr
    imported = run([str(venv / "bin" / "python"), "-c",
                    "import hello_pypibox; print(hello_pypibox.NAME, hello_pypibox.__version__)"])
    assert imported.stdout.strip() == "hello-pypibox 1.0.0"


def post(server, body_ct, auth=None):
    body, ct = body_ct
    headers = {"Content-Type": ct}
    if auth:
        headers["Authorization"] = basic(*auth)
    return http("POST", server.url + "/", data=body, headers=headers)


def test_upload_without_credentials_is_401_with_challenge(server, tmp_path):
    wheel = make_wheel(tmp_path, "nocreds", "1.0")
    resp = post(server, upload_form(wheel.name, wheel.read_bytes()))
    assert resp.status == 401
    assert resp.headers["www-authenticate"].startswith("Basic")
    assert not (server.packages / wheel.name).exists()


def test_wrong_password_is_403_and_nothing_is_stored(server, tmp_path):
    wheel = make_wheel(tmp_path, "wrongpw", "1.0")
    result = twine_upload(server, [wheel], "alice", "not-the-password")
    assert result.returncode != 0
    assert "403" in result.stdout + result.stderr
    # Nothing but the server's own index state (.pypibox/, there from the start).
    assert [p.name for p in server.packages.iterdir() if p.name != ".pypibox"] == []


def test_second_upload_of_same_file_is_refused_unless_overwrite(server_factory, tmp_path):
    srv = server_factory()
    wheel = make_wheel(tmp_path / "a", "dup-pkg", "1.0")
    assert twine_upload(srv, [wheel]).returncode == 0
    changed = make_wheel(tmp_path / "b", "dup-pkg", "1.0", payload=b"other bytes")
    again = twine_upload(srv, [changed])
    assert again.returncode != 0
    assert "already exists" in again.stdout + again.stderr
    assert (srv.packages / wheel.name).read_bytes() == wheel.read_bytes()

    srv2 = server_factory(PYPI_OVERWRITE="on")
    assert twine_upload(srv2, [wheel]).returncode == 0
    assert twine_upload(srv2, [changed]).returncode == 0
    assert (srv2.packages / wheel.name).read_bytes() == changed.read_bytes()


def test_every_listing_after_an_upload_shows_the_file(server_factory, tmp_path):
    srv = server_factory(PYPI_WORKERS="3", PYPI_THREADS="2")
    for i in range(3):
        wheel = make_wheel(tmp_path, "fresh-pkg", f"1.{i}")
        assert post(srv, upload_form(wheel.name, wheel.read_bytes()), ("alice", PASSWORD)).status == 200
        for _ in range(20):
            assert wheel.name in srv.get("/simple/fresh-pkg/").text
            assert "fresh-pkg" in srv.get("/simple/").text
            download = srv.get(f"/packages/{wheel.name}")
            assert download.status == 200 and download.body == wheel.read_bytes()


def test_long_password_from_apache_htpasswd_works_as_apache_cuts_it(server_factory, tmp_path):
    long_pw = "x" * 40 + "é" * 30  # 100 characters, 130 bytes
    srv = server_factory(users={"bob": long_pw})
    wheel = make_wheel(tmp_path, "longpw", "1.0")
    assert post(srv, upload_form(wheel.name, wheel.read_bytes()), ("bob", long_pw)).status == 200


@pytest.mark.parametrize("password", ["wrong", "y" * 500, "pässwörd-ünïcode", "", "a:b:c"])
def test_bad_passwords_get_403_never_500(server, tmp_path, password):
    wheel = make_wheel(tmp_path, "badpw", "1.0")
    resp = post(server, upload_form(wheel.name, wheel.read_bytes()), ("alice", password))
    assert resp.status in (401, 403)
    assert "Traceback" not in server.logtext()


def test_unknown_user_is_403(server, tmp_path):
    wheel = make_wheel(tmp_path, "unknown", "1.0")
    assert post(server, upload_form(wheel.name, wheel.read_bytes()), ("mallory", PASSWORD)).status == 403


def test_credentials_never_reach_the_log(server, tmp_path):
    wheel = make_wheel(tmp_path, "secretlog", "1.0")
    post(server, upload_form(wheel.name, wheel.read_bytes()), ("alice", PASSWORD))
    post(server, upload_form(wheel.name, wheel.read_bytes()), ("alice", "Wr0ngSecretValue"))
    log = server.logtext()
    hashes = server.htpasswd.read_text().split(":", 1)[1].strip()
    encoded = basic("alice", PASSWORD).split()[1]
    for secret in (PASSWORD, "Wr0ngSecretValue", hashes, encoded, "alice"):
        assert secret not in log


def test_health_and_welcome_page(server):
    assert server.get("/health").status == 200
    page = server.get("/").text
    assert "extra-index-url" in page and server.url + "/simple/" in page


def test_downloads_are_open_by_default_and_protected_on_request(server_factory, tmp_path):
    srv = server_factory(PYPI_AUTHENTICATE="update,download,list")
    wheel = make_wheel(tmp_path, "closed", "1.0")
    assert post(srv, upload_form(wheel.name, wheel.read_bytes()), ("alice", PASSWORD)).status == 200
    assert srv.get("/simple/closed/").status == 401
    assert srv.get(f"/packages/{wheel.name}").status == 401
    ok = srv.get(f"/packages/{wheel.name}", headers={"Authorization": basic("alice", PASSWORD)})
    assert ok.status == 200 and ok.body == wheel.read_bytes()
    assert srv.get("/simple/closed/", headers={"Authorization": basic("alice", "nope")}).status == 403


def test_sigterm_stops_the_server_gracefully(server_factory):
    srv = server_factory()
    assert srv.stop() == 0
    assert "Shutting down" in srv.logtext()


def test_concurrent_uploads_of_one_new_name_have_one_winner(server, tmp_path):
    a = make_wheel(tmp_path / "a", "race", "1.0", payload=b"A" * 100_000)
    b = make_wheel(tmp_path / "b", "race", "1.0", payload=b"B" * 100_000)
    results = {}

    def send(key, path):
        results[key] = post(server, upload_form(path.name, path.read_bytes()), ("alice", PASSWORD)).status

    threads = [threading.Thread(target=send, args=(k, p)) for k, p in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [200, 409]
    stored = (server.packages / a.name).read_bytes()
    assert stored in (a.read_bytes(), b.read_bytes())
    # No leftover upload temp file; .pypibox is the index's cache (pypibox/index.py).
    assert not [p for p in server.packages.iterdir() if p.name.startswith(".") and p.name != ".pypibox"]


def test_every_log_line_goes_to_stdout(tmp_path):
    """The container's log is its standard output: gunicorn's own lines included."""
    from conftest import ROOT, make_server

    srv = make_server(tmp_path)
    env = clean_env(PYPI_HOST="127.0.0.1", PYPI_PORT=str(srv.port), PYTHONPATH=str(ROOT),
                    PYPI_PACKAGES_DIR=str(srv.packages), PYPI_HTPASSWD=str(srv.htpasswd))
    proc = subprocess.Popen([sys.executable, "-m", "pypibox"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        srv.proc = proc
        srv.log = tmp_path / "unused.log"
        srv.log.write_text("")
        srv.wait_ready()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "Booting worker" in out and "Listening at" in out and "GET /health" in out
    assert "serving" in out and "Shutting down" in out
    assert err == ""
