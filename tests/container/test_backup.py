"""`make backup` and `make restore` against the real engine: packages survive losing the
volumes, restored files belong to the server's user, and a running server is never restored
under."""

from __future__ import annotations

import hashlib
import tarfile

import pytest
from conftest import http

from .harness import out

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]


def test_backup_then_restore_after_the_volumes_are_gone(deploy, tmp_path):
    dep = deploy()
    wheel = dep.upload_new(tmp_path)
    backup = tmp_path / "pypi-backup.tar.gz"

    saved = dep.make("backup", f"BACKUP={backup}")
    assert saved.returncode == 0, out(saved)
    with tarfile.open(backup) as tar:
        assert f"./{wheel.name}" in tar.getnames()

    running = dep.make("restore", f"BACKUP={backup}")
    assert running.returncode != 0 and "make stop" in running.stderr, out(running)

    assert dep.make("stop").returncode == 0
    gone = dep.make("clean-volumes", "CONFIRM=yes")
    assert gone.returncode == 0, out(gone)
    restored = dep.make("restore", f"BACKUP={backup}")
    assert restored.returncode == 0, out(restored)
    again = dep.make("restore", f"BACKUP={backup}")
    assert again.returncode != 0 and "FORCE=yes" in again.stderr, out(again)

    dep.run()  # a new container, a new accounts volume, the restored packages
    body = http("GET", f"{dep.url}/packages/{wheel.name}").body
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(wheel.read_bytes()).hexdigest()
    owner = dep.exec("stat", "-c", "%u:%g", f"/data/packages/{wheel.name}", check=True)
    assert owner.stdout.strip() == "9898:9898"
    newer = dep.upload_new(tmp_path)  # the server can still write next to restored files
    assert newer.name in http("GET", f"{dep.url}/packages/").text
