"""Every upload client of README's Client section against the real server (uploads need a password).

The commands are run as README prints them (through ``sh -c`` in the package directory), with
HOME pointing at a temporary folder that holds the client's configuration file.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PASSWORD, basic, clean_env, http, make_server, venv_bin
from pkgfactory import make_sdist, make_wheel
from support import content_type, form

VENV_BIN = str(Path(sys.executable).parent)  # python3, twine, uv and hatch of the test venv

needs_distutils = pytest.mark.skipif(
    importlib.util.find_spec("distutils") is None,
    reason="no distutils in this Python (removed in 3.12): setup.py register/upload cannot run")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the module, default settings (uploads need alice's password)."""
    server = make_server(tmp_path_factory.mktemp("publish"), {"alice": PASSWORD}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seed_python(tmp_path_factory) -> str:
    """A new venv's bin folder: python3 with the setuptools its Python bundles, as a user's.

    The test venv's own setuptools is newer (pipenv needs one), and newer distutils no
    longer print what `register` and `upload` answer. The test venv's packages stay
    importable after the new venv's own (docutils, for the `check` trap below).
    """
    base = tmp_path_factory.mktemp("seed-venv") / "venv"
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", str(base)], check=True, capture_output=True)
    site = next(base.glob("lib/python*/site-packages"))
    test_site = next(Path(sys.prefix).glob("lib/python*/site-packages"))
    (site / "zz-test-venv.pth").write_text(f"{test_site}\n")
    return str(base / "bin")


def sh(command: str, cwd: Path, home: Path, bin_dir: str = VENV_BIN,
       **extra: str) -> subprocess.CompletedProcess:
    """Run one README command line as a user would, with the test venv first on PATH."""
    env = clean_env(HOME=str(home), PATH=f"{bin_dir}:{VENV_BIN}:{os.environ['PATH']}", **extra)
    for tool in ("python3", "twine", "uv", "hatch"):
        venv_bin(tool)
    return subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)


