"""Teams over HTTP, with real twine, uv publish, poetry, pip and uv against a running server.

Who may publish what (owners, maintainers, administrators), tokens as the password of
``__token__``, yank and unyank (PEP 592), delete and its tombstone, project status (PEP 792),
and the audit trail of all of it; also with PYPI_AUTHENTICATE=update,download,list.
The form actions they use are README's (Teams).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import PASSWORD, ROOT, basic, clean_env, http, venv_bin
from pkgfactory import make_sdist, make_wheel
from support import form as multipart
from support import wait_for

VENV_BIN = str(Path(sys.executable).parent)
BOB_PW, ROOT_PW = "b0b-Pa55-word", "r00t-Pa55-word"
USERS = {"alice": PASSWORD, "bob": BOB_PW, "root": ROOT_PW}
BOUNDARY = "teams-boundary-14"
CT = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
JSON_ACCEPT = {"Accept": "application/vnd.pypi.simple.v1+json"}


class Team:
    """A running server with alice, bob and the administrator root, and its accounts files."""

    def __init__(self, srv, auth: Path) -> None:
        self.srv = srv
        self.auth = auth
        self.roles = auth / "roles"
        self.tokens = auth / "tokens"

    @property
    def url(self) -> str:
        return self.srv.url

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`python -m pypibox ...` on this server's files, as its operator would run it."""
        env = clean_env(PYTHONPATH=str(ROOT), PYPI_PACKAGES_DIR=str(self.srv.packages),
                        PYPI_HTPASSWD=str(self.srv.htpasswd), PYPI_ROLES=str(self.roles),
                        PYPI_TOKENS=str(self.tokens), USER="ops")
        return subprocess.run([sys.executable, "-m", "pypibox", *args], capture_output=True,
                              text=True, env=env, timeout=60, check=False)

    def token(self, user: str, *args: str) -> str:
        made = self.cli("token", "create", user, *args)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip()

    def form(self, who: str, secret: str | None = None, **fields: str):
        """POST / with a form action, as ``who`` (``__token__`` with ``secret``)."""
        body = multipart({":action": fields.pop("action"), **fields}, boundary=BOUNDARY)
        password = secret if secret is not None else USERS[who]
        return http("POST", self.url + "/", body, {**CT, "Authorization": basic(who, password)})

    def page(self, project: str, auth: tuple[str, str] | None = None) -> dict:
        headers = dict(JSON_ACCEPT)
        if auth:
            headers["Authorization"] = basic(*auth)
        resp = http("GET", f"{self.url}/simple/{project}/", headers=headers)
        assert resp.status == 200, (resp.status, resp.text)
        return json.loads(resp.body)

    def html(self, project: str) -> str:
        resp = http("GET", f"{self.url}/simple/{project}/")
        assert resp.status == 200, (resp.status, resp.text)
        return resp.text

    def audit(self) -> list[dict]:
        listed = self.cli("audit", "--json")
        assert listed.returncode == 0, listed.stderr
        return [json.loads(line) for line in listed.stdout.splitlines()]


@pytest.fixture
def team(server_factory, tmp_path):
    """Start a Team server: ``team(roles_text, **PYPI_settings)``."""
    count = [0]

    def start(roles_text: str = "admin root\n", **env: str) -> Team:
        count[0] += 1
        auth = tmp_path / f"team-auth-{count[0]}"
        auth.mkdir()
        (auth / "roles").write_text(roles_text)
        srv = server_factory(USERS, PYPI_ROLES=str(auth / "roles"),
                             PYPI_TOKENS=str(auth / "tokens"), PYPI_FALLBACK="off", **env)
        return Team(srv, auth)

    return start


def sh(command: str, cwd: Path, home: Path, **extra: str) -> subprocess.CompletedProcess:
    env = clean_env(HOME=str(home), PATH=f"{VENV_BIN}:{os.environ['PATH']}", **extra)
    for tool in ("twine", "uv", "poetry"):
        venv_bin(tool)
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300, check=False)


