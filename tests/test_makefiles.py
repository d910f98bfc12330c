"""The real Makefiles run against a recording stand-in for the docker command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, add_user
from support import FakeDocker, run_in_pty

COPY = ["Makefile", "Dockerfile", ".dockerignore", "requirements.lock", "scripts", "auth", "pypibox"]


def copy_build_files(dest: Path) -> Path:
    """Copy the repository's build files to ``dest``, without anyone's auth/htpasswd."""
    dest.mkdir()
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("htpasswd", "__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture
def repo(tmp_path) -> Path:
    """A copy of the repository's build files."""
    return copy_build_files(tmp_path / "repo")


@pytest.fixture
def docker(tmp_path) -> FakeDocker:
    return FakeDocker(tmp_path / "docker-calls.jsonl")


def make(repo: Path, docker: FakeDocker, *args: str, env: dict[str, str] | None = None,
         directory: str = "") -> subprocess.CompletedProcess:
    full_env = docker.env()
    full_env.update(env or {})
    cmd = ["make", "--no-print-directory"] + (["-C", directory] if directory else []) + list(args)
    return subprocess.run(cmd, cwd=repo, env=full_env, capture_output=True, text=True, timeout=120)


def with_user(repo: Path, user: str = "alice", password: str = "pw") -> Path:
    htp = repo / "auth" / "htpasswd"
    add_user(htp, user, password)
    return htp


def opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_make_run_does_everything_from_nothing(repo, docker):
    htp = with_user(repo)
    result = make(repo, docker, "run", "PORT=18123")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "http://localhost:18123/" in result.stdout

    builds = docker.argv("build")
    assert ["build", "-t", "pypibox/server:latest", "."] in builds
    assert ["build", "-t", "pypibox/auth:latest", "."] in builds
    assert ["volume", "create", "pypi"] in docker.argv("volume")
    assert ["volume", "create", "pypi-auth"] in docker.argv("volume")

    installs = [c for c in docker.calls if "install-htpasswd" in c["argv"]]
    assert len(installs) == 1
    assert installs[0]["stdin"] == htp.read_text()
    assert "pypi-auth:/data/auth" in opt(installs[0]["argv"], "-v")
    assert "none" in opt(installs[0]["argv"], "--network")

    (start,) = [a for a in docker.argv("run") if "-d" in a]
    assert opt(start, "--name") == ["pypi"]
    assert opt(start, "--restart") == ["unless-stopped"]
    assert opt(start, "-p") == ["127.0.0.1:18123:8080"]
    assert sorted(opt(start, "-v")) == ["pypi-auth:/data/auth:ro", "pypi:/data/packages"]
    assert start[-1] == "pypibox/server:latest"
    for argv in docker.argv("run"):
        assert "--privileged" not in argv and "--user" not in argv or "0" not in opt(argv, "--user")

    # Accounts go in before the server starts.
    order = [c["argv"] for c in docker.calls]
    assert order.index(installs[0]["argv"]) < order.index(start)


def test_make_run_twice_is_harmless(repo, docker):
    with_user(repo)
    assert make(repo, docker, "run").returncode == 0
    docker.clear()
    again = make(repo, docker, "run")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert not [a for a in docker.argv("run") if "-d" in a]
    assert not docker.argv("rm")


def test_changed_settings_replace_the_container(repo, docker):
    with_user(repo)
    assert make(repo, docker, "run").returncode == 0
    docker.clear()
    result = make(repo, docker, "run", "PYPI_OVERWRITE=on", "PYPI_AUTHENTICATE=update,download,list")
    assert result.returncode == 0, result.stderr
    assert ["rm", "-f", "pypi"] in docker.argv("rm")
    (start,) = [a for a in docker.argv("run") if "-d" in a]
    assert set(opt(start, "-e")) == {"PYPI_OVERWRITE=on", "PYPI_AUTHENTICATE=update,download,list"}


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    ("", "has no users"),
    ("mallory:$apr1$uuphE3.n$GUCMloK7lmVB4oqvaKq2D1\n", "user mallory has a MD5"),
])
def test_make_run_refuses_without_good_accounts(repo, docker, content, words):
    if content is not None:
        (repo / "auth" / "htpasswd").write_text(content)
    result = make(repo, docker, "run")
    assert result.returncode != 0
    assert words in result.stderr
    assert "make -C auth adduser USER=" in result.stderr or "htpasswd -B" in result.stderr
    assert not [a for a in docker.argv("run") if "-d" in a]
    assert not [c for c in docker.calls if "install-htpasswd" in c["argv"]]


