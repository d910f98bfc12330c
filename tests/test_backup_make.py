"""`make backup` / `make restore` run for real against a recording stand-in for docker.

The stand-in (tests/fakes/docker, first on PATH) records each call and plays a small engine:
with $FAKE_VOLUME set, ``run ... tar -czf -`` streams a real tar.gz of that directory, the
entry count check prints what is in it, and the restore run saves what it was given on
stdin, so the tests can compare bytes end to end.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT
from support import FakeDocker

IMAGE = "example/pypibox-server:test"


@pytest.fixture
def engine(tmp_path):
    """PATH with the stand-in first, its log, and the directory that plays the volume."""
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "pkg_a-1.0-py3-none-any.whl").write_bytes(os.urandom(3000))
    (volume / "pkg-b-2.0.tar.gz").write_bytes(os.urandom(2000))
    (volume / ".pypibox").mkdir()
    log = tmp_path / "docker.log"
    env = FakeDocker(log).env(FAKE_VOLUME=str(volume))
    env.pop("DOCKER", None)
    env.pop("MAKEFLAGS", None)
    return {"env": env, "log": log, "volume": volume, "tmp": tmp_path}


def make(engine, *targets: str, **extra: str) -> subprocess.CompletedProcess:
    env = {**engine["env"], **extra}
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *targets,
                           f"IMAGE={IMAGE}"], env=env, capture_output=True, text=True, timeout=60)


def calls(engine) -> list[list[str]]:
    return FakeDocker(engine["log"]).argv()


def runs(engine) -> list[list[str]]:
    return [c for c in calls(engine) if c[:1] == ["run"]]


def test_backup_streams_the_volume_read_only_without_network(engine):
    backup = engine["tmp"] / "out" / "pypi.tar.gz"
    backup.parent.mkdir()
    result = make(engine, "backup", BACKUP=str(backup))
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = runs(engine)
    assert "--rm" in run
    assert run[run.index("-v") + 1] == "pypi:/data/packages:ro"
    assert run[run.index("--network") + 1] == "none"
    assert IMAGE in run
    assert run[run.index("--entrypoint") + 1] == "tar"
    assert run[run.index(IMAGE) + 1:] == ["-czf", "-", "--exclude=./.pypibox/cache",
                                          "-C", "/data/packages", "."]
    with tarfile.open(backup) as tf:
        members = {m.name.removeprefix("./") for m in tf.getmembers() if m.isfile()}
        assert members == {"pkg_a-1.0-py3-none-any.whl", "pkg-b-2.0.tar.gz"}
        data = tf.extractfile("./pkg_a-1.0-py3-none-any.whl").read()
    assert data == (engine["volume"] / "pkg_a-1.0-py3-none-any.whl").read_bytes()
    assert not Path(str(backup) + ".part").exists()
    assert "saved to" in result.stdout


def test_backup_of_a_missing_volume_or_a_failed_run_writes_no_file(engine):
    backup = engine["tmp"] / "never.tar.gz"
    failed = make(engine, "backup", BACKUP=str(backup), FAKE_FAIL="1")
    assert failed.returncode != 0
    assert "Backup failed" in failed.stderr
    assert not backup.exists() and not Path(str(backup) + ".part").exists()
    missing = make(engine, "backup", BACKUP=str(backup), FAKE_VOLUME=str(engine["tmp"] / "nope"))
    assert missing.returncode != 0 and "No volume pypi" in missing.stderr
    assert not backup.exists()


def test_restore_refuses_a_volume_with_packages_unless_forced(engine):
    backup = engine["tmp"] / "b.tar.gz"
    assert make(engine, "backup", BACKUP=str(backup)).returncode == 0
    before = len(runs(engine))

    refused = make(engine, "restore", BACKUP=str(backup))
    assert refused.returncode != 0
    assert "already holds 2 entries" in refused.stderr and "FORCE=yes" in refused.stderr
    assert not [r for r in runs(engine)[before:] if "-i" in r], "nothing may be written"

    forced = make(engine, "restore", BACKUP=str(backup), FORCE="yes")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    write = [r for r in runs(engine) if "-i" in r][-1]
    assert write[write.index("-v") + 1] == "pypi:/data/packages"
    assert write[write.index("--network") + 1] == "none"
    assert write[write.index("--user") + 1] == "0"
    assert IMAGE in write
    script = write[-1]
    assert "tar -xzf - -C /data/packages" in script
    assert "chown -R 9898:9898 /data/packages" in script
    streamed = Path(str(engine["log"]) + ".stdin").read_bytes()
    assert streamed == backup.read_bytes()


def test_restore_into_an_empty_volume_and_its_refusals(engine):
    backup = engine["tmp"] / "b.tar.gz"
    assert make(engine, "backup", BACKUP=str(backup)).returncode == 0
    empty = engine["tmp"] / "empty-volume"
    empty.mkdir()
    (empty / ".pypibox").mkdir()  # the server's own state does not count as packages
    ok = make(engine, "restore", BACKUP=str(backup), FAKE_VOLUME=str(empty))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert Path(str(engine["log"]) + ".stdin").read_bytes() == backup.read_bytes()

    running = make(engine, "restore", BACKUP=str(backup), FAKE_VOLUME=str(empty),
                   FAKE_RUNNING="0123456789ab")
    assert running.returncode != 0 and "make stop" in running.stderr
    missing = make(engine, "restore", BACKUP=str(engine["tmp"] / "absent.tar.gz"))
    assert missing.returncode != 0 and "No backup file" in missing.stderr
    junk = engine["tmp"] / "junk.tar.gz"
    junk.write_bytes(b"not gzip")
    bad = make(engine, "restore", BACKUP=str(junk), FAKE_VOLUME=str(empty))
    assert bad.returncode != 0 and "not a gzip file" in bad.stderr