def said(result: subprocess.CompletedProcess) -> str:
    """What a client printed, with line wrapping undone (rich and uv wrap long reasons)."""
    return " ".join((result.stdout + result.stderr).split())


def twine(team: Team, user: str, password: str, *files: Path) -> subprocess.CompletedProcess:
    names = " ".join(f"'{f}'" for f in files)
    return sh(f"twine upload --non-interactive --disable-progress-bar --repository-url "
              f"{team.url}/ -u '{user}' -p '{password}' {names}", files[0].parent,
              files[0].parent / "home")


def uv_publish(team: Team, user: str, password: str, *files: Path) -> subprocess.CompletedProcess:
    names = " ".join(f"'{f}'" for f in files)
    return sh(f"uv publish --publish-url {team.url}/ --username '{user}' --password "
              f"'{password}' {names}", files[0].parent, files[0].parent / "home")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listed_hashes(team: Team, project: str, auth=None) -> dict[str, str]:
    return {f["filename"]: f["hashes"]["sha256"] for f in team.page(project, auth)["files"]}


def probe(team: Team, who: str, secret: str) -> int:
    """An authenticated no-op (a form action without its fields): 400 if the credentials are
    accepted, 401/403 if not. Stores nothing either way."""
    return team.form(who, secret, action="yank").status


# --- owners, maintainers, administrators ------------------------------------------------

def test_bob_cannot_upload_delete_or_replace_in_alices_project_until_she_adds_him(team,
                                                                                     tmp_path):
    t = team()
    alice_whl = make_wheel(tmp_path / "alice", "aliceproj", "1.0")
    alice_sdist = make_sdist(tmp_path / "alice", "aliceproj", "1.0")
    first = twine(t, "alice", PASSWORD, alice_whl, alice_sdist)
    assert first.returncode == 0, said(first)

    bobs = make_wheel(tmp_path / "bob", "aliceproj", "1.0", payload=b"bob's bytes")
    replaced = twine(t, "bob", BOB_PW, bobs)
    assert replaced.returncode != 0 and "403" in said(replaced)
    assert ("bob may not upload to aliceproj: ask its owners (alice) to add bob as a"
            " maintainer") in said(replaced)
    removed = t.form("bob", action="remove_pkg", name="aliceproj", version="1.0")
    assert removed.status == 403
    assert removed.text.strip() == ("Forbidden: bob may not delete files of aliceproj: only its"
                                    " owners (alice) or an administrator (root) may; ask one"
                                    " of them")
    newer = twine(t, "bob", BOB_PW, make_wheel(tmp_path / "bob", "aliceproj", "9.9"))
    assert newer.returncode != 0 and "ask its owners (alice)" in said(newer)
    assert listed_hashes(t, "aliceproj") == {alice_whl.name: sha256(alice_whl),
                                             alice_sdist.name: sha256(alice_sdist)}

    added = t.form("alice", action="add_maintainer", name="aliceproj", user="bob")
    assert added.status == 200 and "bob is now a maintainer of aliceproj" in added.text
    second = twine(t, "bob", BOB_PW, make_wheel(tmp_path / "bob2", "aliceproj", "2.0"))
    assert second.returncode == 0, said(second)
    assert t.form("bob", action="yank", name="aliceproj", version="2.0").status == 200
    assert t.form("bob", action="remove_pkg", name="aliceproj", version="2.0").status == 403
    assert t.form("bob", action="add_maintainer", name="aliceproj", user="bob").status == 403

    # An administrator may act on any project.
    gone = t.form("root", action="remove_pkg", name="aliceproj", version="2.0")
    assert gone.status == 200, gone.text
    assert "aliceproj-2.0-py3-none-any.whl" not in listed_hashes(t, "aliceproj")
    assert t.form("root", action="set_status", name="aliceproj", status="deprecated").status \
        == 200


