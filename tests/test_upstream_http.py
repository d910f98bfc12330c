"""One index URL for everything (issue 15), end to end: pip, uv and poetry against a real
pypibox with ``PYPI_FALLBACK=cache`` whose upstream is a second real pypibox on 127.0.0.1.

Through the route table: ``/simple/<name>/`` falls through to pypibox.upstream when the
private index has no such project, and ``/cache/<project>/<file>`` serves cached files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.client import IncompleteRead
from pathlib import Path

import pytest
from conftest import PASSWORD, basic, clean_env, http, make_server
from pkgfactory import make_sdist, make_wheel
from support import settled, wait_for

VENV_BIN = str(Path(sys.executable).parent)
DAY = 86400
JSON = "application/vnd.pypi.simple.v1+json"
OLD = time.time() - 30 * DAY


def public_tree(packages: Path) -> None:
    """The 'public index': a small dependency tree of real wheels and sdists, a month old,
    plus a project whose name this index also holds privately."""
    made = [
        make_wheel(packages, "pbx-web", "1.0", requires=["pbx-core>=1.0", "pbx-util"]),
        make_sdist(packages, "pbx-web", "1.0"),
        make_wheel(packages, "pbx-core", "1.0"),
        make_wheel(packages, "pbx-core", "1.1", payload=os.urandom(300_000)),
        make_sdist(packages, "pbx-core", "1.1"),
        make_wheel(packages, "pbx-util", "1.0", requires_python=">=3.8"),
        make_wheel(packages, "shared-name", "9.9"),    # a squatter's upload
    ]
    for path in made:
        os.utime(path, (OLD, OLD))


def upstream_gets(public, path_part: str, exact: bool = False, at_least: int = 0) -> int:
    """GETs the upstream's access log shows of paths containing ``path_part`` (``exact``:
    of that path), once it shows ``at_least`` of them (the log is written in batches, at
    least every 0.2 s, by each worker: a loaded machine may take longer)."""
    def count() -> int:
        lines = [line for line in public.logtext().splitlines() if '"GET ' in line]
        if exact:
            return sum(1 for line in lines if f'"GET {path_part} HTTP/' in line)
        return sum(1 for line in lines if path_part in line)

    wait_for(lambda: count() >= at_least, timeout=10, what=f"{at_least} GETs of {path_part}")
    time.sleep(0.5)   # and any more that were still to be written
    return count()


@pytest.fixture
def pair(server_factory, tmp_path):
    """start(**env) -> (public, ours): the upstream pypibox and ours caching it."""
    publics = []

    def start(users: dict[str, str] | None = None, **env: str):
        # The public tree is there before the upstream starts, which lists and reads it
        # before it answers: no page it serves lacks a file (nor shows in its access log).
        public = make_server(tmp_path, None, PYPI_FALLBACK="off")
        public_tree(public.packages)
        publics.append(public.start())
        settings = {"PYPI_FALLBACK": "cache", "PYPI_UPSTREAM": public.url + "/simple/",
                    "PYPI_UPSTREAM_TIMEOUT": "5s", **env}
        ours = server_factory(users, **settings)
        make_wheel(ours.packages, "shared-name", "1.0")   # ours, private
        # Copied in by hand: wait until it is listed (a loaded machine may take longer than
        # the half second a request waits), so no test makes ours ask the upstream for it.
        auth = {"Authorization": basic("alice", PASSWORD)}
        wait_for(lambda: 'href="shared-name/"' in ours.get("/simple/", headers=auth).text,
                 timeout=5, what="the private shared-name in /simple/")
        return public, ours

    yield start
    for public in publics:
        if public.proc is not None:
            public.stop()


def sh(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    """Run a client with a clean environment; uv reads the project's pyproject.toml."""
    env = clean_env(PATH=f"{VENV_BIN}:{os.environ['PATH']}", HOME=str(cwd),
                    UV_PYTHON_DOWNLOADS="never", **extra)
    env.pop("VIRTUAL_ENV", None)
    env.pop("UV_NO_CONFIG", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300, check=False)


def out(res: subprocess.CompletedProcess) -> str:
    return res.stdout + res.stderr


def dists(target: Path) -> dict[str, str]:
    """name -> version installed in a --target directory or a venv's site-packages."""
    found = {}
    for meta in target.rglob("*.dist-info/METADATA"):
        fields = dict(line.split(": ", 1) for line in meta.read_text().splitlines()[:3]
                      if ": " in line)
        found[fields["Name"]] = fields["Version"]
    return found


def pip_install(index: str, tmp_path: Path, name: str, *reqs: str) -> tuple[subprocess.CompletedProcess, Path]:
    target = tmp_path / name
    res = sh([sys.executable, "-m", "pip", "install", "--no-cache-dir", "--index-url", index,
              "--target", str(target), *reqs], tmp_path)
    return res, target


