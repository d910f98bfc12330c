"""flit against the real server: publish (flit builds in its own process with flit_core, no
build environment to fetch), then install what it published with pip, from an open and a closed
index. flit has no option to skip files already there: a re-publish is a 409 error.
"""

from __future__ import annotations

from pathlib import Path

from clienttools import installed_version, out
from conftest import PASSWORD

PYPROJECT = '''[build-system]
requires = ["flit_core>=3.4,<5"]
build-backend = "flit_core.buildapi"

[project]
name = "{name}"
dynamic = ["version", "description"]
'''


# The public stand-in needs no build backend: these tests build nothing through it.
BUILD_BACKENDS: list[str] = []


def lib(root: Path, name: str, version: str) -> Path:
    project = root / name
    module = project / name.replace("-", "_")
    module.mkdir(parents=True)
    (module / "__init__.py").write_text(f'"""A library published with flit."""\n'
                                        f'__version__ = "{version}"\n')
    (project / "pyproject.toml").write_text(PYPROJECT.format(name=name))
    return project


def write_pypirc(home: Path, url: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / ".pypirc").write_text("[distutils]\nindex-servers =\n  local\n\n"
                                  f"[local]\nrepository = {url}/\nusername = alice\n"
                                  f"password = {PASSWORD}\n")


def test_flit_publish_with_environment_variables_then_pip_install(indexes, user, tmp_path):
    srv = indexes.private
    project = lib(tmp_path, "pbx-flit-lib", "1.0")
    creds = {"FLIT_INDEX_URL": f"{srv.url}/", "FLIT_USERNAME": "alice",
             "FLIT_PASSWORD": PASSWORD}
    result = user("flit publish", project, **creds)
    assert result.returncode == 0, out(result)
    page = srv.get("/simple/pbx-flit-lib/").text
    assert "pbx_flit_lib-1.0-py2.py3-none-any.whl" in page and "pbx_flit_lib-1.0.tar.gz" in page

    again = user("flit publish", project, **creds)
    assert again.returncode != 0
    assert "409 Client Error" in out(again) and "already exists" in out(again)

    wrong = user("flit publish", lib(tmp_path / "v2", "pbx-flit-lib", "2.0"),
                 **{**creds, "FLIT_PASSWORD": "not-the-password"})
    assert wrong.returncode != 0
    assert "403 Client Error" in out(wrong)
    assert "2.0" not in srv.get("/simple/pbx-flit-lib/").text

    venv = tmp_path / "venv"
    installed = user(f"python3 -m venv {venv} && {venv}/bin/pip install --no-cache-dir "
                     f"--index-url {srv.url}/simple/ pbx-flit-lib", tmp_path)
    assert installed.returncode == 0, out(installed)
    assert installed_version(venv, "pbx_flit_lib") == "1.0"


def test_flit_publish_with_pypirc_to_a_closed_index_then_pip_install(indexes, user, tmp_path):
    srv = indexes.closed
    write_pypirc(tmp_path / "home", srv.url)
    project = lib(tmp_path, "pbx-flit-closed", "1.0")
    result = user("flit publish --repository local", project)
    assert result.returncode == 0, out(result)

    venv = tmp_path / "venv"
    assert user(f"python3 -m venv {venv}", tmp_path).returncode == 0
    anonymous = user(f"{venv}/bin/pip install --no-cache-dir --index-url {srv.url}/simple/ "
                     "pbx-flit-closed", tmp_path)
    assert anonymous.returncode != 0
    authed = srv.url.replace("http://", f"http://alice:{PASSWORD}@")
    installed = user(f"{venv}/bin/pip install --no-cache-dir --index-url {authed}/simple/ "
                     "pbx-flit-closed", tmp_path)
    assert installed.returncode == 0, out(installed)
    assert installed_version(venv, "pbx_flit_closed") == "1.0"