def out(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def write_pypirc(home: Path, url: str, password: str = PASSWORD, section: str = "local") -> Path:
    """README's ~/.pypirc with one index server."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / ".pypirc"
    path.write_text(
        "[distutils]\n"
        "index-servers =\n"
        f"  {section}\n"
        "\n"
        f"[{section}]\n"
        f"repository={url}/\n"
        "username=alice\n"
        f"password={password}\n")
    return path


def seed_project(root: Path, name: str, version: str, long_description: bool = True) -> Path:
    """A package directory with README's plain distutils setup.py and a setup.cfg."""
    module = name.replace("-", "_")
    project = root / name
    (project / module).mkdir(parents=True)
    (project / module / "__init__.py").write_text(f'__version__ = "{version}"\n')
    extra = ('\n      long_description="What it does, in a sentence or two.",'
             if long_description else "")
    (project / "setup.py").write_text(
        "from distutils.core import setup\n"
        "\n"
        f'setup(name="{name}", version="{version}", packages=["{module}"],\n'
        '      author="Alice", author_email="alice@example.com",\n'
        f'      url="https://example.com/{name}",{extra})\n')
    (project / "setup.cfg").write_text("[metadata]\nlicense = MIT\n")
    return project


def built(root: Path, name: str, version: str, sdist: bool = True) -> Path:
    """A project folder with dist/ holding a real wheel (and sdist) made without network."""
    project = root / f"{name}-{version}"
    make_wheel(project / "dist", name, version)
    if sdist:
        make_sdist(project / "dist", name, version)
    return project


def listed(srv, project: str) -> str:
    resp = srv.get(f"/simple/{project}/")
    assert resp.status == 200, (resp.status, resp.text)
    return resp.text


# --- setup.py register / upload (distutils) ---------------------------------------------------

@needs_distutils
def test_setup_py_register_and_sdist_upload_as_readme_shows(srv, tmp_path, seed_python):
    home = tmp_path / "home"
    write_pypirc(home, srv.url)
    project = seed_project(tmp_path, "seed-register", "1.0.0")

    register = sh("python3 setup.py register -r local", project, home, seed_python)
    assert register.returncode == 0, out(register)
    assert "Server response (200): OK" in out(register)
    assert srv.get("/simple/seed-register/").status != 200  # register stores nothing

    upload = sh("python3 setup.py sdist upload -r local", project, home, seed_python)
    assert upload.returncode == 0, out(upload)
    assert "Server response (200): OK" in out(upload)
    assert "seed_register-1.0.0.tar.gz" in listed(srv, "seed-register") or \
        "seed-register-1.0.0.tar.gz" in listed(srv, "seed-register")


@needs_distutils
def test_register_check_trap_without_long_description_and_both_ways_out(srv, tmp_path,
                                                                       seed_python):
    """setuptools' distutils + docutils: `check` dies without long_description (README says so)."""
    assert importlib.util.find_spec("docutils") is not None  # twine brings it into the test venv
    home = tmp_path / "home"
    write_pypirc(home, srv.url)
    project = seed_project(tmp_path, "seed-trap", "1.0.0", long_description=False)

    trapped = sh("python3 setup.py register -r local", project, home, seed_python)
    assert trapped.returncode != 0
    assert "expected string or bytes-like object, got 'NoneType'" in out(trapped)

    stdlib = sh("SETUPTOOLS_USE_DISTUTILS=stdlib python3 setup.py register -r local", project,
                home, seed_python)
    assert stdlib.returncode == 0, out(stdlib)
    assert "Server response (200): OK" in out(stdlib)
    upload = sh("SETUPTOOLS_USE_DISTUTILS=stdlib python3 setup.py sdist upload -r local",
                project, home, seed_python)
    assert upload.returncode == 0, out(upload)
    assert "1.0.0.tar.gz" in listed(srv, "seed-trap")


@needs_distutils
def test_setup_py_upload_errors_wrong_password_existing_file_missing_section(srv, tmp_path,
                                                                             seed_python):
    home = tmp_path / "home"
    write_pypirc(home, srv.url)
    project = seed_project(tmp_path, "seed-errors", "1.0.0")
    first = sh("python3 setup.py sdist upload -r local", project, home, seed_python)
    assert first.returncode == 0, out(first)

    again = sh("python3 setup.py sdist upload -r local", project, home, seed_python)
    assert again.returncode != 0
    assert "Upload failed (409)" in out(again)
    assert "already exists" in out(again)

    bad_home = tmp_path / "bad-home"
    write_pypirc(bad_home, srv.url, password="not-the-password")
    (project / "setup.py").write_text((project / "setup.py").read_text().replace("1.0.0", "1.0.1"))
    wrong = sh("python3 setup.py sdist upload -r local", project, bad_home, seed_python)
    assert wrong.returncode != 0
    assert "Upload failed (403): Forbidden: wrong user name or password" in out(wrong)
    assert "1.0.1" not in listed(srv, "seed-errors")

    # distutils' own message for a name missing from ~/.pypirc is obscure; twine's is clear.
    missing = sh("python3 setup.py sdist upload -r nosuch", project, home, seed_python)
    assert missing.returncode != 0
    assert "unsupported schema" in out(missing)


def test_register_actions_are_accepted_and_ignored(srv):
    """`setup.py register` posts :action=submit (or verify): 200 with a password, no change."""
    for action in ("submit", "verify"):
        body = form({":action": action, "name": "ghost-register", "version": "1.0"})
        headers = {"Content-Type": content_type()}
        anonymous = http("POST", srv.url + "/", body, headers)
        assert anonymous.status == 401
        signed = http("POST", srv.url + "/", body,
                      {**headers, "Authorization": basic("alice", PASSWORD)})
        assert signed.status == 200, (action, signed.status, signed.text)
    assert srv.get("/simple/ghost-register/").status != 200
    assert not any(p.name.startswith("ghost") for p in srv.packages.iterdir())


# --- twine ------------------------------------------------------------------------------------

def test_twine_with_pypirc_repository_name(srv, tmp_path):
    home = tmp_path / "home"
    write_pypirc(home, srv.url)
    project = built(tmp_path, "twine-pypirc", "1.0")
    result = sh("twine upload -r local dist/*", project, home)
    assert result.returncode == 0, out(result)
    page = listed(srv, "twine-pypirc")
    assert "twine_pypirc-1.0-py3-none-any.whl" in page and "twine_pypirc-1.0.tar.gz" in page


def test_twine_with_config_file_elsewhere(srv, tmp_path):
    config = write_pypirc(tmp_path / "cfg", srv.url)
    project = built(tmp_path, "twine-config", "1.0", sdist=False)
    result = sh(f"twine upload --config-file {config} -r local dist/*", project, tmp_path / "home")
    assert result.returncode == 0, out(result)
    assert "twine_config-1.0-py3-none-any.whl" in listed(srv, "twine-config")


def test_twine_with_repository_url_and_credentials(srv, tmp_path):
    project = built(tmp_path, "twine-url", "1.0", sdist=False)
    result = sh(f"twine upload --repository-url {srv.url}/ -u alice -p {PASSWORD} dist/*",
                project, tmp_path / "home")
    assert result.returncode == 0, out(result)
    assert "twine_url-1.0-py3-none-any.whl" in listed(srv, "twine-url")


def test_twine_errors_are_clear(srv, tmp_path):
    home = tmp_path / "home"
    write_pypirc(home, srv.url)
    project = built(tmp_path, "twine-errors", "1.0", sdist=False)
    assert sh("twine upload -r local dist/*", project, home).returncode == 0

    again = sh("twine upload -r local dist/*", project, home)
    assert again.returncode != 0
    assert "400 Bad Request" in out(again) and "already exists" in out(again)
    assert "twine_errors-1.0-py3-none-any.whl" in out(again)

    missing = sh("twine upload -r nosuch dist/*", project, home)
    assert missing.returncode != 0
    assert "Missing 'nosuch' section from ~/.pypirc" in out(missing)

    wrong = sh(f"twine upload --non-interactive --repository-url {srv.url}/ -u alice "
               "-p not-the-password dist/*", built(tmp_path, "twine-errors", "2.0"), home)
    assert wrong.returncode != 0
    assert "403 Forbidden" in out(wrong) and "wrong user name or password" in out(wrong)
    assert "2.0" not in listed(srv, "twine-errors")


# --- uv publish -------------------------------------------------------------------------------

def test_uv_publish(srv, tmp_path):
    project = built(tmp_path, "uv-published", "1.0")
    cmd = f"uv publish --publish-url {srv.url}/ --username alice --password {PASSWORD}"
    result = sh(cmd, project, tmp_path / "home")
    assert result.returncode == 0, out(result)
    page = listed(srv, "uv-published")
    assert "uv_published-1.0-py3-none-any.whl" in page and "uv_published-1.0.tar.gz" in page

    again = sh(cmd, project, tmp_path / "home")
    assert again.returncode != 0
    assert "409 Conflict" in out(again) and "already exists" in out(again)

    wrong = sh(f"uv publish --publish-url {srv.url}/ --username alice --password nope",
               built(tmp_path, "uv-published", "2.0"), tmp_path / "home")
    assert wrong.returncode != 0
    assert "403 Forbidden" in out(wrong)
    assert "2.0" not in listed(srv, "uv-published")


# --- hatch publish ----------------------------------------------------------------------------

def test_hatch_publish_with_environment_variables(srv, tmp_path):
    project = built(tmp_path, "hatch-env", "1.0", sdist=False)
    result = sh(f"HATCH_INDEX_REPO={srv.url}/ HATCH_INDEX_USER=alice "
                f"HATCH_INDEX_AUTH={PASSWORD} hatch publish dist/*", project, tmp_path / "home")
    assert result.returncode == 0, out(result)
    assert "success" in out(result)
    assert "hatch_env-1.0-py3-none-any.whl" in listed(srv, "hatch-env")


def test_hatch_publish_with_options(srv, tmp_path):
    project = built(tmp_path, "hatch-opts", "1.0", sdist=False)
    result = sh(f"hatch publish -r {srv.url}/ -u alice -a {PASSWORD} dist/*", project,
                tmp_path / "home")
    assert result.returncode == 0, out(result)
    assert "hatch_opts-1.0-py3-none-any.whl" in listed(srv, "hatch-opts")

    wrong = sh(f"hatch publish -r {srv.url}/ -u alice -a nope dist/*",
               built(tmp_path, "hatch-opts", "2.0", sdist=False), tmp_path / "home")
    assert wrong.returncode != 0
    assert "403 Forbidden: wrong user name or password" in out(wrong)
    assert "2.0" not in listed(srv, "hatch-opts")


def test_hatch_publish_with_config_file_repo(srv, tmp_path):
    home = tmp_path / "home"
    config = home / ".config" / "hatch" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[publish.index.repos.private]\n'
                      f'url = "{srv.url}/"\n'
                      'user = "alice"\n'
                      f'auth = "{PASSWORD}"\n')
    project = built(tmp_path, "hatch-config", "1.0", sdist=False)
    found = sh("hatch config find", project, home)
    assert found.stdout.strip() == str(config), out(found)
    result = sh("hatch publish -r private dist/*", project, home)
    assert result.returncode == 0, out(result)
    assert "hatch_config-1.0-py3-none-any.whl" in listed(srv, "hatch-config")

    # Publish again with a new version beside the old one in dist/: hatch finds the old
    # file at devpi's /+simple/ path, skips it ("already exists") and uploads the new one.
    make_wheel(project / "dist", "hatch-config", "1.1")
    again = sh("hatch publish -r private dist/*", project, home)
    assert again.returncode == 0, out(again)
    assert "already exists" in out(again) and "409" not in out(again)
    assert "hatch_config-1.1-py3-none-any.whl" in listed(srv, "hatch-config")
    assert srv.get("/+simple/hatch-config/").status == 200
    assert srv.get("/+simple/no-such-project/").status == 404


DEBIAN_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(not Path("/usr/lib/python3/dist-packages/setuptools").is_dir(),
                    reason="no Debian python3 with Debian's setuptools on this machine")
def test_debian_python3_register_and_upload_work_silently(srv, tmp_path):
    """Debian's own python3 and setuptools: both commands work but print nothing (README)."""
    home = tmp_path / "home"
    write_pypirc(home, srv.url)
    project = seed_project(tmp_path, "seed-debian", "1.0.0")
    for command in ("register -r local", "sdist upload -r local"):
        result = subprocess.run([str(DEBIAN_PYTHON), "setup.py", *command.split()], cwd=project,
                                env=clean_env(HOME=str(home)), capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=120)
        assert result.returncode == 0, out(result)
        assert "Server response" not in out(result)
    assert "1.0.0.tar.gz" in listed(srv, "seed-debian")