def uv_install(index: str, tmp_path: Path, name: str, *reqs: str) -> tuple[subprocess.CompletedProcess, Path]:
    venv = tmp_path / name
    made = sh(["uv", "venv", "-q", str(venv)], tmp_path)
    assert made.returncode == 0, out(made)
    res = sh(["uv", "pip", "install", "--python", str(venv / "bin" / "python"),
              "--index-url", index, "--cache-dir", str(tmp_path / f"{name}-uv-cache"), *reqs],
             tmp_path)
    return res, venv


WANT = {"pbx-web": "1.0", "pbx-core": "1.1", "pbx-util": "1.0"}


def cache_area(ours) -> Path:
    return ours.packages / ".pypibox" / "cache"


# --- pip, uv, poetry through the cache, then from it with the upstream stopped ------------

def test_pip_installs_through_the_cache_then_from_it_with_the_upstream_down(pair, tmp_path):
    public, ours = pair(PYPI_UPSTREAM_TTL="off")   # every page revalidated: stale when down
    index = ours.url + "/simple/"
    res, first = pip_install(index, tmp_path, "first", "pbx-web")
    assert res.returncode == 0, out(res)
    assert dists(first) == WANT
    cached = sorted(p.name for p in (cache_area(ours) / "files").rglob("*.whl"))
    assert cached == ["pbx_core-1.1-py3-none-any.whl", "pbx_util-1.0-py3-none-any.whl",
                      "pbx_web-1.0-py3-none-any.whl"]
    assert upstream_gets(public, "/packages/pbx_core-1.1-py3-none-any.whl", exact=True,
                         at_least=1) == 1
    public.stop()
    res, second = pip_install(index, tmp_path, "second", "pbx-web")
    assert res.returncode == 0, out(res)
    assert dists(second) == WANT
    page = ours.get("/simple/pbx-core/")
    assert page.status == 200 and page.headers.get("x-pypibox-stale")


def test_uv_pip_install_and_uv_lock_through_the_cache_and_with_the_upstream_down(pair, tmp_path):
    public, ours = pair(PYPI_UPSTREAM_TTL="off")
    index = ours.url + "/simple/"
    res, venv = uv_install(index, tmp_path, "one", "pbx-web")
    assert res.returncode == 0, out(res)
    assert dists(venv / "lib") == WANT
    project = tmp_path / "app"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        'dependencies = ["pbx-web", "shared-name"]\n\n'
        f'[[tool.uv.index]]\nname = "ours"\nurl = "{index}"\ndefault = true\n')
    locked = sh(["uv", "lock", "--cache-dir", str(tmp_path / "lock-cache")], project)
    assert locked.returncode == 0, out(locked)
    lock = (project / "uv.lock").read_text()
    assert f"{ours.url}/cache/pbx-core/pbx_core-1.1-py3-none-any.whl" in lock
    assert f"{ours.url}/packages/shared_name-1.0-py3-none-any.whl" in lock
    assert "9.9" not in lock
    public.stop()
    (project / "uv.lock").unlink()
    again = sh(["uv", "lock", "--cache-dir", str(tmp_path / "lock-cache-2")], project)
    assert again.returncode == 0, out(again)
    assert (project / "uv.lock").read_text() == lock
    res, venv = uv_install(index, tmp_path, "two", "pbx-web")
    assert res.returncode == 0, out(res)
    assert dists(venv / "lib") == WANT


def test_poetry_installs_a_project_through_the_cache_and_with_the_upstream_down(pair, tmp_path):
    public, ours = pair(PYPI_UPSTREAM_TTL="off")
    index = ours.url + "/simple/"

    def poetry_project(where: Path) -> Path:
        where.mkdir()
        (where / "pyproject.toml").write_text(
            '[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
            'dependencies = ["pbx-web"]\n\n[tool.poetry]\npackage-mode = false\n\n'
            f'[[tool.poetry.source]]\nname = "ours"\nurl = "{index}"\npriority = "primary"\n')
        return where

    env = {"POETRY_VIRTUALENVS_IN_PROJECT": "true", "POETRY_NO_INTERACTION": "1"}
    for n, stop_first in ((1, False), (2, True)):
        if stop_first:
            public.stop()
        project = poetry_project(tmp_path / f"app{n}")
        cache = str(tmp_path / f"poetry-cache-{n}")
        for cmd in (["lock"], ["install", "--no-root"]):
            res = sh([str(Path(VENV_BIN) / "poetry"), *cmd], project, POETRY_CACHE_DIR=cache,
                     **env)
            assert res.returncode == 0, out(res)
        got = dists(project / ".venv" / "lib")
        assert {k: got.get(k) for k in WANT} == WANT