def test_uv_publish_is_refused_with_the_reason_and_works_once_maintainer(team, tmp_path):
    t = team()
    assert uv_publish(t, "alice", PASSWORD,
                      make_wheel(tmp_path / "a", "uvteam", "1.0")).returncode == 0
    refused = uv_publish(t, "bob", BOB_PW, make_wheel(tmp_path / "b", "uvteam", "1.1"))
    assert refused.returncode != 0 and "403" in said(refused)
    assert "ask its owners (alice) to add bob as a maintainer" in said(refused)
    assert t.form("alice", action="add_maintainer", name="uvteam", user="bob").status == 200
    done = uv_publish(t, "bob", BOB_PW, make_wheel(tmp_path / "b2", "uvteam", "1.1"))
    assert done.returncode == 0, said(done)
    assert "uvteam-1.1-py3-none-any.whl" in listed_hashes(t, "uvteam")


def test_projects_from_before_are_for_administrators_until_they_assign_an_owner(team,
                                                                                 tmp_path):
    t = team()
    make_wheel(t.srv.packages, "legacy", "1.0")            # put there before owners existed
    refused = twine(t, "alice", PASSWORD, make_wheel(tmp_path / "a", "legacy", "1.1"))
    assert refused.returncode != 0
    assert "legacy has no recorded owner" in said(refused)
    assert "python -m pypibox owner add legacy USER" in said(refused)
    assert t.form("alice", action="remove_pkg", name="legacy", version="1.0").status == 403
    assert twine(t, "root", ROOT_PW, make_wheel(tmp_path / "r", "legacy", "1.2")).returncode == 0
    assert t.form("root", action="add_owner", name="legacy", user="alice").status == 200
    assert twine(t, "alice", PASSWORD, make_wheel(tmp_path / "a", "legacy", "1.1")).returncode \
        == 0


def test_roles_file_patterns_reserve_a_teams_names_and_reload_while_running(team, tmp_path):
    t = team("admin root\nowner bob acme-*\n")
    refused = twine(t, "alice", PASSWORD, make_wheel(tmp_path / "a", "acme-web", "1.0"))
    assert refused.returncode != 0
    assert "the roles file reserves the name for bob" in said(refused)
    assert twine(t, "bob", BOB_PW, make_wheel(tmp_path / "b", "acme-web", "1.0")).returncode == 0
    t.roles.write_text("admin root\nowner bob acme-*\nmaintainer alice acme-*\n")
    time.sleep(1.5)                                          # reloaded within a second
    done = twine(t, "alice", PASSWORD, make_wheel(tmp_path / "a2", "acme-web", "1.1"))
    assert done.returncode == 0, said(done)


# --- tokens -------------------------------------------------------------------------------

def test_a_scoped_token_uploads_to_its_project_only(team, tmp_path):
    t = team()
    secret = t.token("bob", "--project", "tokproj", "--name", "ci-tokproj")
    ok = twine(t, "__token__", secret, make_wheel(tmp_path / "t", "tokproj", "1.0"))
    assert ok.returncode == 0, said(ok)
    assert t.cli("status", "tokproj").stdout.splitlines()[1] == "owners: bob"
    elsewhere = twine(t, "__token__", secret, make_wheel(tmp_path / "t", "otherproj", "1.0"))
    assert elsewhere.returncode != 0 and "403" in said(elsewhere)
    assert ("bob's token ci-tokproj is limited to tokproj; it may not upload to otherproj"
            in said(elsewhere))
    assert t.page("tokproj")["files"]
    assert http("GET", f"{t.url}/simple/otherproj/").status == 404
    # A token never does more than its user: bob's unscoped token is not alice's.
    assert twine(t, "alice", PASSWORD, make_wheel(tmp_path / "a", "alicething", "1.0")) \
        .returncode == 0
    wide = t.token("bob", "--name", "ci-wide")
    over = twine(t, "__token__", wide, make_wheel(tmp_path / "w", "alicething", "2.0"))
    assert over.returncode != 0 and "ask its owners (alice)" in said(over)
    upload = [e for e in t.audit() if e["action"] == "upload" and e["project"] == "tokproj"]
    assert [(e["actor"], e["user"]) for e in upload] == [("token:ci-tokproj", "bob")]


