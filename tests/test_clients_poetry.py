"""poetry against the real server: publish, install with README's safe setups, a closed index,
and the dependency confusion its ``supplemental`` source brings back.

poetry's implicit PyPI is https://pypi.org, which no test may reach: where a test needs "PyPI"
next to the private index, the public stand-in is declared as the project's primary source
named ``public`` (with a primary source configured, poetry disables the implicit PyPI).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clienttools import installed_version, out
from conftest import PASSWORD, basic
from pkgfactory import _norm

LIB = '''[project]
name = "{name}"
version = "{version}"
description = "A library published with poetry"
requires-python = ">=3.11"

[build-system]
requires = ["poetry-core>=2.0,<3"]
build-backend = "poetry.core.masonry.api"
'''


def app(root: Path, deps: list[str], body: str = "") -> Path:
    """An application (``package-mode = false``: poetry installs its dependencies only)."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "pbx-app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        f"dependencies = {json.dumps(deps)}\n\n[tool.poetry]\npackage-mode = false\n\n" + body)
    return root


def lib(root: Path, name: str, version: str) -> Path:
    project = root / name
    module = project / "src" / _norm(name)
    module.mkdir(parents=True)
    (module / "__init__.py").write_text(f'__version__ = "{version}"\n')
    (project / "pyproject.toml").write_text(LIB.format(name=name, version=version))
    (project / "README.md").write_text(f"# {name}\n")
    return project


def locked(project: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, source url) from poetry.lock."""
    import tomllib
    data = tomllib.loads((project / "poetry.lock").read_text())
    return {p["name"]: (p["version"], p.get("source", {}).get("url", "")) for p in data["package"]}


# --- publishing ---------------------------------------------------------------------------------

def test_poetry_build_and_publish_then_skip_existing(indexes, user, tmp_path):
    srv = indexes.private
    project = lib(tmp_path, "pbx-poetry-lib", "1.0")
    assert user(f"poetry config repositories.private {srv.url}/", project).returncode == 0
    first = user(f"poetry publish --build -r private -u alice -p {PASSWORD}", project)
    assert first.returncode == 0, out(first)
    page = srv.get("/simple/pbx-poetry-lib/").text
    assert "pbx_poetry_lib-1.0-py3-none-any.whl" in page and "pbx_poetry_lib-1.0.tar.gz" in page

    again = user(f"poetry publish -r private -u alice -p {PASSWORD}", project)
    assert again.returncode != 0
    assert "HTTP Error 409" in out(again) and "already exists" in out(again)
    skipped = user(f"poetry publish -r private -u alice -p {PASSWORD} --skip-existing", project)
    assert skipped.returncode == 0, out(skipped)
    assert out(skipped).count("File exists. Skipping") == 2

    wrong = user("poetry publish --build -r private -u alice -p not-the-password",
                 lib(tmp_path / "v2", "pbx-poetry-lib", "2.0"))
    assert wrong.returncode != 0
    assert "HTTP Error 403" in out(wrong)
    assert "2.0" not in srv.get("/simple/pbx-poetry-lib/").text


def test_poetry_publish_to_a_closed_index_with_environment_credentials(indexes, user, tmp_path):
    srv = indexes.closed
    project = lib(tmp_path, "pbx-poetry-closed", "1.0")
    assert user(f"poetry config repositories.private {srv.url}/", project).returncode == 0
    anonymous = user("poetry publish --build -r private", project)
    assert anonymous.returncode != 0
    assert "401" in out(anonymous)
    result = user("poetry publish -r private", project,
                  POETRY_HTTP_BASIC_PRIVATE_USERNAME="alice",
                  POETRY_HTTP_BASIC_PRIVATE_PASSWORD=PASSWORD)
    assert result.returncode == 0, out(result)
    assert srv.get("/simple/pbx-poetry-closed/").status == 401
    page = srv.get("/simple/pbx-poetry-closed/", headers={"Authorization": basic("alice", PASSWORD)})
    assert "pbx_poetry_closed-1.0-py3-none-any.whl" in page.text


# --- installing: README's safe setups -------------------------------------------------------------

def test_poetry_primary_source_keeps_private_names_private(indexes, user, tmp_path):
    """README: the private index as poetry's only (primary) source; it sends the rest on."""
    srv = indexes.private
    project = app(tmp_path / "app", [])
    added = user(f"poetry source add --priority=primary private {srv.url}/simple/", project)
    assert added.returncode == 0, out(added)
    result = user("poetry add pbx-internal pbx-public-only", project)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "1.0"
    assert installed_version(project / ".venv", "pbx_public_only") == "1.0"  # via the fallback
    assert locked(project)["pbx-internal"] == ("1.0", f"{srv.url}/simple")