def test_make_run_reports_an_unhealthy_server(repo, docker):
    with_user(repo)
    result = make(repo, docker, "run", "WAIT=2", env={"FAKE_DOCKER_HEALTH": "unhealthy"})
    assert result.returncode != 0
    assert "not healthy after 2s" in result.stderr and "fake log line" in result.stderr


def test_stop_logs_status_clean(repo, docker):
    with_user(repo)
    assert make(repo, docker, "run").returncode == 0
    docker.clear()
    assert make(repo, docker, "stop").returncode == 0
    assert docker.argv("stop") == [["stop", "pypi"]]
    logs = make(repo, docker, "logs")
    assert logs.returncode == 0 and "fake log line" in logs.stdout
    assert ["logs", "--tail", "200", "--follow", "pypi"] not in docker.argv("logs")
    make(repo, docker, "logs", "FOLLOW=1")
    assert ["logs", "--tail", "200", "--follow", "pypi"] in docker.argv("logs")
    status = make(repo, docker, "status")
    assert "container pypi" in status.stdout and "volume: pypi-auth" in status.stdout
    docker.clear()
    clean = make(repo, docker, "clean")
    assert clean.returncode == 0
    assert ["rm", "-f", "pypi"] in docker.argv("rm")
    assert ["rmi", "pypibox/server:latest", "pypibox/auth:latest"] in docker.argv("rmi")
    assert not [a for a in docker.argv("volume") if a[1] == "rm"]


def test_stop_without_a_container_says_so(repo, docker):
    result = make(repo, docker, "stop")
    assert result.returncode == 0 and "nothing to stop" in result.stdout


def test_clean_volumes_needs_confirm(repo, docker):
    refused = make(repo, docker, "clean-volumes")
    assert refused.returncode != 0 and "CONFIRM=yes" in refused.stdout
    assert not docker.argv("volume")
    done = make(repo, docker, "clean-volumes", "CONFIRM=yes")
    assert done.returncode == 0
    assert ["volume", "rm", "pypi", "pypi-auth"] in docker.argv("volume")


def test_every_value_can_be_overridden(repo, docker):
    with_user(repo)
    result = make(repo, docker, "run", "IMAGE=my/srv:1", "AUTH_IMAGE=my/auth:1", "CONTAINER=idx",
                  "VOLUME=pk", "AUTH_VOLUME=ak", "PORT=9999", "BIND=0.0.0.0")
    assert result.returncode == 0, result.stderr
    (start,) = [a for a in docker.argv("run") if "-d" in a]
    assert start[-1] == "my/srv:1" and opt(start, "--name") == ["idx"]
    assert opt(start, "-p") == ["0.0.0.0:9999:8080"]
    assert sorted(opt(start, "-v")) == ["ak:/data/auth:ro", "pk:/data/packages"]
    assert ["build", "-t", "my/auth:1", "."] in docker.argv("build")


def test_targets_that_need_docker_say_so(repo, docker):
    result = make(repo, docker, "run", "DOCKER=no-such-docker")
    assert result.returncode != 0 and "needs Docker" in result.stderr
    auth = make(repo, docker, "install", "DOCKER=no-such-docker", directory="auth")
    with_user(repo)
    auth = make(repo, docker, "install", "DOCKER=no-such-docker", directory="auth")
    assert auth.returncode != 0 and "needs Docker" in auth.stderr


def targets(makefile: Path) -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", makefile.read_text(), re.M))


@pytest.mark.parametrize("directory", ["", "auth"])
def test_help_lists_every_target_and_every_target_is_phony(repo, docker, directory):
    makefile = repo / directory / "Makefile"
    result = make(repo, docker, "help", directory=directory)
    listed = {line.split("\t")[0] for line in result.stdout.splitlines() if "\t" in line}
    expected = targets(makefile) - {"test-env"}
    assert expected <= listed, expected - listed
    phony = set(re.search(r"^\.PHONY:(.*?)(?<!\\)$", makefile.read_text(), re.M | re.S).group(1)
                .replace("\\\n", " ").split())
    assert targets(makefile) <= phony


