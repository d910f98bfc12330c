"""`make cache-stats|cache-prune|cache-forget` and `make backup CACHE=...` run for real
against the docker stand-in (tests/fakes/docker) playing the engine on a directory: ``exec``
and ``run`` of the server image run the real ``python -m pypibox cache ...`` on it, and the
backup's ``tar`` runs the real tar with the arguments the Makefile gave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
from conftest import ROOT
from support import FakeDocker

IMAGE = "example/pypibox-server:test"


@pytest.fixture
def engine(tmp_path):
    volume = tmp_path / "volume"
    (volume / ".pypibox" / "cache" / "files" / "demo").mkdir(parents=True)
    (volume / ".pypibox" / "cache" / "pages").mkdir(parents=True)
    (volume / "mine-1.0-py3-none-any.whl").write_bytes(os.urandom(3000))
    (volume / ".pypibox" / "stamp").write_text("1\n")
    for name, size in (("demo-1.0-py3-none-any.whl", 4000), ("demo-1.0.tar.gz", 6000)):
        (volume / ".pypibox" / "cache" / "files" / "demo" / name).write_bytes(os.urandom(size))
    (volume / ".pypibox" / "cache" / "pages" / "demo.json").write_text(
        json.dumps({"v": 1, "name": "demo", "fetched": 0, "files": []}))
    log = tmp_path / "docker.log"
    env = FakeDocker(log).env(FAKE_VOLUME=str(volume), FAKE_ROOT=str(ROOT),
                              FAKE_DOCKER_PYTHON=sys.executable)
    env.pop("MAKEFLAGS", None)
    return {"env": env, "log": log, "volume": volume, "tmp": tmp_path}


def make(engine, *targets: str, **extra: str) -> subprocess.CompletedProcess:
    env = {**engine["env"], **extra}
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *targets,
                           f"IMAGE={IMAGE}", f"PYTHON={sys.executable}"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def calls(engine) -> list[list[str]]:
    return FakeDocker(engine["log"]).argv()


def test_cache_stats_runs_in_the_running_container(engine):
    res = make(engine, "cache-stats", FAKE_RUNNING="abc123")
    assert res.returncode == 0, res.stderr
    assert "1 projects, 2 files" in res.stdout
    assert ["exec", "pypi", "python", "-m", "pypibox", "cache", "stats"] in calls(engine)


def test_cache_prune_without_a_container_uses_a_throwaway_one_on_the_volume(engine):
    res = make(engine, "cache-prune", PYPI_CACHE_MAX_SIZE="5000")
    assert res.returncode == 0, res.stderr
    run = next(c for c in calls(engine) if c[:1] == ["run"])
    assert "--rm" in run and "pypi:/data/packages" in run and "--network" in run
    assert run[-5:] == ["pypibox", "cache", "prune", "--max-size", "5000"]
    left = list((engine["volume"] / ".pypibox" / "cache" / "files").rglob("*.*"))
    assert sum(p.stat().st_size for p in left) <= 5000
    assert (engine["volume"] / "mine-1.0-py3-none-any.whl").exists()   # never a private file


def test_cache_forget_needs_a_plain_project_name(engine):
    for bad in ("", "x;rm -rf /", "../etc"):
        res = make(engine, "cache-forget", PROJECT=bad)
        assert res.returncode == 2 and "PROJECT=<name>" in res.stderr
    res = make(engine, "cache-forget", PROJECT="Demo", FAKE_RUNNING="abc")
    assert res.returncode == 0, res.stderr
    assert "removed 2 files" in res.stdout
    assert not (engine["volume"] / ".pypibox" / "cache" / "files" / "demo").exists()


@pytest.mark.parametrize("cache", ["", "yes"])
def test_backup_leaves_the_cache_out_unless_asked(engine, cache):
    backup = engine["tmp"] / "b.tar.gz"
    res = make(engine, "backup", BACKUP=str(backup), **({"CACHE": cache} if cache else {}))
    assert res.returncode == 0, res.stderr
    with tarfile.open(backup) as tf:
        names = {m.name.removeprefix("./") for m in tf.getmembers()}
    assert "mine-1.0-py3-none-any.whl" in names and ".pypibox/stamp" in names
    cached = {n for n in names if n.startswith(".pypibox/cache")}
    if cache:
        assert ".pypibox/cache/files/demo/demo-1.0.tar.gz" in cached
        assert "with the cache" in res.stdout
    else:
        assert cached == set() and "CACHE=yes includes it" in res.stdout


def test_make_accounts_installs_the_exemption_and_netrc_files_beside_htpasswd(tmp_path):
    from test_makefiles import copy_build_files, with_user
    from test_makefiles import make as make_in

    repo = copy_build_files(tmp_path / "repo")
    docker = FakeDocker(tmp_path / "docker-calls.jsonl")
    with_user(repo)
    result = make_in(repo, docker, "install", directory="auth")
    assert result.returncode == 0, result.stderr
    assert not [c for c in docker.calls if "sh" in c["argv"]]   # none there: none installed
    (repo / "auth" / "min-age-exempt").write_text("urllib3  # the CVE fix\n")
    (repo / "auth" / "netrc").write_text("machine pypi.example.org login bot password t0k\n")
    docker.clear()
    result = make_in(repo, docker, "install", directory="auth")
    assert result.returncode == 0, result.stderr
    copies = {c["argv"][-1].split()[-1]: c for c in docker.calls if "sh" in c["argv"]}
    assert set(copies) == {"/data/auth/min-age-exempt", "/data/auth/netrc"}
    assert copies["/data/auth/netrc"]["stdin"] == (repo / "auth" / "netrc").read_text()
    for call in copies.values():
        assert "--network" in call["argv"] and "pypi-auth:/data/auth" in call["argv"]
        assert "chmod 0640" in call["argv"][-1] and "chown 0:9898" in call["argv"][-1]
    assert "installed netrc into the pypi-auth volume" in result.stdout
