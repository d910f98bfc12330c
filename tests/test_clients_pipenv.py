"""pipenv against the real server: install with README's safe setups, a closed index, and what
happens when the public index is the first source. (pipenv has no publish command: README sends
its users to twine or uv publish, tested in test_clients_publish.py.)

The Pipfiles name the public stand-in on 127.0.0.1 wherever a user's would name PyPI.
"""

from __future__ import annotations

import json
from pathlib import Path

from clienttools import installed_version, out
from conftest import PASSWORD

# The public stand-in needs no build backend: these tests build nothing through it.
BUILD_BACKENDS: list[str] = []


def source(name: str, url: str) -> str:
    return f'[[source]]\nname = "{name}"\nurl = "{url}"\nverify_ssl = true\n\n'


def pipfile(root: Path, sources: str, packages: str = "") -> Path:
    root.mkdir(parents=True)
    (root / "Pipfile").write_text(sources + "[packages]\n" + packages)
    return root


def locked(project: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, index name) from Pipfile.lock."""
    data = json.loads((project / "Pipfile.lock").read_text())
    return {name: (entry["version"], entry.get("index", ""))
            for name, entry in data["default"].items()}


def test_pipenv_private_index_as_the_only_source(indexes, user, tmp_path):
    """README: the private index is the Pipfile's one source; it sends the rest on."""
    srv = indexes.private
    project = pipfile(tmp_path / "app", source("private", f"{srv.url}/simple/"))
    result = user("pipenv install pbx-internal pbx-public-only", project)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "1.0"
    assert installed_version(project / ".venv", "pbx_public_only") == "1.0"  # via the fallback
    assert locked(project) == {"pbx-internal": ("==1.0", "private"),
                               "pbx-public-only": ("==1.0", "private")}


def test_pipenv_private_index_first_wins_for_names_without_index(indexes, user, tmp_path):
    """README: the private index as the first source; PyPI after it is asked for nothing."""
    public, srv = indexes.public, indexes.private
    project = pipfile(tmp_path / "app", source("private", f"{srv.url}/simple/")
                      + source("pypi", f"{public.url}/simple/"), 'pbx-internal = "*"\n')
    result = user("pipenv install", project)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "1.0"
    assert locked(project)["pbx-internal"] == ("==1.0", "private")


def test_pipenv_index_pins_the_name_to_the_private_source(indexes, user, tmp_path):
    """README: PyPI first, the private index second, and ``index=`` for each private name."""
    public, srv = indexes.public, indexes.private
    project = pipfile(tmp_path / "app", source("pypi", f"{public.url}/simple/")
                      + source("private", f"{srv.url}/simple/"))
    result = user("pipenv install --index=private pbx-internal", project)
    assert result.returncode == 0, out(result)
    assert 'pbx-internal = {version = "*", index = "private"}' in (project / "Pipfile").read_text()
    also = user("pipenv install pbx-public-only", project)
    assert also.returncode == 0, out(also)
    assert installed_version(project / ".venv", "pbx_internal") == "1.0"
    assert locked(project) == {"pbx-internal": ("==1.0", "private"),
                               "pbx-public-only": ("==1.0", "pypi")}


def test_pipenv_without_index_takes_the_name_from_the_first_source(indexes, user, tmp_path):
    """README's warning: a private name without ``index=`` comes from the first source."""
    public, srv = indexes.public, indexes.private
    project = pipfile(tmp_path / "app", source("pypi", f"{public.url}/simple/")
                      + source("private", f"{srv.url}/simple/"), 'pbx-internal = "*"\n')
    result = user("pipenv install", project)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "9.0"  # the attacker's
    assert locked(project)["pbx-internal"] == ("==9.0", "pypi")


def test_pipenv_closed_index_with_credentials_from_the_environment(indexes, user, tmp_path):
    srv = indexes.closed
    host = srv.url.removeprefix("http://")
    project = pipfile(tmp_path / "app",
                      source("private", f"http://${{PYPI_USER}}:${{PYPI_PASSWORD}}@{host}/simple/"),
                      'pbx-internal = "*"\n')
    wrong = user("pipenv install", project, PYPI_USER="alice", PYPI_PASSWORD="not-the-password")
    assert wrong.returncode != 0
    assert "No matching distribution found for pbx-internal" in out(wrong)
    assert "not-the-password" not in out(wrong)

    result = user("pipenv install", project, PYPI_USER="alice", PYPI_PASSWORD=PASSWORD)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "1.0"
    assert PASSWORD not in (project / "Pipfile.lock").read_text()
    assert PASSWORD not in (project / "Pipfile").read_text()
