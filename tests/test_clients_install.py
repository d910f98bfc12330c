"""Installing from the real server with pip and uv, as README's Client section shows.

One venv (``python -m venv``, so the pip a newcomer gets) serves the module; every test removes
what it installed. Every pip call runs with ``--no-cache-dir`` so each install really downloads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from clienttools import upload
from conftest import PASSWORD, clean_env, make_server
from pkgfactory import make_sdist, make_wheel

VENV_BIN = str(Path(sys.executable).parent)


def out(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def packages(dest: Path) -> list[Path]:
    """The distributions every install test draws on."""
    return [
        make_wheel(dest, "pbx-pins", "1.0"),
        make_wheel(dest, "pbx-pins", "1.1"),
        make_wheel(dest, "pbx-pins", "2.0rc1"),
        make_wheel(dest, "pbx-app", "1.0", requires=["pbx-dep>=1.0"]),
        make_wheel(dest, "pbx-dep", "1.0"),
        make_wheel(dest, "My_Package.Name", "1.0", module="my_package_name"),
        make_wheel(dest, "pbx-both", "1.0"),
        make_sdist(dest, "pbx-both", "1.0"),
    ]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A server with default settings holding packages(); downloads need no password."""
    base = tmp_path_factory.mktemp("install")
    server = make_server(base, {"alice": PASSWORD}).start()
    upload(server, packages(base / "dist"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    """A server with PYPI_AUTHENTICATE=update,download,list holding packages()."""
    base = tmp_path_factory.mktemp("protected")
    server = make_server(base, {"alice": PASSWORD},
                         PYPI_AUTHENTICATE="update,download,list").start()
    upload(server, packages(base / "dist"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_venv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path


@pytest.fixture
def venv(shared_venv):
    """The module's venv, emptied again of what the test installed."""
    before = set(site_packages(shared_venv).iterdir())
    yield shared_venv
    for path in set(site_packages(shared_venv).iterdir()) - before:  # what pip installed
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def sh(command: str, cwd: Path, path_first: Path | str,
       **extra: str | None) -> subprocess.CompletedProcess:
    """Run one README command line with ``path_first`` (a venv's bin) first on PATH.

    HOME is ``cwd`` unless given; an ``extra`` value of None removes that variable.
    """
    env = clean_env(**{"PATH": f"{path_first}:{VENV_BIN}:{os.environ['PATH']}",
                       "HOME": str(cwd)})
    env.pop("VIRTUAL_ENV", None)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def installed(venv: Path) -> dict[str, str]:
    """name -> version of every distribution installed in the venv, from its METADATA."""
    found = {}
    for meta in site_packages(venv).glob("*.dist-info/METADATA"):
        fields = dict(line.split(": ", 1) for line in meta.read_text().splitlines()[:3]
                      if ": " in line)
        found[fields["Name"]] = fields["Version"]
    return found


def pip(venv: Path, tmp_path: Path, args: str, **extra: str) -> subprocess.CompletedProcess:
    return sh(f"pip install --no-cache-dir {args}", tmp_path, venv / "bin", **extra)


# --- pip ------------------------------------------------------------------------------------

def test_seed_pip_conf_extra_index_url_and_user_install(index, tmp_path):
    """README's pip.conf and `pip3 install --user <package>`, with the interpreter's own pip3."""
    home = tmp_path / "home"
    conf = home / ".config" / "pip" / "pip.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"[global]\nextra-index-url={index.url}/simple/\n")
    base_bin = Path(sys.base_prefix) / "bin"
    if not (base_bin / "pip3").exists():
        pytest.fail(f"no pip3 next to the base interpreter in {base_bin}")
    env = {"HOME": str(home), "PIP_CONFIG_FILE": str(conf)}
    result = sh("pip3 install --user pbx-dep", tmp_path, base_bin, **env)
    stdlib = sysconfig.get_paths(vars={"base": sys.base_prefix})["stdlib"]
    managed = Path(stdlib) / "EXTERNALLY-MANAGED"
    if managed.exists():  # Debian's own python3 refuses --user installs (PEP 668): README says so
        assert result.returncode != 0 and "externally-managed-environment" in out(result)
        return
    assert result.returncode == 0, out(result)
    assert f"{index.url}/packages/pbx_dep-1.0-py3-none-any.whl" in out(result)
    check = sh("python3 -c 'import pbx_dep; print(pbx_dep.__file__)'", tmp_path, base_bin, **env)
    assert check.stdout.strip().startswith(str(home / ".local")), out(check)


def test_pip_conf_index_url_in_a_venv(index, venv, tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = {index.url}/simple/\n")
    result = pip(venv, tmp_path, "pbx-pins", PIP_CONFIG_FILE=str(conf))
    assert result.returncode == 0, out(result)
    assert f"Looking in indexes: {index.url}/simple/" in out(result)
    assert installed(venv)["pbx-pins"] == "1.1"


def test_pip_index_url_pins_and_pre_releases(index, venv, tmp_path):
    url = f"{index.url}/simple/"
    assert pip(venv, tmp_path, f"--index-url {url} pbx-pins==1.0").returncode == 0
    assert installed(venv)["pbx-pins"] == "1.0"
    upgrade = pip(venv, tmp_path, f"--index-url {url} --upgrade pbx-pins")
    assert upgrade.returncode == 0, out(upgrade)
    assert installed(venv)["pbx-pins"] == "1.1"  # 2.0rc1 is a pre-release: skipped
    pre = pip(venv, tmp_path, f"--index-url {url} --upgrade --pre pbx-pins")
    assert pre.returncode == 0, out(pre)
    assert installed(venv)["pbx-pins"] == "2.0rc1"


def test_pip_no_deps(index, venv, tmp_path):
    url = f"{index.url}/simple/"
    alone = pip(venv, tmp_path, f"--index-url {url} --no-deps pbx-app")
    assert alone.returncode == 0, out(alone)
    assert "pbx-app" in installed(venv) and "pbx-dep" not in installed(venv)
    full = pip(venv, tmp_path, f"--index-url {url} --force-reinstall pbx-app")
    assert full.returncode == 0, out(full)
    assert installed(venv)["pbx-dep"] == "1.0"


@pytest.mark.parametrize("spelling", ["my-package-name", "My_Package.Name"])
def test_pip_project_name_normalisation(index, venv, tmp_path, spelling):
    result = pip(venv, tmp_path, f"--index-url {index.url}/simple/ {spelling}")
    assert result.returncode == 0, out(result)
    assert installed(venv)["My_Package.Name"] == "1.0"
    imported = sh("python -c 'import my_package_name as m; print(m.NAME)'", tmp_path, venv / "bin")
    assert imported.stdout.strip() == "My_Package.Name"


def test_pip_prefers_the_wheel_over_the_sdist(index, venv, tmp_path):
    assert "pbx_both-1.0.tar.gz" in index.get("/simple/pbx-both/").text
    result = pip(venv, tmp_path, f"--index-url {index.url}/simple/ pbx-both")
    assert result.returncode == 0, out(result)
    assert "pbx_both-1.0-py3-none-any.whl" in out(result)
    assert "pbx_both-1.0.tar.gz" not in out(result)


# --- uv -------------------------------------------------------------------------------------

def uv_env(tmp_path: Path) -> dict[str, str | None]:
    """uv reading project configuration (no UV_NO_CONFIG) but no user file: HOME is a temp dir."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_CONFIG": None}


def uv_sh(command: str, cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return sh(command, cwd, VENV_BIN, **uv_env(tmp_path))


def test_uv_pip_install_index_url(index, tmp_path):
    assert uv_sh("uv venv -q .venv", tmp_path, tmp_path).returncode == 0
    result = uv_sh(f"uv pip install --index-url {index.url}/simple/ pbx-app==1.0",
                   tmp_path, tmp_path)
    assert result.returncode == 0, out(result)
    assert "+ pbx-app==1.0" in out(result) and "+ pbx-dep==1.0" in out(result)


def uv_project(root: Path, body: str,
               deps: tuple[str, ...] = ("pbx-app", "my-package-name")) -> Path:
    """A project (no build system: uv installs only its dependencies) using this index."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "my-app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        f"dependencies = {json.dumps(list(deps))}\n\n" + body)
    return root


def test_uv_pyproject_index_with_pip_install_and_sync(index, tmp_path):
    project = uv_project(tmp_path / "app", (
        "[[tool.uv.index]]\n"
        'name = "private"\n'
        f'url = "{index.url}/simple/"\n'))
    assert uv_sh("uv venv -q .venv", project, tmp_path).returncode == 0
    result = uv_sh("uv pip install -r pyproject.toml", project, tmp_path)
    assert result.returncode == 0, out(result)
    assert "+ pbx-app==1.0" in out(result) and "+ my-package-name==1.0" in out(result)

    synced = uv_sh("uv sync", project, tmp_path)
    assert synced.returncode == 0, out(synced)
    lock = (project / "uv.lock").read_text()
    assert f'source = {{ registry = "{index.url}/simple/" }}' in lock
    assert f"{index.url}/packages/pbx_app-1.0-py3-none-any.whl" in lock


def test_uv_explicit_index_pins_packages_to_it(index, tmp_path):
    project = uv_project(tmp_path / "app", (
        "[[tool.uv.index]]\n"
        'name = "private"\n'
        f'url = "{index.url}/simple/"\n'
        "explicit = true\n\n"
        "[tool.uv.sources]\n"
        'pbx-app = { index = "private" }\n'
        'pbx-dep = { index = "private" }\n'
        'my-package-name = { index = "private" }\n'), ("pbx-app", "pbx-dep", "my-package-name"))
    locked = uv_sh("uv lock", project, tmp_path)
    assert locked.returncode == 0, out(locked)
    lock = (project / "uv.lock").read_text()
    for wheel in ("pbx_app-1.0", "pbx_dep-1.0", "my_package_name-1.0"):
        assert f"{index.url}/packages/{wheel}-py3-none-any.whl" in lock


# --- downloads protected by a password ------------------------------------------------------

def authed(server, user: str = "alice", password: str = PASSWORD) -> str:
    return server.url.replace("http://", f"http://{user}:{password}@") + "/simple/"


def test_protected_credentials_in_the_url(protected, venv, tmp_path):
    assert protected.get("/simple/pbx-dep/").status == 401
    result = pip(venv, tmp_path, f"--index-url {authed(protected)} pbx-dep")
    assert result.returncode == 0, out(result)
    assert installed(venv)["pbx-dep"] == "1.0"
    assert PASSWORD not in out(result)  # pip masks it: http://alice:****@...


def test_protected_pip_index_url_environment_variable(protected, venv, tmp_path):
    result = sh(f"PIP_INDEX_URL={authed(protected)} pip install --no-cache-dir pbx-pins==1.0",
                tmp_path, venv / "bin")
    assert result.returncode == 0, out(result)
    assert installed(venv)["pbx-pins"] == "1.0"


def test_protected_netrc_for_pip_and_uv(protected, venv, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin alice\npassword {PASSWORD}\n")
    netrc.chmod(0o600)
    result = pip(venv, tmp_path, f"--index-url {protected.url}/simple/ pbx-dep", HOME=str(home))
    assert result.returncode == 0, out(result)
    assert installed(venv)["pbx-dep"] == "1.0"

    uv = sh(f"uv pip install --python {venv}/bin/python --reinstall "
            f"--index-url {protected.url}/simple/ pbx-both", tmp_path, VENV_BIN,
            **{**uv_env(tmp_path), "HOME": str(home)})
    assert uv.returncode == 0, out(uv)
    assert "+ pbx-both==1.0" in out(uv)


def test_protected_without_a_password_pip_fails_without_prompting(protected, venv, tmp_path):
    """A user name without a password gets the 401 challenge (pip's keyring and prompt then
    apply); with --no-input pip fails with nothing to answer it."""
    user_only = protected.url.replace("http://", "http://alice@") + "/simple/"
    result = pip(venv, tmp_path, f"--no-input --index-url {user_only} pbx-dep")
    assert result.returncode != 0
    assert "No matching distribution found for pbx-dep" in out(result)
    assert "pbx-dep" not in installed(venv)
    verbose = pip(venv, tmp_path, f"-vv --no-input --index-url {user_only} pbx-dep")
    assert "401 Client Error: Unauthorized" in out(verbose)
    anonymous = pip(venv, tmp_path, f"-vv --no-input --index-url {protected.url}/simple/ pbx-dep")
    assert anonymous.returncode != 0
    assert "401 Client Error: Unauthorized" in out(anonymous)


def test_protected_uv_with_credentials_in_the_url(protected, tmp_path):
    assert uv_sh("uv venv -q .venv", tmp_path, tmp_path).returncode == 0
    result = uv_sh(f"uv pip install --index-url {authed(protected)} pbx-dep", tmp_path, tmp_path)
    assert result.returncode == 0, out(result)
    assert "+ pbx-dep==1.0" in out(result)


# --- the public index, dependency confusion and the fallback ---------------------------------

@pytest.fixture(scope="module")
def public_and_private(tmp_path_factory):
    """A stand-in for the public index (PYPI_FALLBACK=off) and a private index whose fallback
    points at it. The public one also has a higher version of the private project's name."""
    base = tmp_path_factory.mktemp("confusion")
    public = make_server(base, {"alice": PASSWORD}, PYPI_FALLBACK="off").start()
    private = make_server(base, {"alice": PASSWORD},
                          PYPI_FALLBACK_URL=public.url + "/simple/").start()
    upload(private, [make_wheel(base / "private", "pbx-internal", "1.0")])
    upload(public, [make_wheel(base / "public", "pbx-internal", "9.0"),
                    make_wheel(base / "public", "pbx-public-only", "1.0")])
    yield public, private
    public.stop()
    private.stop()


def test_fallback_redirects_unknown_projects_and_off_gives_404(index, public_and_private):
    moved = index.get("/simple/pbx-not-here/")  # default settings
    assert moved.status == 303
    assert moved.headers["location"] == "https://pypi.org/simple/pbx-not-here/"
    assert index.get("/simple/pbx-dep/").status == 200  # names it holds are served, never moved

    public, private = public_and_private
    assert private.get("/simple/pbx-public-only/").headers["location"] == \
        f"{public.url}/simple/pbx-public-only/"  # PYPI_FALLBACK_URL
    assert public.get("/simple/pbx-not-here/").status == 404  # PYPI_FALLBACK=off


def test_extra_index_url_lets_the_public_index_win(public_and_private, venv, tmp_path):
    """pip.conf's extra-index-url: pip takes the highest version from any index."""
    public, private = public_and_private
    result = pip(venv, tmp_path, f"--index-url {public.url}/simple/ "
                                 f"--extra-index-url {private.url}/simple/ pbx-internal")
    assert result.returncode == 0, out(result)
    assert installed(venv)["pbx-internal"] == "9.0"  # the attacker's


def test_index_url_with_fallback_keeps_private_names_private(public_and_private, venv, tmp_path):
    public, private = public_and_private
    ours = pip(venv, tmp_path, f"--index-url {private.url}/simple/ pbx-internal")
    assert ours.returncode == 0, out(ours)
    assert installed(venv)["pbx-internal"] == "1.0"
    theirs = pip(venv, tmp_path, f"--index-url {private.url}/simple/ pbx-public-only")
    assert theirs.returncode == 0, out(theirs)  # redirected to the public index
    assert f"{public.url}/packages/pbx_public_only-1.0-py3-none-any.whl" in out(theirs)
    assert installed(venv)["pbx-public-only"] == "1.0"


def test_uv_first_index_strategy_keeps_private_names_private(public_and_private, tmp_path):
    public, private = public_and_private
    project = uv_project(tmp_path / "app", (
        "[[tool.uv.index]]\n"
        'name = "private"\n'
        f'url = "{private.url}/simple/"\n\n'
        "[[tool.uv.index]]\n"
        'name = "public"\n'
        f'url = "{public.url}/simple/"\n'
        "default = true\n"), ("pbx-internal", "pbx-public-only"))
    locked = uv_sh("uv lock", project, tmp_path)
    assert locked.returncode == 0, out(locked)
    lock = (project / "uv.lock").read_text()
    assert f"{private.url}/packages/pbx_internal-1.0-py3-none-any.whl" in lock
    assert "pbx_internal-9.0" not in lock
    assert "pbx_public_only-1.0-py3-none-any.whl" in lock