# --- private names shadow the upstream ----------------------------------------------------

def test_a_private_name_is_served_from_private_files_only(pair, tmp_path):
    public, ours = pair()
    page = json.loads(ours.get("/simple/shared-name/", headers={"Accept": JSON}).body)
    assert [f["filename"] for f in page["files"]] == ["shared_name-1.0-py3-none-any.whl"]
    assert all("/cache/" not in f["url"] for f in page["files"])
    res, target = pip_install(ours.url + "/simple/", tmp_path, "t", "shared-name")
    assert res.returncode == 0, out(res)
    assert dists(target) == {"shared-name": "1.0"}
    assert upstream_gets(public, "shared-name") == 0
    assert upstream_gets(public, "shared_name") == 0
    assert not list(cache_area(ours).rglob("*shared*"))
    assert ours.get("/cache/shared-name/shared_name-9.9-py3-none-any.whl").status == 404
    listing = ours.get("/simple/").text
    assert "shared-name" in listing and "pbx-core" not in listing   # private projects only


def test_a_name_reserved_by_a_roles_rule_is_never_taken_from_upstream(pair, tmp_path):
    roles = tmp_path / "roles"
    roles.write_text("owner alice pbx-core*   # ours, even before the first upload\n")
    public, ours = pair(PYPI_ROLES=str(roles))
    page = ours.get("/simple/pbx-core/")
    assert page.status == 404
    assert ours.get("/cache/pbx-core/pbx_core-1.0-py3-none-any.whl").status == 404
    assert ours.get("/simple/pbx-util/").status == 200            # not reserved: cached
    assert upstream_gets(public, "pbx-core") == 0 and upstream_gets(public, "pbx_core") == 0


# --- integrity, cooldown, failures ---------------------------------------------------------

def test_a_file_changed_upstream_is_refused_and_not_kept(pair, tmp_path):
    public, ours = pair()
    name = "pbx_core-1.1-py3-none-any.whl"
    assert ours.get("/simple/pbx-core/").status == 200       # the page, with the old hash
    wheel = public.packages / name
    wheel.write_bytes(bytes(b ^ 0x33 for b in wheel.read_bytes()))
    url = f"{ours.url}/cache/pbx-core/{name}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            body = resp.read()
            complete = int(resp.headers["Content-Length"]) == len(body)
    except urllib.error.HTTPError as err:
        assert err.code == 502
        complete = False
    except (IncompleteRead, ConnectionError):
        complete = False
    assert not complete
    assert not list(cache_area(ours).rglob(name))
    res, _ = pip_install(ours.url + "/simple/", tmp_path, "t", "pbx-core==1.1")
    assert res.returncode != 0


def test_the_cooldown_hides_a_fresh_release_and_uv_resolves_to_the_older(pair, tmp_path):
    public, ours = pair(PYPI_UPSTREAM_MIN_AGE="3d")
    make_wheel(public.packages, "pbx-core", "1.2")            # published just now
    settled(public, "pbx-core")
    res, venv = uv_install(ours.url + "/simple/", tmp_path, "v", "pbx-core")
    assert res.returncode == 0, out(res)
    assert dists(venv / "lib") == {"pbx-core": "1.1"}
    page = json.loads(ours.get("/simple/pbx-core/", headers={"Accept": JSON}).body)
    assert "1.2" not in page["versions"]
    (ours.htpasswd.parent / "min-age-exempt").write_text("pbx-core\n")
    time.sleep(1.5)
    res, venv = uv_install(ours.url + "/simple/", tmp_path, "w", "pbx-core")
    assert res.returncode == 0, out(res)
    assert dists(venv / "lib") == {"pbx-core": "1.2"}


def test_an_uncached_name_with_the_upstream_down_is_a_quick_clear_502(pair):
    public, ours = pair()
    public.stop()
    t0 = time.monotonic()
    res = ours.get("/simple/never-asked/")
    assert res.status == 502
    assert "connection refused" in res.text and res.text.count("\n") == 1
    assert time.monotonic() - t0 < 10


def test_range_and_head_on_a_cached_file(pair):
    public, ours = pair()
    name = "pbx_core-1.1-py3-none-any.whl"
    data = (public.packages / name).read_bytes()
    path = f"/cache/pbx-core/{name}"
    assert ours.get("/simple/pbx-core/").status == 200
    full = ours.get(path)
    assert full.status == 200 and full.body == data
    part = ours.get(path, headers={"Range": "bytes=10-19"})
    assert part.status == 206 and part.body == data[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
    head = http("HEAD", ours.url + path)
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(data))
    meta = ours.get(path + ".metadata")
    page = json.loads(ours.get("/simple/pbx-core/", headers={"Accept": JSON}).body)
    entry = next(f for f in page["files"] if f["filename"] == name)
    assert meta.status == 200
    assert hashlib.sha256(meta.body).hexdigest() == entry["core-metadata"]["sha256"]


