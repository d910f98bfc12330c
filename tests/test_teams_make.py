"""The team targets of both Makefiles, against the recording docker stand-in of tests/fakes.

With FAKE_DOCKER_VOLUMES the stand-in runs each `python -m pypibox` call for real, on folders
that play the volumes, so a target's effect (a yank in the trail, a deleted file, a token that
works) is checked, and so is the docker command line that would run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT, add_user
from pkgfactory import make_sdist, make_wheel
from support import FakeDocker
from test_backup_make import calls as backup_calls
from test_backup_make import engine  # noqa: F401 (a fixture)
from test_backup_make import make as backup_make
from test_makefiles import copy_build_files, make, opt

from pypibox import roles, tokens
from pypibox.ledger import Event, Ledger

AUTH_TOOLS = ROOT / "auth"


@pytest.fixture
def site(tmp_path):
    """A copy of the build files, folders for the pypi and pypi-auth volumes, the stand-in."""
    repo = copy_build_files(tmp_path / "repo")
    packages = tmp_path / "vol-pypi"
    accounts = tmp_path / "vol-pypi-auth"
    accounts.mkdir()
    make_wheel(packages, "p", "1.0")
    make_sdist(packages, "p", "1.0")
    make_wheel(packages, "p", "2.0")
    add_user(accounts / "htpasswd", "alice", "pw")
    add_user(repo / "auth" / "htpasswd", "alice", "pw")
    add_user(repo / "auth" / "htpasswd", "bob", "pw")
    docker = FakeDocker(tmp_path / "docker-calls.jsonl")
    env = {"FAKE_DOCKER_VOLUMES": json.dumps({"pypi": str(packages), "pypi-auth": str(accounts)}),
           "FAKE_DOCKER_PYTHON": sys.executable, "FAKE_DOCKER_PYTHONPATH": str(ROOT)}
    return repo, packages, accounts, docker, env


def run_server(repo, docker, env) -> None:
    """`make run` through the stand-in: afterwards the container counts as running."""
    result = make(repo, docker, "run", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    docker.clear()


def pypibox_calls(docker) -> list[list[str]]:
    return [c["argv"] for c in docker.calls if "pypibox" in c["argv"]]


# --- Makefile: commands in the container ----------------------------------------------

def test_yank_runs_in_the_running_container_and_is_recorded(site):
    repo, packages, _, docker, env = site
    run_server(repo, docker, env)
    result = make(repo, docker, "yank", "PROJECT=p", "VERSION=1.0", "REASON=it's broken; sorry",
                  "BY=ops", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Yanked p-1.0-py3-none-any.whl, p-1.0.tar.gz\n"
    (call,) = pypibox_calls(docker)
    assert call == ["exec", "pypi", "python", "-m", "pypibox", "yank", "p", "1.0", "--reason",
                    "it's broken; sorry", "--as", "ops"]
    events = list(Ledger(packages).events())
    assert [(e.action, e.actor, e.reason) for e in events] == [
        ("yank", "cli:ops", "it's broken; sorry")] * 2
    docker.clear()
    result = make(repo, docker, "unyank", "PROJECT=p", "FILE=p-1.0.tar.gz", env=env)
    assert result.stdout == "Unyanked p-1.0.tar.gz\n", result.stderr
    assert Ledger(packages).yanked("p-1.0-py3-none-any.whl") == "it's broken; sorry"
    assert Ledger(packages).yanked("p-1.0.tar.gz") is None


def test_with_the_server_stopped_a_throwaway_container_gets_the_volumes(site):
    repo, packages, _, docker, env = site
    result = make(repo, docker, "delete", "PROJECT=p", "VERSION=2.0", "BY=ops", env=env)
    assert result.returncode == 0, result.stderr
    assert "Deleted p-2.0-py3-none-any.whl" in result.stdout
    assert not (packages / "p-2.0-py3-none-any.whl").exists()
    (call,) = pypibox_calls(docker)
    assert call[:2] == ["run", "--rm"] and opt(call, "--network") == ["none"]
    assert opt(call, "-v") == ["pypi:/data/packages", "pypi-auth:/data/auth:ro"]
    assert call[call.index("--entrypoint"):] == [
        "--entrypoint", "python", "pypibox/server:latest", "-m", "pypibox", "delete", "p", "2.0",
        "--reason", "", "--as", "ops"]
    assert "--user" not in call                     # the image's own user (pypi, uid 9898)
    (event,) = Ledger(packages).events()
    assert (event.action, event.actor, event.file) == ("delete", "cli:ops",
                                                       "p-2.0-py3-none-any.whl")


def test_status_project_owner_maintainer_and_audit(site):
    repo, packages, _, docker, env = site
    run_server(repo, docker, env)

    def ok(*args: str) -> str:
        result = make(repo, docker, *args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    assert ok("status-project", "PROJECT=p", "STATUS=deprecated", "REASON=use q") \
        == "p is deprecated\n"
    assert ok("owner", "PROJECT=p", "USER=alice") == "alice is now an owner of p\n"
    assert ok("maintainer", "PROJECT=p", "USER=alice", "REMOVE=yes") \
        == "alice is not a maintainer of p\n"
    shown = ok("status-project", "PROJECT=p").splitlines()
    assert shown[:2] == ["p: deprecated (use q)", "owners: alice"]
    assert Ledger(packages).status("p") == "deprecated"
    assert Ledger(packages).owners("p") == {"alice"}
    trail = ok("audit").splitlines()
    assert [line.split("  ")[2] for line in trail] == ["set_status", "add_owner"]
    assert ok("audit", "PROJECT=q") == ""
    raw = ok("audit", "PROJECT=p", "JSON=1").splitlines()
    assert [json.loads(line)["action"] for line in raw] == ["set_status", "add_owner"]
    login = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout
    assert json.loads(raw[0])["actor"] == "cli:" + login.strip()


@pytest.mark.parametrize("args, words", [
    (("yank",), "give the project: make yank PROJECT=<name>"),
    (("delete", "PROJECT=p"), "give the version or the file: make delete PROJECT=p VERSION="),
    (("owner", "PROJECT=p"), "give the user: make owner PROJECT=p USER=<name>"),
])
def test_team_targets_say_what_they_need(site, args, words):
    repo, _, _, docker, env = site
    result = make(repo, docker, *args, env=env)
    assert result.returncode != 0 and words in result.stderr
    assert not pypibox_calls(docker)


def test_without_a_container_or_a_volume_nothing_is_run(site):
    repo, _, _, docker, env = site
    result = make(repo, docker, "audit", "VOLUME=nosuch", env=env)
    assert result.returncode != 0
    assert "no volume nosuch and no running container pypi" in result.stderr
    assert not pypibox_calls(docker)


def test_backup_and_restore_carry_the_audit_trail(engine):  # noqa: F811
    volume = engine["volume"]
    trail = Ledger(volume)
    trail.record(Event("add_owner", "alice", user="alice", project="pkg-a", subject="alice"),
                 Event("upload", "alice", user="alice", project="pkg-a",
                       file="pkg_a-1.0-py3-none-any.whl", sha256="d" * 64, client="10.0.0.5"),
                 Event("yank", "cli:ops", project="pkg-a", file="pkg_a-1.0-py3-none-any.whl",
                       reason="broken"))
    tokens.TokenUse(volume / ".pypibox")._merge({"ci 2026-01-01T00:00:00Z": "2026-02-01T00:00:00Z"})
    backup = engine["tmp"] / "pypi.tar.gz"
    result = backup_make(engine, "backup", BACKUP=str(backup))
    assert result.returncode == 0, result.stderr
    with tarfile.open(backup) as tf:
        names = {m.name.removeprefix("./") for m in tf.getmembers() if m.isfile()}
        assert {".pypibox/audit.jsonl", ".pypibox/tokens-used.json"} <= names
        saved = tf.extractfile("./.pypibox/audit.jsonl").read()
    assert saved == trail.path.read_bytes()

    shutil.rmtree(volume)                                     # the volume is lost
    result = backup_make(engine, "restore", BACKUP=str(backup))
    assert result.returncode == 0, result.stdout + result.stderr
    restored = engine["tmp"] / "restored"
    restored.mkdir()
    with tarfile.open(str(engine["log"]) + ".stdin") as tf:
        tf.extractall(restored, filter="data")
    back = Ledger(restored)
    assert [(e.action, e.sha256) for e in back.events()] == [
        ("add_owner", ""), ("upload", "d" * 64), ("yank", "")]
    assert back.owners("pkg-a") == {"alice"}
    assert back.yanked("pkg_a-1.0-py3-none-any.whl") == "broken"
    assert any("tar -xzf" in " ".join(c) for c in backup_calls(engine))


# --- auth/Makefile: tokens and roles ---------------------------------------------------

def auth_make(repo, docker, *args, env=None):
    return make(repo, docker, *args, env=env, directory="auth")


def test_auth_token_on_the_host_with_python(site):
    repo, _, _, docker, _ = site
    result = auth_make(repo, docker, "token", "USER=bob", "PROJECT=acme-web acme-cli",
                       "EXPIRES=30d", "NAME=ci-acme", f"PYTHON={sys.executable}")
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert tokens.SECRET_RE.match(secret)
    assert "make -C auth install" in result.stderr
    table = tokens.read(repo / "auth" / "tokens")
    assert [(t.name, t.user, t.scope_text) for t in table.tokens] == [
        ("ci-acme", "bob", "acme-cli,acme-web")]
    assert tokens.Tokens(repo / "auth" / "tokens").check(secret).token == "ci-acme"
    assert not docker.calls
    listed = auth_make(repo, docker, "tokens", f"PYTHON={sys.executable}")
    assert "ci-acme" in listed.stdout and secret not in listed.stdout
    nobody = auth_make(repo, docker, "token", "USER=carol", f"PYTHON={sys.executable}")
    assert nobody.returncode != 0 and "no account named carol" in nobody.stderr
    assert auth_make(repo, docker, "revoke", f"PYTHON={sys.executable}").returncode != 0
    revoked = auth_make(repo, docker, "revoke", "NAME=ci-acme", f"PYTHON={sys.executable}")
    assert revoked.returncode == 0, revoked.stderr
    assert tokens.read(repo / "auth" / "tokens").tokens == ()


def test_auth_token_in_the_server_image_when_there_is_no_python(site):
    repo, _, _, docker, env = site
    result = auth_make(repo, docker, "token", "USER=bob", "PYTHON=", env=env)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    (call,) = pypibox_calls(docker)
    assert call[:2] == ["run", "--rm"] and opt(call, "--network") == ["none"]
    assert opt(call, "--user") == [f"{os.getuid()}:{os.getgid()}"]
    assert opt(call, "-v") == [f"{repo / 'auth'}/:/work/tokens",
                               f"{repo / 'auth'}/:/work/accounts:ro"]
    assert call[call.index("--entrypoint"):][:6] == [
        "--entrypoint", "python", "pypibox/server:latest", "-m", "pypibox", "token"]
    assert call[-7:] == ["--expires", "90d", "--file", "/work/tokens/tokens", "--htpasswd",
                         "/work/accounts/htpasswd", "--no-trail"]
    (tok,) = tokens.read(repo / "auth" / "tokens").tokens
    assert tok.user == "bob" and tok.hash == tokens.digest(secret)
    assert 89 * 86400 < tok.expires - tokens.parse_time(tok.created) <= 90 * 86400
    no_docker = auth_make(repo, docker, "tokens", "PYTHON=", "DOCKER=no-such-docker")
    assert no_docker.returncode != 0 and "needs Python with pypibox (make venv) or Docker" \
        in no_docker.stderr


def test_auth_admin_grant_roles(site):
    repo, _, _, docker, _ = site
    roles_file = repo / "auth" / "roles"
    first = auth_make(repo, docker, "admin", "USER=root")
    assert first.returncode == 0 and "root is now an administrator" in first.stdout
    again = auth_make(repo, docker, "admin", "USER=root")
    assert "root is an administrator already" in again.stdout
    granted = auth_make(repo, docker, "grant", "USER=bob", "PROJECT=acme-*")
    assert granted.returncode == 0, granted.stderr
    auth_make(repo, docker, "grant", "USER=carol", "PROJECT=acme-*", "ROLE=maintainer")
    before = roles_file.read_text()
    bad = auth_make(repo, docker, "grant", "USER=dave", "PROJECT=acme/x")
    assert bad.returncode != 0 and "is not a project name pattern" in bad.stderr
    assert roles_file.read_text() == before and not Path(f"{roles_file}.new").exists()
    rules = roles.read(roles_file)
    assert rules.admins == {"root"} and rules.owners("acme-web") == {"bob"}
    assert rules.maintainers("acme-web") == {"carol"}
    shown = auth_make(repo, docker, "roles")
    assert shown.stdout.split("\n")[:3] == ["admin root", "owner bob acme-*",
                                            "maintainer carol acme-*"]
    assert not docker.calls


def test_auth_check_and_install_take_every_accounts_file(site):
    repo, _, _, docker, _ = site
    auth = repo / "auth"
    done = auth_make(repo, docker, "install")
    assert done.returncode == 0, done.stderr
    runs = [c for c in docker.calls if c["argv"][0] == "run"]
    assert [c["argv"][-2:] for c in runs] == [
        ["install-htpasswd", "/data/auth/htpasswd"], ["roles", "/data/auth/roles"],
        ["tokens", "/data/auth/tokens"]]
    assert [c["stdin"] for c in runs[1:]] == ["", ""]          # none here: installed empty
    for c in runs:
        assert opt(c["argv"], "-v") == ["pypi-auth:/data/auth"]
        assert opt(c["argv"], "--network") == ["none"]
    (auth / "roles").write_text("admin root\n")
    tokens.create(auth / "tokens", "bob", name="ci")
    docker.clear()
    assert auth_make(repo, docker, "install").returncode == 0
    runs = [c for c in docker.calls if c["argv"][0] == "run"]
    assert runs[1]["stdin"] == "admin root\n"
    assert runs[2]["stdin"] == (auth / "tokens").read_text()
    (auth / "roles").write_text("admin root\nowner bob\n")
    docker.clear()
    broken = auth_make(repo, docker, "install")
    assert broken.returncode != 0 and "roles line 2: owner bob needs" in broken.stderr
    assert not [c for c in docker.calls if c["argv"][0] == "run"]


# --- the shell checker agrees with the server --------------------------------------------

SAMPLES = {
    "roles": [
        "admin root\nowner bob acme-* tools  # team\n\nmaintainer carol acme-*\n",
        "# nothing but comments\n",
        "boss root\n",
        "admin root acme\n",
        "owner bob\n",
        "owner bob acme/x\n",
        "maintainer\n",
    ],
    "tokens": [
        tokens.HEADER + "ci bob acme-web,acme-cli never 2026-01-01T00:00:00Z sha256:" + "a" * 64,
        "ci bob * 2026-02-01T00:00:00Z 2026-01-01 sha256:" + "0" * 64 + "\n",
        "ci bob * never 2026-01-01T00:00:00Z\n",
        "ci bob * never 2026-01-01T00:00:00Z sha256:" + "0" * 63 + "\n",
        "ci bob * never 2026-01-01T00:00:00Z sha256:" + "0" * 64 + "\n"
        "ci ann * never 2026-01-01T00:00:00Z sha256:" + "1" * 64 + "\n",
        "ci bob * tomorrow 2026-01-01T00:00:00Z sha256:" + "0" * 64 + "\n",
        "c:i bob * never 2026-01-01T00:00:00Z sha256:" + "0" * 64 + "\n",
    ],
}


@pytest.mark.parametrize("kind, index", [(k, i) for k, v in SAMPLES.items()
                                         for i in range(len(v))])
def test_check_teams_sh_accepts_exactly_what_the_server_accepts(tmp_path, kind, index):
    path = tmp_path / kind
    path.write_text(SAMPLES[kind][index])
    parser = roles.read if kind == "roles" else tokens.read
    try:
        parser(path)
        python_ok = True
    except ValueError:
        python_ok = False
    shell = subprocess.run(["sh", str(AUTH_TOOLS / "check-teams.sh"), kind, str(path)],
                           capture_output=True, text=True, check=False)
    assert (shell.returncode == 0) == python_ok, shell.stderr
    if not python_ok:
        assert shell.stderr.startswith(f"error: {path} line ")


@pytest.mark.skipif(os.getuid() != 0, reason="install-file gives the file to root (run as root)")
def test_install_file_installs_atomically_and_refuses_broken_input(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "check-teams").symlink_to(AUTH_TOOLS / "check-teams.sh")
    dest = tmp_path / "vol" / "roles"
    dest.parent.mkdir()
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYPI_GID": "9898"}

    def install(text: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(AUTH_TOOLS / "install-file.sh"), "roles", str(dest)],
                              input=text, capture_output=True, text=True, env=env, check=False)

    done = install("admin root\n")
    assert done.returncode == 0 and "installed the roles file (1 entries)" in done.stdout
    st = dest.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 9898, 0o640)
    refused = install("owner bob\n")
    assert refused.returncode != 0 and dest.read_text() == "admin root\n"
    assert install("").returncode == 0 and dest.read_text() == ""
    assert sorted(p.name for p in dest.parent.iterdir()) == ["roles"]


# --- README's Teams section, as written ---------------------------------------------------

def teams_section_make_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Teams\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("make "):
                lines.append(line)
    return lines


def test_every_make_command_of_the_teams_section_works_as_written(site):
    repo, packages, _, docker, env = site
    lines = teams_section_make_lines()
    assert len(lines) >= 15 and "make -C auth token USER=bob PROJECT=acme-web EXPIRES=90d" \
        " NAME=ci-acme-web" in lines
    (repo / ".venv").symlink_to(ROOT / ".venv")          # make venv: the token commands use it
    add_user(repo / "auth" / "htpasswd", "root", "pw")
    for name in ("acme_web", "acme_old"):
        make_wheel(packages, name, "2.0")
    Ledger(packages).record(Event("add_owner", "cli:setup", project="acme-old", subject="root"))
    run_server(repo, docker, env)
    full_env = {**os.environ, "PATH": f"{ROOT / 'tests' / 'fakes'}:{os.environ['PATH']}",
                "FAKE_DOCKER_LOG": str(docker.log), **env}
    full_env = {k: v for k, v in full_env.items() if not k.startswith(("PYPI_", "MAKEFLAGS"))}
    outputs = {}
    for line in lines:
        result = subprocess.run(["sh", "-c", line], cwd=repo, env=full_env, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 0, (line, result.stdout, result.stderr)
        outputs[line] = result.stdout
    assert roles.read(repo / "auth" / "roles").owners("acme-web") == {"bob"}
    trail = Ledger(packages)
    assert [e.action for e in trail.events("acme-web")] == ["yank", "unyank", "delete"]
    assert trail.status("acme-old") == "archived"
    assert not (packages / "acme_web-2.0-py3-none-any.whl").exists()
    assert "yank" in outputs["make audit"] and outputs["make audit PROJECT=aliceproj"] == ""