# --- auth/Makefile -------------------------------------------------------------------

def test_auth_build_and_interact(repo, docker):
    assert make(repo, docker, "build", directory="auth").returncode == 0
    assert docker.argv("build") == [["build", "-t", "pypibox/auth:latest", "."]]
    docker.clear()
    result = make(repo, docker, "interact", directory="auth")
    assert result.returncode == 0, result.stderr
    (shell,) = [a for a in docker.argv("run")]
    assert opt(shell, "--user") == [f"{os.getuid()}:{os.getgid()}"]
    assert opt(shell, "-v") == [f"{repo / 'auth'}/:/work/auth"]
    assert opt(shell, "-w") == ["/work"] and opt(shell, "--network") == ["none"]
    assert "-it" in shell and shell[-2:] == ["pypibox/auth:latest", "sh"]


def test_auth_adduser_through_docker_when_no_htpasswd_on_host(repo, docker):
    result = make(repo, docker, "adduser", "USER=bob", "HTPASSWD_BIN=", directory="auth")
    assert result.returncode == 0, result.stderr
    (add,) = [a for a in docker.argv("run")]
    assert add[add.index("pypibox/auth:latest"):] == [
        "pypibox/auth:latest", "htpasswd", "-B", "-C", "12", "-c", "auth/htpasswd", "bob"]
    assert opt(add, "--user") == [f"{os.getuid()}:{os.getgid()}"]


def test_auth_adduser_needs_a_user_name(repo, docker):
    result = make(repo, docker, "adduser", directory="auth")
    assert result.returncode != 0 and "USER=<name>" in result.stderr


def test_auth_adduser_with_neither_htpasswd_nor_docker(repo, docker):
    result = make(repo, docker, "adduser", "USER=bob", "HTPASSWD_BIN=", "DOCKER=no-such-docker",
                  directory="auth")
    assert result.returncode != 0
    assert "needs Apache's htpasswd" in result.stderr and "python -m pypibox adduser" in result.stderr


def test_auth_adduser_on_host_prompts_twice_and_writes_bcrypt(repo, docker):
    env = docker.env()
    for user in ("bob", "carl"):
        code, out = run_in_pty(["make", "-C", "auth", "adduser", f"USER={user}", "COST=5"],
                               [("password:", "pw-" + user + "\n"), ("password:", "pw-" + user + "\n")],
                               env=env, cwd=str(repo))
        assert code == 0, out
    htp = repo / "auth" / "htpasswd"
    assert re.findall(r"^(\w+):\$2y\$05\$", htp.read_text(), re.M) == ["bob", "carl"]
    check = subprocess.run(["htpasswd", "-vb", str(htp), "carl", "pw-carl"], capture_output=True)
    assert check.returncode == 0
    assert not docker.calls


def test_auth_deluser_list_check(repo, docker):
    htp = with_user(repo, "alice")
    add_user(htp, "bob", "pw")
    listed = make(repo, docker, "list", directory="auth")
    assert listed.stdout.split() == ["alice", "bob"] and "$2y$" not in listed.stdout
    assert make(repo, docker, "check", directory="auth").returncode == 0
    assert make(repo, docker, "deluser", "USER=alice", directory="auth").returncode == 0
    assert make(repo, docker, "list", directory="auth").stdout.split() == ["bob"]
    missing = make(repo, docker, "deluser", "USER=zed", directory="auth")
    assert missing.returncode != 0 and "no user zed" in missing.stderr
    subprocess.run(["htpasswd", "-bs", str(htp), "sha", "pw"], check=True, capture_output=True)
    check = make(repo, docker, "check", directory="auth")
    assert check.returncode != 0 and "user sha has a SHA-1" in check.stderr and "bob" not in check.stderr
    assert not docker.calls


def test_auth_install_streams_the_file_into_the_volume(repo, docker):
    htp = with_user(repo)
    result = make(repo, docker, "install", directory="auth")
    assert result.returncode == 0, result.stderr
    assert ["volume", "create", "pypi-auth"] in docker.argv("volume")
    (inst,) = [c for c in docker.calls if "install-htpasswd" in c["argv"]]
    assert inst["stdin"] == htp.read_text()
    assert opt(inst["argv"], "-v") == ["pypi-auth:/data/auth"]
    assert opt(inst["argv"], "-e") == ["PYPI_GID=9898"]