def test_token_user_with_an_account_password_is_refused(team, tmp_path):
    t = team()
    for password in (PASSWORD, BOB_PW):
        refused = twine(t, "__token__", password, make_wheel(tmp_path / "x", "sneaky", "1.0"))
        assert refused.returncode != 0 and "403" in said(refused)
    assert probe(t, "__token__", PASSWORD) == 403
    assert http("GET", f"{t.url}/simple/sneaky/").status == 404


def test_expired_and_revoked_tokens_are_refused_at_once(team, tmp_path):
    t = team()
    kept = t.token("alice", "--name", "kept")
    # Long enough for twine to upload with it on a loaded machine, short enough to wait out.
    short = t.token("alice", "--expires", "15s", "--name", "short")
    assert probe(t, "__token__", short) == 400 and probe(t, "__token__", kept) == 400
    assert twine(t, "__token__", short, make_wheel(tmp_path / "s", "shortproj", "1.0")) \
        .returncode == 0
    (line,) = [x for x in t.tokens.read_text().splitlines() if x.startswith("short ")]
    expires = calendar.timegm(time.strptime(line.split()[3], "%Y-%m-%dT%H:%M:%SZ"))
    wait_for(lambda: probe(t, "__token__", short) == 403, timeout=25)
    assert time.time() - expires < 2.0
    revoked = t.cli("token", "revoke", "kept")
    assert revoked.returncode == 0, revoked.stderr
    # At once, in every worker (each token check looks at the file): no wait at all.
    assert [probe(t, "__token__", kept) for _ in range(6)] == [403] * 6
    late = twine(t, "__token__", kept, make_wheel(tmp_path / "k", "shortproj", "2.0"))
    assert late.returncode != 0 and "403" in said(late)


def test_poetry_publishes_with_a_token_as_in_ci(team, tmp_path):
    t = team()
    secret = t.token("bob", "--project", "poetproj", "--name", "ci-poetry")
    project = tmp_path / "poetproj"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "poetproj"\nversion = "1.0"\ndescription = "x"\n'
        'authors = [{name = "Bob"}]\n\n[build-system]\n'
        'requires = ["poetry-core>=2.0"]\nbuild-backend = "poetry.core.masonry.api"\n')
    make_wheel(project / "dist", "poetproj", "1.0")
    make_sdist(project / "dist", "poetproj", "1.0")
    env = {"POETRY_REPOSITORIES_LOCAL_URL": f"{t.url}/", "POETRY_PYPI_TOKEN_LOCAL": secret}
    done = sh("poetry publish --repository local --no-interaction", project, tmp_path / "home",
              **env)
    assert done.returncode == 0, said(done)
    assert set(listed_hashes(t, "poetproj")) == {"poetproj-1.0-py3-none-any.whl",
                                                 "poetproj-1.0.tar.gz"}
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text((project / "pyproject.toml").read_text()
                                          .replace("poetproj", "notmine"))
    make_wheel(other / "dist", "notmine", "1.0")
    refused = sh("poetry publish --repository local --no-interaction", other,
                 tmp_path / "home", **env)
    assert refused.returncode != 0 and "403" in said(refused)


def test_a_tokens_secret_never_appears_in_a_log_or_a_file_of_the_server(team, tmp_path):
    t = team(PYPI_LOG_LEVEL="debug")
    secret = t.token("alice", "--name", "ci-secret")
    assert twine(t, "__token__", secret, make_wheel(tmp_path / "s", "secretproj", "1.0")) \
        .returncode == 0
    twine(t, "__token__", secret + "x", make_wheel(tmp_path / "s", "secretproj", "2.0"))
    t.form("__token__", secret, action="yank", name="secretproj", version="1.0")
    assert secret not in t.srv.logtext() and secret[8:30] not in t.srv.logtext()
    for path in list(t.srv.packages.rglob("*")) + list(t.auth.rglob("*")):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert any(e["actor"] == "token:ci-secret" for e in t.audit())


# --- yank, delete, status -----------------------------------------------------------------

def pip_download(team: Team, spec: str, dest: Path, url: str | None = None):
    return subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                           "--index-url", url or f"{team.url}/simple/", "-d", str(dest), spec],
                          capture_output=True, text=True, env=clean_env(HOME=str(dest.parent)),
                          timeout=300, check=False)


