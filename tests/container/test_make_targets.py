"""The Makefile's container targets against the real engine: volumes, accounts, run, status,
logs, stop, clean (volumes kept), clean-volumes (refuses without CONFIRM=yes)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import http

from .harness import AUTH_IMAGE, IMAGE, out, unique

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]


def volumes(engine) -> set[str]:
    return set(engine.docker("volume", "ls", "--format", "{{.Name}}").stdout.split())


def test_help_lists_the_targets(deploy):
    dep = deploy(start=False)
    for args, target in ((["help"], "clean-volumes"), (["-C", "auth", "help"], "interact")):
        res = dep.make(*args)
        assert res.returncode == 0 and target in res.stdout, out(res)


def test_lifecycle_run_status_logs_stop_clean_clean_volumes(deploy, tmp_path):
    dep = deploy(start=False)
    # Tags of its own, so that `make clean` removes nothing another test uses.
    dep.image = unique("pypibox-clean/server") + ":t"
    dep.auth_image = unique("pypibox-clean/auth") + ":t"
    dep.engine.docker("tag", IMAGE, dep.image)
    dep.engine.docker("tag", AUTH_IMAGE, dep.auth_image)

    status = dep.make("status")
    assert status.returncode == 0 and f"container {dep.container}: not created" in status.stdout
    stop = dep.make("stop")
    assert stop.returncode == 0 and f"No container named {dep.container}" in stop.stdout

    assert dep.make("volumes").returncode == 0
    assert {dep.volume, dep.auth_volume} <= volumes(dep.engine)
    accounts = dep.make("accounts")
    assert accounts.returncode == 0 and "installed 1 accounts" in accounts.stdout, out(accounts)

    dep.run()
    wheel = dep.upload_new(tmp_path)
    status = dep.make("status")
    assert status.returncode == 0, out(status)
    assert f"container {dep.container}: Up" in status.stdout and "(healthy)" in status.stdout
    assert f"127.0.0.1:{dep.port}->8080/tcp" in status.stdout
    assert f"volume: {dep.volume}" in status.stdout
    assert f"volume: {dep.auth_volume}" in status.stdout
    logs = dep.make("logs")
    text = logs.stdout + logs.stderr
    assert logs.returncode == 0, out(logs)
    assert "serving /data/packages on http://0.0.0.0:8080/" in text, text
    assert '"POST / HTTP/1.1" 200' in text, text  # the upload, in the access log

    stop = dep.make("stop")
    assert stop.returncode == 0, out(stop)
    assert dep.inspect("{{.State.Running}} {{.State.ExitCode}}") == "false 0"
    assert f"container {dep.container}: Exited (0)" in dep.make("status").stdout
    with pytest.raises(OSError):
        http("GET", dep.url + "/health", timeout=5)
    again = dep.run()
    assert "Replacing container" in again
    assert wheel.name in http("GET", dep.url + "/packages/").text

    clean = dep.make("clean")
    assert clean.returncode == 0, out(clean)
    assert dep.engine.docker("inspect", dep.container, check=False).returncode != 0
    for image in (dep.image, dep.auth_image):
        assert dep.engine.docker("image", "inspect", image, check=False).returncode != 0
    assert {dep.volume, dep.auth_volume} <= volumes(dep.engine)

    refused = dep.make("clean-volumes")
    assert refused.returncode != 0 and "CONFIRM=yes" in refused.stdout, out(refused)
    assert {dep.volume, dep.auth_volume} <= volumes(dep.engine)
    confirmed = dep.make("clean-volumes", "CONFIRM=yes")
    assert confirmed.returncode == 0, out(confirmed)
    assert not {dep.volume, dep.auth_volume} & volumes(dep.engine)


def test_docker_command_of_several_words_reaches_every_sub_make(deploy):
    """DOCKER="docker --host ..." (like DOCKER="sudo docker"): build, accounts and run pass it
    on whole, with no DOCKER_HOST to fall back on."""
    dep = deploy(start=False)
    env = dep.engine.env()
    del env["DOCKER_HOST"]
    docker = f"docker --host {dep.engine.host}"
    res = subprocess.run(["make", "--no-print-directory", "run", f"DOCKER={docker}", *dep.vars],
                         cwd=dep.repo, env=env, capture_output=True, text=True, timeout=600,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, out(res)
    assert "installed 1 accounts" in res.stdout
    assert dep.inspect("{{.State.Health.Status}}") == "healthy"
    assert http("GET", dep.url + "/health").status == 200
