"""The running server container: its user, its read-only accounts, the files it stores, its
health check, how it stops, and packages outliving the container."""

from __future__ import annotations

import hashlib
import time

import pytest
from conftest import http

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]


def test_server_process_is_not_root(deploy):
    dep = deploy()
    assert dep.exec("id", "-u").stdout.strip() == "9898"
    assert dep.exec("id", "-g").stdout.strip() == "9898"
    top = dep.engine.docker("top", dep.container, "-eo", "uid,pid,args").stdout.splitlines()
    rows = [line.split(None, 2) for line in top[1:] if line.strip()]
    assert rows and any("pypibox" in row[2] for row in rows), top
    assert {row[0] for row in rows} == {"9898"}, top


def test_accounts_volume_is_read_only_even_for_root_inside(deploy):
    dep = deploy()
    mounts = {m.split()[0]: m.split()[1] for m in dep.inspect(
        "{{range .Mounts}}{{.Destination}} {{.RW}}\n{{end}}").splitlines() if m}
    assert mounts == {"/data/auth": "false", "/data/packages": "true"}
    for user in (None, "0"):
        res = dep.exec("sh", "-c", "echo x > /data/auth/htpasswd", user=user)
        assert res.returncode != 0
        assert "Read-only file system" in res.stderr or "Permission denied" in res.stderr, \
            res.stderr
    res = dep.exec("sh", "-c", "touch /data/auth/new", user="0")
    assert res.returncode != 0 and "Read-only file system" in res.stderr, res.stderr
    assert dep.exec("cat", "/data/auth/htpasswd", user="0").stdout.startswith("alice:$2y$")


def test_stored_packages_are_owned_by_9898(deploy, tmp_path):
    dep = deploy()
    wheel = dep.upload_new(tmp_path)
    owner = dep.exec("stat", "-c", "%u:%g", f"/data/packages/{wheel.name}", check=True)
    assert owner.stdout.strip() == "9898:9898"


def test_healthcheck_reports_healthy_and_docker_stop_ends_it_with_sigterm(deploy):
    dep = deploy()
    assert dep.inspect("{{.State.Health.Status}}") == "healthy"
    last = dep.inspect("{{with index .State.Health.Log 0}}{{.ExitCode}}{{end}}")
    assert last == "0"
    assert dep.inspect("{{json .Config.StopSignal}}") in ('"SIGTERM"', "null", '""')
    started = time.monotonic()
    # With a 30 s grace period a server that ignored SIGTERM would be killed: exit code 137.
    dep.engine.docker("stop", "-t", "30", dep.container)
    took = time.monotonic() - started
    print(f"docker stop took {took:.1f}s")
    assert dep.inspect("{{.State.ExitCode}} {{.State.OOMKilled}}") == "0 false"
    logs = dep.engine.docker("logs", dep.container).stdout + \
        dep.engine.docker("logs", dep.container).stderr
    assert logs.strip(), "the server logged nothing"


def test_packages_survive_removing_the_container(deploy, tmp_path):
    dep = deploy()
    wheel = dep.upload_new(tmp_path)
    old = dep.inspect("{{.Id}}")
    dep.engine.docker("rm", "-f", dep.container)
    with pytest.raises(OSError):  # the container is gone: nothing answers on the port
        http("GET", dep.url + "/health", timeout=5)
    dep.run()
    assert dep.inspect("{{.Id}}") != old
    project = wheel.name.split("-")[0].replace("_", "-")
    listing = http("GET", f"{dep.url}/simple/{project}/").text
    assert wheel.name in listing
    link = f"{dep.url}/packages/{wheel.name}"
    body = http("GET", link).body
    assert hashlib.sha256(body).digest() == hashlib.sha256(wheel.read_bytes()).digest()

