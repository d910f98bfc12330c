"""`make cache-stats|cache-prune|cache-forget` and `make backup CACHE=...` run for real
against a stand-in for docker that plays the engine on a directory: ``exec`` and ``run`` of
the server image run the real ``python -m pypibox cache ...`` on it, and the backup's
``tar`` runs the real tar with the arguments the Makefile gave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
from conftest import ROOT, clean_env

STUB = r'''#!/usr/bin/env python3
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")
volume = os.environ["FAKE_VOLUME"]
env = dict(os.environ, PYPI_PACKAGES_DIR=volume, PYTHONPATH=os.environ["FAKE_ROOT"])
if args[:2] == ["volume", "inspect"]:
    sys.exit(0 if os.path.isdir(volume) else 1)
if args[:1] == ["ps"]:
    print(os.environ.get("FAKE_RUNNING", ""))
    sys.exit(0)
if args[:1] == ["inspect"]:   # in-container.sh: is the server's container running?
    if not os.environ.get("FAKE_RUNNING"):
        sys.exit(1)
    print("true")
    sys.exit(0)
if args[:1] == ["exec"]:
    assert args[2:5] == ["python", "-m", "pypibox"], args
    sys.exit(subprocess.call([sys.executable, "-m", "pypibox", *args[5:]], env=env))
if args[:1] == ["run"]:
    image = args.index(os.environ["FAKE_IMAGE"])
    opts, rest = args[:image], args[image + 1:]
    for i, a in enumerate(opts):
        if a == "-e":
            k, _, v = opts[i + 1].partition("=")
            env[k] = v
    entry = opts[opts.index("--entrypoint") + 1] if "--entrypoint" in opts else None
    if entry == "tar":
        rest = [volume if a == "/data/packages" else a for a in rest]
        sys.stdout.flush()
        sys.exit(subprocess.call(["tar", *rest]))
    if entry == "python":
        sys.exit(subprocess.call([sys.executable, *rest], env=env))
    sys.exit(subprocess.call([sys.executable, "-m", "pypibox", *rest], env=env))
sys.stderr.write("fake engine: unexpected call %r\n" % (args,))
sys.exit(99)
'''

IMAGE = "example/pypibox-server:test"


@pytest.fixture
def engine(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(STUB.replace("/usr/bin/env python3", sys.executable))
    (bin_dir / "docker").chmod(0o755)
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
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", DOCKER_LOG=str(log),
                    FAKE_VOLUME=str(volume), FAKE_ROOT=str(ROOT), FAKE_IMAGE=IMAGE)
    env.pop("MAKEFLAGS", None)
    return {"env": env, "log": log, "volume": volume, "tmp": tmp_path}


def make(engine, *targets: str, **extra: str) -> subprocess.CompletedProcess:
    env = {**engine["env"], **extra}
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *targets,
                           f"IMAGE={IMAGE}", f"PYTHON={sys.executable}"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def calls(engine) -> list[list[str]]:
    return [json.loads(line) for line in engine["log"].read_text().splitlines()]


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
    from test_makefiles import Docker, copy_build_files, with_user
    from test_makefiles import make as make_in

    repo = copy_build_files(tmp_path / "repo")
    docker = Docker(tmp_path / "docker-calls.jsonl")
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