def uv_resolve(team: Team, spec: str, home: Path, url: str | None = None) -> str:
    result = subprocess.run([venv_bin("uv"), "pip", "compile", "--no-cache", "--quiet",
                             "--index-url", url or f"{team.url}/simple/", "-"], input=spec + "\n",
                            capture_output=True, text=True, env=clean_env(HOME=str(home)),
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_yanked_file_is_skipped_by_pip_and_uv_unless_pinned(team, tmp_path):
    t = team()
    files = [make_wheel(tmp_path / "y", "yankproj", v) for v in ("1.0", "2.0")]
    assert twine(t, "alice", PASSWORD, *files).returncode == 0
    yanked = t.form("alice", action="yank", name="yankproj", version="2.0", reason="broken build")
    assert yanked.status == 200 and "Yanked yankproj-2.0-py3-none-any.whl" in yanked.text
    entry = {f["filename"]: f for f in t.page("yankproj")["files"]}
    assert entry["yankproj-2.0-py3-none-any.whl"]["yanked"] == "broken build"
    assert entry["yankproj-1.0-py3-none-any.whl"]["yanked"] is False
    assert 'data-yanked="broken build"' in t.html("yankproj")

    loose = pip_download(t, "yankproj", tmp_path / "pip1")
    assert loose.returncode == 0, loose.stderr
    assert [p.name for p in (tmp_path / "pip1").iterdir()] == ["yankproj-1.0-py3-none-any.whl"]
    pinned = pip_download(t, "yankproj==2.0", tmp_path / "pip2")
    assert pinned.returncode == 0, pinned.stderr
    assert [p.name for p in (tmp_path / "pip2").iterdir()] == ["yankproj-2.0-py3-none-any.whl"]
    assert "broken build" in pinned.stdout + pinned.stderr            # pip warns with the reason
    assert "yankproj==1.0" in uv_resolve(t, "yankproj", tmp_path)
    assert "yankproj==2.0" in uv_resolve(t, "yankproj==2.0", tmp_path)

    assert t.form("alice", action="unyank", name="yankproj", version="2.0").status == 200
    assert t.page("yankproj")["files"][-1]["yanked"] is False
    assert "yankproj==2.0" in uv_resolve(t, "yankproj", tmp_path)
    # The command line's yank reaches the running server within 2 s.
    assert t.cli("yank", "yankproj", "2.0").returncode == 0
    assert wait_for(lambda: {f["filename"]: f for f in t.page("yankproj")["files"]}
                    ["yankproj-2.0-py3-none-any.whl"]["yanked"] is True) < 2.0
    assert 'data-yanked=""' in t.html("yankproj")


def test_a_deleted_name_is_refused_on_re_upload_even_to_its_owner(team, tmp_path):
    t = team()
    wheel = make_wheel(tmp_path / "d", "delproj", "1.0")
    assert twine(t, "alice", PASSWORD, wheel).returncode == 0
    gone = t.form("alice", action="remove_pkg", name="delproj", version="1.0")
    assert gone.status == 200 and "can never be uploaded again" in gone.text
    assert not (t.srv.packages / wheel.name).exists()
    again = twine(t, "alice", PASSWORD, wheel)
    assert again.returncode != 0 and "400" in said(again)
    assert (f"{wheel.name} was deleted on" in said(again)
            and "a deleted file's name is never used again, even by its owner" in said(again))
    assert uv_publish(t, "alice", PASSWORD, wheel).returncode != 0
    skipped = sh(f"twine upload --skip-existing --non-interactive --repository-url {t.url}/ "
                 f"-u alice -p '{PASSWORD}' '{wheel}'", wheel.parent, tmp_path / "home")
    assert skipped.returncode != 0                   # not mistaken for "already exists"
    assert twine(t, "alice", PASSWORD, make_wheel(tmp_path / "d2", "delproj", "1.0.post1")) \
        .returncode == 0
    # From the command line too, and the running index drops the file within 2 s.
    assert t.cli("delete", "delproj", "1.0.post1").returncode == 0
    assert wait_for(lambda: http("GET", f"{t.url}/simple/delproj/").status == 404
                    or not t.page("delproj")["files"]) < 2.0


def test_with_overwrite_on_a_deleted_name_may_come_back(team, tmp_path):
    t = team(PYPI_OVERWRITE="on")
    wheel = make_wheel(tmp_path / "o", "overproj", "1.0")
    assert twine(t, "alice", PASSWORD, wheel).returncode == 0
    assert t.form("alice", action="remove_pkg", name="overproj", version="1.0").status == 200
    back = twine(t, "alice", PASSWORD, wheel)
    assert back.returncode == 0, said(back)
    refused = twine(t, "bob", BOB_PW, make_wheel(tmp_path / "b", "overproj", "1.0", payload=b"b"))
    assert refused.returncode != 0 and "ask its owners (alice)" in said(refused)


def test_an_archived_project_refuses_uploads_and_shows_its_status(team, tmp_path):
    t = team()
    assert twine(t, "alice", PASSWORD, make_wheel(tmp_path / "a", "archproj", "1.0")) \
        .returncode == 0
    assert t.form("bob", action="set_status", name="archproj", status="archived").status == 403
    done = t.form("alice", action="set_status", name="archproj", status="archived",
                  reason="moved to newproj")
    assert done.status == 200
    refused = twine(t, "alice", PASSWORD, make_wheel(tmp_path / "a", "archproj", "2.0"))
    assert refused.returncode != 0 and "403" in said(refused)
    assert ("archproj is archived: it takes no new uploads; an owner can set it active again"
            " (reason: moved to newproj)") in said(refused)
    page = t.page("archproj")
    assert page["project-status"] == {"status": "archived", "reason": "moved to newproj"}
    assert len(page["files"]) == 1
    html = t.html("archproj")
    assert '<meta name="pypi:project-status" content="archived">' in html
    assert '<meta name="pypi:project-status-reason" content="moved to newproj">' in html
    assert pip_download(t, "archproj", tmp_path / "pip").returncode == 0   # still installable

    assert t.form("root", action="set_status", name="archproj", status="quarantined").status \
        == 200
    page = t.page("archproj")
    assert page["project-status"]["status"] == "quarantined" and page["files"] == []
    blocked = http("GET", f"{t.url}/packages/archproj-1.0-py3-none-any.whl")
    assert blocked.status >= 400 and "quarantined" in blocked.text
    assert pip_download(t, "archproj", tmp_path / "pip-q").returncode != 0

    assert t.form("alice", action="set_status", name="archproj", status="active").status == 200
    assert "project-status" not in t.page("archproj") or \
        t.page("archproj")["project-status"]["status"] == "active"
    assert twine(t, "alice", PASSWORD, make_wheel(tmp_path / "a", "archproj", "2.0")) \
        .returncode == 0


# --- the audit trail ------------------------------------------------------------------------

def test_the_audit_trail_lists_every_step_in_order_and_survives_a_backup(team, tmp_path):
    t = team()
    first = make_wheel(tmp_path / "a", "trailproj", "1.0")
    second = make_wheel(tmp_path / "b", "trailproj", "2.0")
    assert twine(t, "alice", PASSWORD, first).returncode == 0
    assert t.form("alice", action="add_maintainer", name="trailproj", user="bob").status == 200
    assert uv_publish(t, "bob", BOB_PW, second).returncode == 0
    assert t.form("bob", action="yank", name="trailproj", version="2.0",
                  reason="bad").status == 200
    assert t.form("alice", action="unyank", name="trailproj", version="2.0").status == 200
    assert t.form("alice", action="remove_pkg", name="trailproj", version="1.0").status == 200
    assert t.form("alice", action="set_status", name="trailproj", status="deprecated").status \
        == 200
    t.token("alice", "--name", "ci-trail")
    assert t.cli("token", "revoke", "ci-trail").returncode == 0
    assert twine(t, "bob", BOB_PW, make_wheel(tmp_path / "c", "trailproj", "3.0"),
                 ).returncode == 0

    steps = [(e["actor"], e["action"], e.get("file", e.get("subject", ""))) for e in t.audit()]
    assert steps == [
        ("alice", "add_owner", "alice"),
        ("alice", "upload", first.name),
        ("alice", "add_maintainer", "bob"),
        ("bob", "upload", second.name),
        ("bob", "yank", second.name),
        ("alice", "unyank", second.name),
        ("alice", "delete", first.name),
        ("alice", "set_status", ""),
        ("cli:ops", "token_create", "ci-trail"),
        ("cli:ops", "token_revoke", "ci-trail"),
        ("bob", "upload", "trailproj-3.0-py3-none-any.whl"),
    ]
    trail = t.audit()
    uploads = {e["file"]: e["sha256"] for e in trail if e["action"] in ("upload", "delete")}
    assert uploads[first.name] == sha256(first) and uploads[second.name] == sha256(second)
    assert all(e["client"] == "127.0.0.1" for e in trail if not e["actor"].startswith("cli:"))
    assert [e["reason"] for e in trail if e["action"] == "yank"] == ["bad"]
    readable = t.cli("audit", "trailproj").stdout.splitlines()
    assert len(readable) == 9 and all("trailproj" in line for line in readable)

    # What make backup and make restore do to the volume: a tar of it, unpacked elsewhere.
    archive = tmp_path / "backup.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(t.srv.packages, arcname=".")
    restored = tmp_path / "restored"
    restored.mkdir()
    with tarfile.open(archive) as tf:
        tf.extractall(restored, filter="data")
    again = t.cli("audit", "--json", "--packages", str(restored))
    assert [json.loads(line) for line in again.stdout.splitlines()] == trail


# --- all of it behind PYPI_AUTHENTICATE=update,download,list ---------------------------------

def test_with_everything_protected_a_token_also_lists_and_downloads(team, tmp_path):
    t = team(PYPI_AUTHENTICATE="update,download,list")
    assert twine(t, "alice", PASSWORD, make_wheel(tmp_path / "a", "closedproj", "1.0"),
                 make_wheel(tmp_path / "a", "closedproj", "2.0")).returncode == 0
    secret = t.token("bob", "--project", "bobclosed", "--name", "ci-closed")
    host = t.url.removeprefix("http://")
    url = f"http://__token__:{secret}@{host}/simple/"
    assert http("GET", f"{t.url}/simple/closedproj/").status == 401
    assert t.page("closedproj", ("__token__", secret))["files"]       # reads the whole index
    got = pip_download(t, "closedproj", tmp_path / "dl", url=url)
    assert got.returncode == 0, got.stderr
    assert [p.name for p in (tmp_path / "dl").iterdir()] == ["closedproj-2.0-py3-none-any.whl"]
    assert "closedproj==2.0" in uv_resolve(t, "closedproj", tmp_path, url=url)
    assert twine(t, "__token__", secret, make_wheel(tmp_path / "b", "bobclosed", "1.0")) \
        .returncode == 0
    refused = twine(t, "__token__", secret, make_wheel(tmp_path / "b", "closedproj", "3.0"))
    assert refused.returncode != 0 and "limited to bobclosed" in said(refused)

    assert t.form("alice", action="yank", name="closedproj", version="2.0").status == 200
    got = pip_download(t, "closedproj", tmp_path / "dl2", url=url)
    assert [p.name for p in (tmp_path / "dl2").iterdir()] == ["closedproj-1.0-py3-none-any.whl"]

    bad = http("GET", f"{t.url}/simple/closedproj/",
               headers={"Authorization": basic("__token__", PASSWORD)})
    assert bad.status == 403
    assert t.cli("token", "revoke", "ci-closed").returncode == 0
    assert [http("GET", f"{t.url}/simple/closedproj/", headers={
        "Authorization": basic("__token__", secret)}).status for _ in range(6)] == [403] * 6
    assert pip_download(t, "closedproj", tmp_path / "dl3", url=url).returncode != 0
    assert secret not in t.srv.logtext()