def test_cached_projects_need_the_same_credentials_as_private_ones(pair):
    _public, ours = pair(PYPI_AUTHENTICATE="update,download,list")
    auth = {"Authorization": basic("alice", PASSWORD)}
    assert ours.get("/simple/pbx-core/").status == 401
    assert ours.get("/simple/pbx-core/", headers={"Authorization": basic("alice", "no")}
                    ).status == 403
    assert ours.get("/simple/pbx-core/", headers=auth).status == 200
    path = "/cache/pbx-core/pbx_core-1.0-py3-none-any.whl"
    assert ours.get(path).status == 401
    assert ours.get(path, headers=auth).status == 200


def set_status(index, project: str, *args: str) -> str:
    """``python -m pypibox status`` on a server's own files, as its operator would."""
    env = clean_env(PYTHONPATH=str(Path(__file__).resolve().parent.parent),
                    PYPI_PACKAGES_DIR=str(index.packages), PYPI_HTPASSWD=str(index.htpasswd),
                    USER="ops")
    res = subprocess.run([sys.executable, "-m", "pypibox", "status", project, *args],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_the_upstreams_project_status_is_passed_on_and_a_quarantine_holds(pair, tmp_path):
    """PEP 792 through the cache: the upstream's archived status and reason show in both
    forms; quarantined there, the project offers no files here, cached ones included, and
    pip finds nothing to install; active again, it installs."""
    public, ours = pair(PYPI_UPSTREAM_TTL="off")
    index = ours.url + "/simple/"
    wheel = "/cache/pbx-util/pbx_util-1.0-py3-none-any.whl"
    assert ours.get("/simple/pbx-util/").status == 200 and ours.get(wheel).status == 200
    assert "project-status" not in json.loads(
        ours.get("/simple/pbx-util/", headers={"Accept": JSON}).body)

    set_status(public, "pbx-util", "archived", "--reason", "folded into pbx-core")
    page = json.loads(ours.get("/simple/pbx-util/", headers={"Accept": JSON}).body)
    assert page["project-status"] == {"status": "archived", "reason": "folded into pbx-core"}
    assert [f["filename"] for f in page["files"]] == ["pbx_util-1.0-py3-none-any.whl"]
    html = ours.get("/simple/pbx-util/").text
    assert '<meta name="pypi:project-status" content="archived">' in html
    assert '<meta name="pypi:project-status-reason" content="folded into pbx-core">' in html

    set_status(public, "pbx-util", "quarantined", "--reason", "under review")
    page = json.loads(ours.get("/simple/pbx-util/", headers={"Accept": JSON}).body)
    assert page["project-status"] == {"status": "quarantined", "reason": "under review"}
    assert page["files"] == [] and "pbx_util" not in ours.get("/simple/pbx-util/").text
    assert ours.get(wheel).status == 404   # cached a moment ago, and still not served
    res, _ = pip_install(index, tmp_path, "held", "pbx-util")
    assert res.returncode != 0 and "No matching distribution found for pbx-util" in out(res)

    set_status(public, "pbx-util", "active")
    res, target = pip_install(index, tmp_path, "freed", "pbx-util")
    assert res.returncode == 0, out(res)
    assert dists(target) == {"pbx-util": "1.0"}
    assert "project-status" not in json.loads(
        ours.get("/simple/pbx-util/", headers={"Accept": JSON}).body)


def test_two_servers_on_one_volume_fetch_a_file_once(server_factory, tmp_path):
    public = server_factory(PYPI_FALLBACK="off")
    public_tree(public.packages)
    env = {"PYPI_FALLBACK": "cache", "PYPI_UPSTREAM": public.url + "/simple/"}
    first = server_factory(**env)
    second = make_server(tmp_path, **env)
    shutil.rmtree(second.packages)
    second.packages = first.packages
    second.start()
    try:
        name = "pbx_core-1.1-py3-none-any.whl"
        want = (public.packages / name).read_bytes()
        got: list[bytes] = []

        def fetch(srv) -> None:
            assert srv.get("/simple/pbx-core/").status == 200
            got.append(srv.get(f"/cache/pbx-core/{name}").body)

        threads = [threading.Thread(target=fetch, args=(s,)) for s in (first, second) * 3]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert got == [want] * 6
        assert upstream_gets(public, f"/packages/{name}", exact=True, at_least=1) == 1
    finally:
        second.stop()
