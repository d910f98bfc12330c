"""Files whose names mislead pypiserver's guess, through a real server: listed under the project
their metadata names, and installed by pip and uv under that name.

Built here (pkgfactory), named like the files PyPI holds that the old index misfiled:
``connected-components-3d-1.9.0.tar.gz`` (was listed under ``connected-components``),
``python-3parclient-4.2.12.tar.gz`` (under ``python``), a build-tagged wheel (PEP 700
``versions`` said ``2.0.0-1``) and a legacy ``-post1`` sdist name (was refused).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import PASSWORD, basic, clean_env, http, run, venv_bin
from pkgfactory import make_sdist, make_wheel
from support import wait_for

JSON = "application/vnd.pypi.simple.v1+json"
BOUNDARY = "index-http-boundary"

#: project -> (file name, version the metadata says, module to import)
FILES = {
    "connected-components-3d": ("connected-components-3d-1.9.0.tar.gz", "1.9.0",
                                "connected_components_3d"),
    "python-3parclient": ("python-3parclient-4.2.12.tar.gz", "4.2.12", "python_3parclient"),
    "docpkg": ("docpkg-0.15.1-post1.tar.gz", "0.15.1.post1", "docpkg"),
    "tagged": ("tagged-2.0.0-1-py3-none-any.whl", "2.0.0", "tagged"),
}
#: Names the old index listed them under: nothing may be there.
WRONG = ("connected-components", "python", "docpkg-0-15-1")


def build(dest: Path) -> dict[str, Path]:
    """Each file of FILES, written to ``dest``."""
    out = {}
    for project, (filename, version, _module) in FILES.items():
        if filename.endswith(".whl"):
            out[project] = make_wheel(dest, project, version, filename=filename)
        else:
            out[project] = make_sdist(dest, project, version.replace(".post1", "-post1"),
                                      filename=filename)
    return out


def upload(srv, path: Path) -> tuple[int, str]:
    """POST a file as twine does (the legacy upload API); status and body."""
    fields = {":action": "file_upload", "protocol_version": "1", "name": path.name.split("-")[0]}
    body = b"".join(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'
                    f"{v}\r\n".encode() for k, v in fields.items())
    body += (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; '
             f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
             ).encode() + path.read_bytes() + f"\r\n--{BOUNDARY}--\r\n".encode()
    resp = http("POST", srv.url + "/", data=body, headers={
        "Authorization": basic("alice", PASSWORD),
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    return resp.status, resp.text


def page(srv, project: str) -> dict:
    resp = srv.get(f"/simple/{project}/", headers={"Accept": JSON})
    assert resp.status == 200, (project, resp.status, resp.text)
    return json.loads(resp.body)


def check_listed(srv, files: dict[str, Path]) -> None:
    for project, (filename, version, _module) in FILES.items():
        data = page(srv, project)
        assert [f["filename"] for f in data["files"]] == [filename]
        assert data["versions"] == [version]
        got = srv.get(f"/packages/{filename}")
        assert got.status == 200 and got.body == files[project].read_bytes()
    for wrong in WRONG:
        assert srv.get(f"/simple/{wrong}/").status == 404, wrong
    names = [p["name"] for p in json.loads(srv.get("/simple/", headers={"Accept": JSON}).body)
             ["projects"]]
    assert sorted(names) == sorted(FILES)


def installs(srv, tmp_path: Path, tool: str) -> None:
    """``tool`` installs every project by its own name, from this index alone."""
    index = srv.url + "/simple/"
    for project, (_filename, version, module) in FILES.items():
        target = tmp_path / f"{tool}-{project}"
        if tool == "pip":
            cmd = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--no-deps",
                   "--no-build-isolation", "--target", str(target), "--index-url", index,
                   f"{project}=={version}"]
        else:
            cmd = [venv_bin("uv"), "pip", "install", "--no-deps", "--no-build-isolation",
                   "--python", sys.executable, "--target", str(target), "--index-url", index,
                   "--cache-dir", str(tmp_path / "uv-cache"), f"{project}=={version}"]
        result = run(cmd)
        assert result.returncode == 0, f"{tool} {project}:\n{result.stdout}{result.stderr}"
        imported = run([sys.executable, "-c", f"import {module}; print({module}.__version__)"],
                       env=clean_env(PYTHONPATH=str(target)))
        assert imported.stdout.strip() in (version, version.replace(".post1", "-post1")), \
            imported.stderr


@pytest.mark.parametrize("how", ["uploaded", "copied-in"])
def test_misleading_names_are_listed_and_installed_under_their_own_project(
        server_factory, tmp_path, how):
    srv = server_factory(PYPI_FALLBACK="off")
    files = build(tmp_path / "dist")
    for project, path in files.items():
        if how == "uploaded":
            status, text = upload(srv, path)
            assert status == 200, (path.name, status, text)
        else:
            (srv.packages / path.name).write_bytes(path.read_bytes())
    # Copied in by hand: listed within two seconds (README), later on a loaded machine.
    wait_for(lambda: sorted(p["name"] for p in json.loads(
        srv.get("/simple/", headers={"Accept": JSON}).body)["projects"]) == sorted(FILES),
        timeout=10, what="every copied file's project in /simple/")
    check_listed(srv, files)
    installs(srv, tmp_path, "pip")
    installs(srv, tmp_path, "uv")


def test_build_tagged_wheel_versions_and_a_removal(server_factory, tmp_path):
    """PEP 700 ``versions`` of a build-tagged binary wheel; remove_pkg by the metadata's
    version removes it from every worker's answer at once."""
    srv = server_factory(PYPI_FALLBACK="off", PYPI_WORKERS="3")
    wheel = make_wheel(tmp_path, "matplotlib", "2.0.0",
                       filename="matplotlib-2.0.0-1-cp36-cp36m-manylinux1_x86_64.whl")
    assert upload(srv, wheel)[0] == 200
    assert page(srv, "matplotlib")["versions"] == ["2.0.0"]
    form = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name=":action"\r\n\r\n'
            f'remove_pkg\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="name"\r\n\r\n'
            f'matplotlib\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="version"'
            f'\r\n\r\n2.0.0\r\n--{BOUNDARY}--\r\n')
    resp = http("POST", srv.url + "/", data=form.encode(), headers={
        "Authorization": basic("alice", PASSWORD),
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert resp.status == 200, resp.text
    for _ in range(12):  # three workers, each answers from the shared index at once
        assert srv.get("/simple/matplotlib/").status == 404
        assert srv.get(f"/packages/{wheel.name}").status == 404
