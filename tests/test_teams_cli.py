"""`python -m pypibox` team commands, run as a person runs them (subprocess, real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, add_user, clean_env, free_port
from pkgfactory import make_sdist, make_wheel

from pypibox import tokens
from pypibox.ledger import Ledger
from pypibox.rights import Denied, Identity
from pypibox.teams import Teams


@pytest.fixture
def site(tmp_path):
    """A packages directory with a project from before (no owner) and an accounts folder."""
    packages = tmp_path / "packages"
    auth = tmp_path / "auth"
    auth.mkdir()
    make_wheel(packages, "oldproj", "1.0")
    make_sdist(packages, "oldproj", "1.0")
    make_wheel(packages, "oldproj", "2.0")
    add_user(auth / "htpasswd", "alice", "pw")
    add_user(auth / "htpasswd", "bob", "pw")
    (auth / "roles").write_text("admin root\n")
    env = {"PYPI_PACKAGES_DIR": str(packages), "PYPI_HTPASSWD": str(auth / "htpasswd"),
           "PYPI_ROLES": str(auth / "roles"), "PYPI_TOKENS": str(auth / "tokens"),
           "USER": "tester"}
    return packages, auth, env


def pypibox(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pypibox", *args], capture_output=True,
                          text=True, env=clean_env(PYTHONPATH=str(ROOT), **env), timeout=60,
                          check=False)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_help_lists_the_team_commands():
    out = pypibox({}, "--help").stdout
    for command in ("token", "yank", "unyank", "delete", "status", "owner", "maintainer",
                    "audit", "roles"):
        assert command in out
    assert "PYPI_ROLES" in out and "PYPI_TOKENS" in out


def test_token_create_prints_it_once_and_records_who_made_it(site):
    packages, auth, env = site
    made = pypibox(env, "token", "create", "bob", "--project", "Acme_Web", "--project",
                   "acme-cli", "--expires", "30d", "--name", "ci-acme", "--as", "ops")
    secret = ok(made).strip()
    assert tokens.SECRET_RE.match(secret) and made.stdout == secret + "\n"
    assert "Created token ci-acme for bob" in made.stderr and "acme-cli,acme-web" in made.stderr
    assert "only time it is shown" in made.stderr and "__token__" in made.stderr
    assert secret not in (auth / "tokens").read_text()
    assert tokens.Tokens(auth / "tokens").check(secret) == Identity(
        "bob", "ci-acme", frozenset({"acme-web", "acme-cli"}))
    event, = Ledger(packages).events()
    assert (event.action, event.actor, event.subject, event.token_user, event.scope) == (
        "token_create", "cli:ops", "ci-acme", "bob", "acme-cli,acme-web")
    assert secret not in Ledger(packages).path.read_text()

    listed = ok(pypibox(env, "token", "list"))
    header, row = listed.splitlines()
    assert header.split() == ["NAME", "USER", "PROJECTS", "EXPIRES", "CREATED", "LAST", "USED"]
    assert row.split()[:3] == ["ci-acme", "bob", "acme-cli,acme-web"] and row.endswith("never")
    assert secret not in listed and "sha256" not in listed

    use = tokens.TokenUse(packages / ".pypibox")
    tokens.Tokens(auth / "tokens", usage=use).check(secret)
    assert ok(pypibox(env, "token", "list")).splitlines()[1].endswith("Z")

    revoked = pypibox(env, "token", "revoke", "ci-acme")
    assert ok(revoked) == "" and "refuses it at once" in revoked.stderr
    assert tokens.Tokens(auth / "tokens").check(secret) is None
    assert [e.action for e in Ledger(packages).events()] == ["token_create", "token_revoke"]
    assert "no tokens" in pypibox(env, "token", "list").stderr


def test_token_create_refuses_unknown_users_bad_expiry_and_can_skip_the_trail(site):
    packages, auth, env = site
    nobody = pypibox(env, "token", "create", "carol")
    assert nobody.returncode == 1 and "there is no account named carol" in nobody.stderr
    bad = pypibox(env, "token", "create", "bob", "--expires", "soon")
    assert bad.returncode == 2 and "--expires 'soon'" in bad.stderr
    assert not (auth / "tokens").exists()
    quiet = pypibox(env, "token", "create", "bob", "--no-trail", "--expires", "never")
    ok(quiet)
    assert "records the token in its audit trail when it reads" in quiet.stderr
    assert not Ledger(packages).path.exists()
    line = [x for x in (auth / "tokens").read_text().splitlines() if not x.startswith("#")]
    assert line[0].split()[:4][1:] == ["bob", "*", "never"]
    missing = pypibox(env, "token", "revoke", "nope")
    assert missing.returncode == 1 and "no token named nope" in missing.stderr


def test_yank_unyank_delete_status_and_owners_from_the_command_line(site):
    packages, auth, env = site
    out = ok(pypibox(env, "yank", "oldproj", "1.0", "--reason", "broken build", "--as", "ops"))
    assert out == "Yanked oldproj-1.0-py3-none-any.whl, oldproj-1.0.tar.gz\n"
    shown = ok(pypibox(env, "status", "oldproj"))
    assert shown.splitlines()[:3] == ["oldproj: active",
                                      "owners: none recorded (administrators only)",
                                      "maintainers: none"]
    assert "  oldproj-1.0.tar.gz  yanked: broken build" in shown.splitlines()
    assert ok(pypibox(env, "unyank", "oldproj", "oldproj-1.0.tar.gz")) \
        == "Unyanked oldproj-1.0.tar.gz\n"
    assert ok(pypibox(env, "status", "oldproj", "archived", "--reason", "use newproj")) \
        == "oldproj is archived\n"
    assert ok(pypibox(env, "owner", "add", "oldproj", "alice")) == \
        "alice is now an owner of oldproj\n"
    assert ok(pypibox(env, "maintainer", "add", "oldproj", "bob")) == \
        "bob is now a maintainer of oldproj\n"
    nobody = pypibox(env, "owner", "add", "oldproj", "nobody")
    assert nobody.returncode == 1 and "no account named nobody" in nobody.stderr
    deleted = ok(pypibox(env, "delete", "oldproj", "2.0"))
    assert deleted == ("Deleted oldproj-2.0-py3-none-any.whl; these file names can never be"
                       " uploaded again\n")
    assert not (packages / "oldproj-2.0-py3-none-any.whl").exists()
    shown = ok(pypibox(env, "status", "oldproj")).splitlines()
    assert shown[:3] == ["oldproj: archived (use newproj)", "owners: alice",
                         "maintainers: bob"]
    assert ok(pypibox(env, "maintainer", "remove", "oldproj", "bob")) == \
        "bob is no longer a maintainer of oldproj\n"
    missing = pypibox(env, "yank", "oldproj", "9.9")
    assert missing.returncode == 1
    assert missing.stderr == ("pypibox: error: Not found: oldproj has no version or file 9.9"
                              " (versions: 1.0)\n")

    # What the server's request path then sees, through the same library.
    tm = Teams(packages, auth / "roles", auth / "tokens")
    tm.rights.set_status(Identity("alice"), "oldproj", "active", "")
    with pytest.raises(Denied) as info:
        tm.rights.upload(Identity("alice"), "oldproj", "oldproj-2.0-py3-none-any.whl", "",
                         "", lambda: None)
    assert "was deleted on" in info.value.reason and "by cli:tester" in info.value.reason
    with pytest.raises(Denied):
        tm.rights.check(Identity("bob"), "upload", "oldproj")
    tm.rights.check(Identity("alice"), "upload", "oldproj")


def test_audit_prints_every_change_in_order_readably_and_as_json(site):
    packages, auth, env = site
    ok(pypibox(env, "yank", "oldproj", "oldproj-1.0.tar.gz", "--reason", 'say "no"'))
    ok(pypibox(env, "owner", "add", "oldproj", "alice", "--as", "ops"))
    ok(pypibox(env, "delete", "oldproj", "2.0"))
    Teams(packages, auth / "roles", auth / "tokens").rights.upload(
        Identity("alice"), "newproj", "newproj-1.0.tar.gz", "c" * 64, "192.0.2.7", lambda: None)
    lines = ok(pypibox(env, "audit")).splitlines()
    assert [line.split("  ")[1:3] for line in lines] == [
        ["cli:tester", "yank"], ["cli:ops", "add_owner"], ["cli:tester", "delete"],
        ["alice", "add_owner"], ["alice", "upload"]]
    assert lines[0].endswith('oldproj-1.0.tar.gz  sha256 '
                             + Ledger(packages).events().__next__().sha256
                             + '  reason: "say \\"no\\""')
    assert lines[1].endswith("add_owner  oldproj  user alice")
    assert lines[4].endswith("newproj  newproj-1.0.tar.gz  sha256 " + "c" * 64
                             + "  from 192.0.2.7")
    only = ok(pypibox(env, "audit", "NewProj")).splitlines()
    assert len(only) == 2 and all("newproj" in line for line in only)
    raw = ok(pypibox(env, "audit", "--json")).splitlines()
    assert [json.loads(line)["action"] for line in raw] == [
        "yank", "add_owner", "delete", "add_owner", "upload"]
    empty = pypibox(env, "audit", "nothing-here")
    assert empty.returncode == 0 and empty.stdout == "" and "no events for nothing-here" in \
        empty.stderr


def test_changes_need_the_packages_directory(site, tmp_path):
    _, _, env = site
    gone = pypibox({**env, "PYPI_PACKAGES_DIR": str(tmp_path / "nowhere")}, "yank", "p", "1.0")
    assert gone.returncode == 1 and "packages directory" in gone.stderr \
        and "does not exist" in gone.stderr


def test_roles_command_checks_the_file(site):
    _, auth, env = site
    (auth / "roles").write_text("admin root\nowner bob acme-*  # the acme team\n")
    assert ok(pypibox(env, "roles")) == "admin root\nowner bob acme-*\n"
    (auth / "roles").write_text("admin root\nowner bob\n")
    broken = pypibox(env, "roles")
    assert broken.returncode == 1
    assert f"{auth / 'roles'}: line 2: owner bob needs one or more project name patterns" \
        in broken.stderr


@pytest.mark.parametrize("name, content, words", [
    ("roles", "superuser alice\n", "line 1: 'superuser' is not a role"),
    ("tokens", "ci bob * never\n", "line 1: expected 6 fields"),
])
def test_the_server_refuses_to_start_with_a_broken_roles_or_tokens_file(site, name, content,
                                                                         words):
    _, auth, env = site
    (auth / name).write_text(content)
    result = subprocess.run([sys.executable, "-m", "pypibox"], capture_output=True, text=True,
                            check=False,
                            env=clean_env(PYTHONPATH=str(ROOT), PYPI_HOST="127.0.0.1",
                                          PYPI_PORT=str(free_port()), **env), timeout=30)
    assert result.returncode == 4
    assert f"accounts: {auth / name}: {words}" in result.stderr
    assert f"PYPI_{name.upper()} elsewhere" in result.stderr and "Traceback" not in result.stderr


def test_an_empty_roles_setting_is_a_configuration_error(site):
    _, _, env = site
    result = pypibox({**env, "PYPI_ROLES": " "}, "roles")
    assert result.returncode == 2 and "PYPI_ROLES='' is empty" in result.stderr


def test_a_missing_roles_or_tokens_file_is_no_roles_and_no_tokens(site):
    _, auth, env = site
    (auth / "roles").unlink()
    assert "no rules (no administrators" in pypibox(env, "roles").stderr
    assert "no tokens" in pypibox(env, "token", "list").stderr
    assert Path(env["PYPI_TOKENS"]).exists() is False