def test_poetry_explicit_source_pins_the_name_to_the_private_index(indexes, user, tmp_path):
    """README: an ``explicit`` private source and ``source =`` for each private name."""
    public, srv = indexes.public, indexes.private
    project = app(tmp_path / "app", ["pbx-internal", "pbx-public-only"], (
        "[tool.poetry.dependencies]\n"
        'pbx-internal = { source = "private" }\n\n'
        "[[tool.poetry.source]]\n"  # stands in for PyPI
        'name = "public"\n'
        f'url = "{public.url}/simple/"\n'
        'priority = "primary"\n\n'
        "[[tool.poetry.source]]\n"
        'name = "private"\n'
        f'url = "{srv.url}/simple/"\n'
        'priority = "explicit"\n'))
    result = user("poetry install", project)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "1.0"
    found = locked(project)
    assert found["pbx-internal"] == ("1.0", f"{srv.url}/simple")
    assert found["pbx-public-only"] == ("1.0", f"{public.url}/simple")


def test_poetry_supplemental_source_lets_the_public_index_win(indexes, user, tmp_path):
    """README's warning: a ``supplemental`` source is asked only for names PyPI lacks."""
    public, srv = indexes.public, indexes.private
    project = app(tmp_path / "app", ["pbx-internal"], (
        "[[tool.poetry.source]]\n"
        'name = "public"\n'
        f'url = "{public.url}/simple/"\n'
        'priority = "primary"\n\n'
        "[[tool.poetry.source]]\n"
        'name = "private"\n'
        f'url = "{srv.url}/simple/"\n'
        'priority = "supplemental"\n'))
    result = user("poetry install", project)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "9.0"  # the attacker's
    assert locked(project)["pbx-internal"] == ("9.0", f"{public.url}/simple")


# --- a closed index -------------------------------------------------------------------------------

def test_poetry_closed_index_with_http_basic_credentials(indexes, user, tmp_path):
    srv = indexes.closed
    project = app(tmp_path / "app", ["pbx-internal"], (
        "[[tool.poetry.source]]\n"
        'name = "private"\n'
        f'url = "{srv.url}/simple/"\n'
        'priority = "primary"\n'))
    anonymous = user("poetry lock", project)
    assert anonymous.returncode != 0
    assert f"Authorization error accessing {srv.url}/simple/pbx-internal/" in out(anonymous)

    with_env = user("poetry lock", project, POETRY_HTTP_BASIC_PRIVATE_USERNAME="alice",
                    POETRY_HTTP_BASIC_PRIVATE_PASSWORD=PASSWORD)
    assert with_env.returncode == 0, out(with_env)
    assert PASSWORD not in (project / "poetry.lock").read_text()

    (project / "poetry.lock").unlink()
    stored = user(f"poetry config http-basic.private alice {PASSWORD}", project)
    assert stored.returncode == 0, out(stored)
    auth = tmp_path / "home" / ".config" / "pypoetry" / "auth.toml"
    assert auth.exists(), out(stored)  # keyring off: a plain file in the user's config folder
    result = user("poetry install", project)
    assert result.returncode == 0, out(result)
    assert installed_version(project / ".venv", "pbx_internal") == "1.0"


def test_the_trap_catches_a_tool_that_reaches_for_the_internet(user, tmp_path):
    """The guard every test here relies on: poetry's implicit PyPI is refused and reported."""
    project = app(tmp_path / "app", ["pbx-internal"])
    with pytest.raises(AssertionError, match=r"tried to reach the internet: \['CONNECT pypi.org:443"):
        user("poetry lock", project)
