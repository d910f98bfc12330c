"""pdm against the real server: publish, install with README's safe setups, a closed index,
and the dependency confusion its merged sources bring back.

pdm's default source ``pypi`` is read from its ``pypi.url`` setting: here ``PDM_PYPI_URL`` points
it at the public stand-in on 127.0.0.1. The library is built with hatchling, which pdm installs
into an isolated build environment from the project's sources (the stand-in holds it); pdm's
own ``pdm-backend`` is not in the test venv, so no test project names it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clienttools import installed_version, out, sh, tool_env
from conftest import PASSWORD, basic

LIB = '''[project]
name = "{name}"
version = "{version}"
description = "A library published with pdm"
requires-python = ">=3.11"

[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"
{extra}'''


@pytest.fixture
def user(tmp_path, trap, indexes):
    """A fresh HOME whose "PyPI" is the public stand-in: run one command line in a folder."""
    env = tool_env(tmp_path / "home", trap, PDM_PYPI_URL=indexes.public.url + "/simple/")

    def do(command: str, cwd: Path, **extra: str):
        return sh(command, cwd, {**env, **extra}, trap)
    return do


def app(root: Path, deps: list[str], body: str = "") -> Path:
    """An application (``distribution = false``: pdm installs its dependencies only)."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "pbx-app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        f"dependencies = {json.dumps(deps)}\n\n[tool.pdm]\ndistribution = false\n\n" + body)
    return root


def lib(root: Path, name: str, version: str, extra: str = "") -> Path:
    project = root / name
    module = project / "src" / name.replace("-", "_")
    module.mkdir(parents=True)
    (module / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (project / "pyproject.toml").write_text(LIB.format(name=name, version=version, extra=extra))
    return project


def locked(project: Path) -> dict[str, str]:
    """name -> version from pdm.lock."""
    import tomllib
    data = tomllib.loads((project / "pdm.lock").read_text())
    return {p["name"]: p["version"] for p in data["package"]}


def source(name: str, url: str, *extra: str) -> str:
    return "[[tool.pdm.source]]\n" + f'name = "{name}"\nurl = "{url}"\n' + "".join(
        line + "\n" for line in extra)


# --- publishing ---------------------------------------------------------------------------------

def test_pdm_publish_builds_in_isolation_then_skip_existing(indexes, user, tmp_path):
    srv = indexes.private
    # The build backend comes through the private index (its fallback: the public stand-in).
    project = lib(tmp_path, "pbx-pdm-lib", "1.0", "\n" + source("pypi", f"{srv.url}/simple/"))
    first = user(f"pdm publish -r {srv.url}/ -u alice -P {PASSWORD}", project)
    assert first.returncode == 0, out(first)
    page = srv.get("/simple/pbx-pdm-lib/").text
    assert "pbx_pdm_lib-1.0-py3-none-any.whl" in page and "pbx_pdm_lib-1.0.tar.gz" in page

    again = user(f"pdm publish --no-build -r {srv.url}/ -u alice -P {PASSWORD}", project)
    assert again.returncode != 0
    assert "409" in out(again) and "already exists" in out(again)
    skipped = user(f"pdm publish --no-build --skip-existing -r {srv.url}/ -u alice -P {PASSWORD}",
                   project)
    assert skipped.returncode == 0, out(skipped)
    assert out(skipped).count("because it appears to already exist") == 2

    wrong = user(f"pdm publish -r {srv.url}/ -u alice -P not-the-password",
                 lib(tmp_path / "v2", "pbx-pdm-lib", "2.0",
                     "\n" + source("pypi", f"{srv.url}/simple/")))
    assert wrong.returncode != 0
    assert "403" in out(wrong)
    assert "2.0" not in srv.get("/simple/pbx-pdm-lib/").text


def test_pdm_publish_to_a_named_repository_with_environment_credentials(indexes, user, tmp_path):
    srv = indexes.closed
    project = lib(tmp_path, "pbx-pdm-closed", "1.0")  # backend from "PyPI" (the stand-in)
    configured = user(f"pdm config repository.private.url {srv.url}/", project)
    assert configured.returncode == 0, out(configured)
    result = user("pdm publish -r private", project, PDM_PUBLISH_USERNAME="alice",
                  PDM_PUBLISH_PASSWORD=PASSWORD)
    assert result.returncode == 0, out(result)
    page = srv.get("/simple/pbx-pdm-closed/", headers={"Authorization": basic("alice", PASSWORD)})
    assert "pbx_pdm_closed-1.0-py3-none-any.whl" in page.text


# --- installing: README's safe setups -------------------------------------------------------------

def test_pdm_private_source_named_pypi_replaces_the_public_index(indexes, user, tmp_path):
    """README: name the private source ``pypi``; it sends the names it lacks on."""
    srv = indexes.private
    project = app(tmp_path / "app", [], source("pypi", f"{srv.url}/simple/"))
    result = user("pdm add pbx-internal pbx-public-only", project)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "1.0"
    assert installed_version(project / ".venv", "pbx_public_only") == "1.0"  # via the fallback
    assert locked(project) == {"pbx-internal": "1.0", "pbx-public-only": "1.0"}


def test_pdm_include_packages_pins_the_name_to_the_private_index(indexes, user, tmp_path):
    """README: keep PyPI, and tie the private names to the private source."""
    srv = indexes.private
    project = app(tmp_path / "app", ["pbx-internal", "pbx-public-only"],
                  source("private", f"{srv.url}/simple/", 'include_packages = ["pbx-internal"]'))
    result = user("pdm install", project)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "1.0"
    assert locked(project)["pbx-internal"] == "1.0"


def test_pdm_merged_sources_let_the_public_index_win(indexes, user, tmp_path):
    """README's warning: by default pdm merges every source and takes the highest version."""
    srv = indexes.private
    project = app(tmp_path / "app", ["pbx-internal"], source("private", f"{srv.url}/simple/"))
    result = user("pdm install", project)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "9.0"  # the attacker's
    assert locked(project)["pbx-internal"] == "9.0"


# --- a closed index -------------------------------------------------------------------------------

def test_pdm_closed_index_with_credentials_from_the_environment(indexes, user, tmp_path):
    srv = indexes.closed
    host = srv.url.removeprefix("http://")
    project = app(tmp_path / "app", ["pbx-internal", "pbx-public-only"],
                  source("pypi", f"http://${{PYPI_USER}}:${{PYPI_PASSWORD}}@{host}/simple/"))
    wrong = user("pdm lock", project, PYPI_USER="alice", PYPI_PASSWORD="not-the-password")
    assert wrong.returncode != 0
    assert "Unable to find candidates for pbx-internal" in out(wrong)

    result = user("pdm install", project, PYPI_USER="alice", PYPI_PASSWORD=PASSWORD)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "1.0"
    assert PASSWORD not in (project / "pdm.lock").read_text()
    assert PASSWORD not in (project / "pyproject.toml").read_text()
