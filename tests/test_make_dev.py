"""`make dev`: the same entrypoint on the host, configured by PYPI_* variables, no Docker."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from conftest import PASSWORD, ROOT, add_user, clean_env, free_port, http
from pkgfactory import make_wheel
from support import twine_upload
from test_makefiles import copy_build_files


def test_make_dev_serves_uploads_into_data_packages(tmp_path):
    repo = copy_build_files(tmp_path / "repo")
    add_user(repo / "auth" / "htpasswd", "alice", PASSWORD)
    port = free_port()
    venv = ROOT / ".venv"
    log = open(tmp_path / "dev.log", "wb")
    proc = subprocess.Popen(["make", "dev", f"VENV={venv}", f"PYPI_PORT={port}"], cwd=repo,
                            env=clean_env(PYPI_OVERWRITE="on"), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if http("GET", url + "/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError((tmp_path / "dev.log").read_text())
        wheel = make_wheel(tmp_path / "dist", "dev-pkg", "1.0")
        up = twine_upload(url, [wheel])
        assert up.returncode == 0, up.stdout + up.stderr
        assert (repo / "data" / "packages" / wheel.name).read_bytes() == wheel.read_bytes()
        # PYPI_OVERWRITE from the environment reached the server: a second upload is accepted.
        again = twine_upload(url, [wheel])
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()
    assert "Packages in" in (tmp_path / "dev.log").read_text()
