"""The README's path from nothing: a fresh copy, one account, `make run`, upload, install."""

from __future__ import annotations

import json

import pytest
from conftest import http, run
from pkgfactory import make_sdist, make_wheel

from .harness import pip_install, twine_upload, unique

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]


def test_make_run_from_nothing_then_upload_install_import_and_run_again(deploy, tmp_path):
    dep = deploy(start=False)
    first = dep.run()
    assert f"The index is running: http://localhost:{dep.port}/" in first
    assert dep.inspect("{{.State.Health.Status}}") == "healthy"
    bindings = json.loads(dep.inspect("{{json .HostConfig.PortBindings}}"))
    assert bindings == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(dep.port)}]}
    cid, started = dep.inspect("{{.Id}}"), dep.inspect("{{.State.StartedAt}}")

    name = unique("from-nothing")
    dist = tmp_path / "dist"
    files = [make_wheel(dist, name, "1.0.0"), make_sdist(dist, name, "1.0.0")]
    upload = twine_upload(dep.url, files, "alice")
    assert upload.returncode == 0, upload.stdout + upload.stderr

    venv = tmp_path / "venv"
    pip = pip_install(dep.url, venv, f"{name}==1.0.0")
    assert pip.returncode == 0, pip.stdout + pip.stderr
    module = name.replace("-", "_")
    imported = run([str(venv / "bin" / "python"), "-c",
                    f"import {module}; print({module}.NAME, {module}.__version__)"])
    assert imported.stdout.strip() == f"{name} 1.0.0", imported.stderr

    again = dep.run()
    assert "already running with this image and these settings" in again
    assert dep.inspect("{{.Id}}") == cid
    assert dep.inspect("{{.State.StartedAt}}") == started
    assert dep.inspect("{{.RestartCount}}") == "0"
    listing = http("GET", f"{dep.url}/simple/{name}/").text
    assert all(f.name in listing for f in files)
