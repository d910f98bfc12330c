"""Publishing again to the same index, with twine and uv, as README's Clients section says.

twine 6.1 and later refuse ``--skip-existing`` for any index but PyPI, so README has twine
upload only the new files. ``uv publish`` skips a file already there after asking the index's
simple page (``--check-url``, or the ``url`` of the index named by ``--index``); on a closed
index that question needs ``UV_INDEX_<NAME>_USERNAME`` and ``_PASSWORD``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clienttools import out
from conftest import PASSWORD, basic, make_server
from pkgfactory import make_sdist, make_wheel


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("republish")
    open_ = make_server(base, {"alice": PASSWORD}, PYPI_FALLBACK="off").start()
    closed = make_server(base, {"alice": PASSWORD}, PYPI_FALLBACK="off",
                         PYPI_AUTHENTICATE="update,download,list").start()
    yield open_, closed
    open_.stop()
    closed.stop()


def project(root: Path, name: str, versions: list[str], index_url: str = "") -> Path:
    """A project folder whose dist/ holds a wheel and an sdist of each version."""
    for version in versions:
        make_wheel(root / "dist", name, version)
        make_sdist(root / "dist", name, version)
    if index_url:
        (root / "pyproject.toml").write_text(
            f'[project]\nname = "{name}"\nversion = "{versions[-1]}"\n\n'
            "[[tool.uv.index]]\n"
            'name = "private"\n'
            f'url = "{index_url}/simple/"\n'
            f'publish-url = "{index_url}/"\n'
            "explicit = true\n")
    return root


def files(server, name: str) -> str:
    return server.get(f"/simple/{name}/", headers={"Authorization": basic("alice", PASSWORD)}).text


def test_twine_refuses_skip_existing_so_upload_only_the_new_files(servers, user, tmp_path):
    srv, _ = servers
    folder = project(tmp_path / "p", "pbx-twine-again", ["1.0"])
    twine = f"twine upload --non-interactive --repository-url {srv.url}/ -u alice -p {PASSWORD}"
    assert user(f"{twine} dist/*", folder).returncode == 0

    refused = user(f"{twine} --skip-existing dist/*", folder)
    assert refused.returncode != 0
    assert "UnsupportedConfiguration" in out(refused) and "--skip-existing" in out(refused)

    project(folder, "pbx-twine-again", ["1.1"])  # dist/ now holds 1.0 and 1.1
    everything = user(f"{twine} dist/*", folder)
    assert everything.returncode != 0
    assert "400 Bad Request" in out(everything) and "already exists" in out(everything)
    assert "pbx_twine_again-1.1" not in files(srv, "pbx-twine-again")  # stopped at 1.0

    new_only = user(f"{twine} dist/*-1.1*", folder)  # README: name the new version's files
    assert new_only.returncode == 0, out(new_only)
    page = files(srv, "pbx-twine-again")
    assert "pbx_twine_again-1.1-py3-none-any.whl" in page and "pbx_twine_again-1.1.tar.gz" in page


def test_uv_publish_check_url_skips_what_an_open_index_has(servers, user, tmp_path):
    srv, _ = servers
    folder = project(tmp_path / "p", "pbx-uv-open", ["1.0"])
    publish = f"uv publish --publish-url {srv.url}/ --username alice --password {PASSWORD}"
    assert user(publish, folder).returncode == 0
    project(folder, "pbx-uv-open", ["1.1"])
    again = user(f"{publish} --check-url {srv.url}/simple/", folder)
    assert again.returncode == 0, out(again)
    assert out(again).count("already exists, skipping") == 2
    assert "pbx_uv_open-1.1.tar.gz" in files(srv, "pbx-uv-open")


def test_uv_publish_to_a_closed_index_needs_the_index_credentials_to_skip(servers, user, tmp_path):
    _, srv = servers
    folder = project(tmp_path / "p", "pbx-uv-closed", ["1.0"], index_url=srv.url)
    creds = {"UV_INDEX_PRIVATE_USERNAME": "alice", "UV_INDEX_PRIVATE_PASSWORD": PASSWORD}
    first = user("uv publish --index private", folder, **creds)
    assert first.returncode == 0, out(first)
    assert "pbx_uv_closed-1.0-py3-none-any.whl" in files(srv, "pbx-uv-closed")

    # --username/--password reach the upload only: the check is refused, uv uploads, 409.
    blind = user(f"uv publish --index private --username alice --password {PASSWORD}", folder)
    assert blind.returncode != 0
    assert "409 Conflict" in out(blind) and "already exists" in out(blind)

    project(folder, "pbx-uv-closed", ["1.1"], index_url=srv.url)
    again = user("uv publish --index private", folder, **creds)
    assert again.returncode == 0, out(again)
    assert out(again).count("already exists, skipping") == 2
    assert "pbx_uv_closed-1.1.tar.gz" in files(srv, "pbx-uv-closed")
