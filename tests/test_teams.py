"""Teams in-process: roles file, tokens, the audit trail and the rights, on real files.

Concurrency is tested with real processes writing one packages directory at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, clean_env
from pkgfactory import make_sdist, make_wheel
from support import wait_for

from pypibox import ledger as ledger_mod
from pypibox import roles, tokens
from pypibox.index import PackageIndex
from pypibox.ledger import Event, Ledger
from pypibox.rights import Denied, Identity, identify
from pypibox.teams import IndexCatalog, Teams

SHA = "ab" * 32
ALICE, BOB, CAROL, ROOT_ADMIN = (Identity("alice"), Identity("bob"), Identity("carol"),
                                 Identity("root"))


@pytest.fixture
def dirs(tmp_path):
    packages = tmp_path / "packages"
    packages.mkdir()
    auth = tmp_path / "auth"
    auth.mkdir()
    return packages, auth


def teams_for(dirs, roles_text: str | None = "admin root\n", **kw) -> Teams:
    packages, auth = dirs
    if roles_text is not None:
        (auth / "roles").write_text(roles_text)
    kw.setdefault("recheck", 0.2)
    return Teams(packages, auth / "roles", auth / "tokens", **kw)


def publish(tm: Teams, who: Identity, name: str, version: str, sdist: bool = False) -> Path:
    """Upload a real wheel (or sdist) through Rights.upload, as the write path will."""
    build = tm.packages_dir.parent / "build" / f"{who.user}-{name}-{version}"
    maker = make_sdist if sdist else make_wheel
    made = maker(build, name, version)
    dest = tm.packages_dir / made.name

    def place() -> Path:
        os.link(made, dest)
        return dest

    return tm.rights.upload(who, name, made.name, SHA, "127.0.0.1", place)


def refused(call, *args, **kw) -> Denied:
    with pytest.raises(Denied) as info:
        call(*args, **kw)
    return info.value


# --- roles file ---------------------------------------------------------------------------

def test_roles_file_names_admins_and_patterns_compared_normalised():
    rules = roles.parse(textwrap.dedent("""\
        # the team
        admin root            # may do anything
        owner bob Acme_* tools
        maintainer carol acme-*
        maintainer bob acme-web
        """))
    assert rules.admins == {"root"}
    assert rules.owners("acme-web") == {"bob"}          # owner beats maintainer
    assert rules.maintainers("acme-web") == {"carol"}
    assert rules.owners("tools") == {"bob"} and rules.granted("toolsx") == {}
    assert rules.reserved("acme-cli") and not rules.reserved("acme")
    assert rules.rules[1].render() == "owner bob acme-* tools"


@pytest.mark.parametrize("line, words", [
    ("boss alice", "line 2: 'boss' is not a role"),
    ("admin alice acme-*", "admin takes a user name only"),
    ("owner bob", "needs one or more project name patterns"),
    ("owner bob acme/x", "is not a project name pattern"),
    ("maintainer", "give a user name after 'maintainer'"),
])
def test_roles_file_errors_name_the_line(line, words):
    with pytest.raises(roles.RolesError, match="line 2") as info:
        roles.parse(f"admin root\n{line}\n", "auth/roles")
    assert words in str(info.value) and str(info.value).startswith("auth/roles: ")


def test_roles_reload_and_a_broken_file_keeps_the_last_good_rules(tmp_path, caplog):
    path = tmp_path / "roles"
    live = roles.Roles(path, recheck=0.1)
    assert live.rules.admins == frozenset()               # missing: no administrators
    path.write_text("admin alice\n")
    wait_for(lambda: live.rules.admins == {"alice"})
    caplog.set_level(logging.ERROR)
    path.write_text("admin alice\nowner bob\n")            # broken
    time.sleep(0.3)
    assert live.rules.admins == {"alice"}
    assert "keeping the last good roles" in caplog.text and "line 2" in caplog.text
    path.write_text("admin carol\n")
    wait_for(lambda: live.rules.admins == {"carol"})
    path.unlink()                                          # removed: no administrators
    wait_for(lambda: live.rules.admins == frozenset())


# --- tokens -------------------------------------------------------------------------------

def test_a_token_is_shown_once_and_only_its_hash_is_kept(tmp_path):
    path = tmp_path / "tokens"
    token, secret = tokens.create(path, "bob", ["Acme_Web"], expires=None, name="ci-web")
    assert tokens.SECRET_RE.match(secret) and secret.startswith("pypibox-")
    text = path.read_text()
    assert secret not in text and secret[8:] not in text
    assert token.hash in text and token.hash == tokens.digest(secret)
    line = [x for x in text.splitlines() if not x.startswith("#")]
    assert line == [f"ci-web bob acme-web never {token.created} {token.hash}"]
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    live = tokens.Tokens(path)
    assert live.check(secret) == Identity("bob", "ci-web", frozenset({"acme-web"}))
    assert live.check(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert live.check("pypibox-" + "x" * 43) is None and live.check("") is None
    assert live.check(None) is None  # type: ignore[arg-type]


def test_token_names_are_unique_and_users_real(tmp_path):
    path = tmp_path / "tokens"
    tokens.create(path, "bob", name="ci")
    with pytest.raises(tokens.TokensError, match="named ci already"):
        tokens.create(path, "bob", name="ci")
    with pytest.raises(tokens.TokensError, match="not a user name"):
        tokens.create(path, "__token__")
    with pytest.raises(tokens.TokensError, match="no token named nope"):
        tokens.revoke(path, "nope")


def test_expired_and_revoked_tokens_are_refused_within_two_seconds(tmp_path):
    path = tmp_path / "tokens"
    live = tokens.Tokens(path, recheck=0.5)
    until = int(time.time()) + 3                       # the file keeps whole seconds
    _, short = tokens.create(path, "bob", expires=until, name="short")
    _, revoked = tokens.create(path, "bob", name="revoked")
    wait_for(lambda: live.check(short) is not None and live.check(revoked) is not None)
    wait_for(lambda: live.check(short) is None, timeout=5.0)
    assert time.time() - until < 2.0
    tokens.revoke(path, "revoked")
    assert wait_for(lambda: live.check(revoked) is None) < 2.0


def test_tokens_of_a_removed_account_stop_working(tmp_path):
    path = tmp_path / "tokens"
    users = {"bob"}
    live = tokens.Tokens(path, user_exists=users.__contains__)
    _, secret = tokens.create(path, "bob")
    live.refresh(force=True)
    assert live.check(secret) is not None
    users.clear()
    assert live.check(secret) is None


def test_a_broken_tokens_file_keeps_the_last_good_tokens(tmp_path, caplog):
    path = tmp_path / "tokens"
    _, secret = tokens.create(path, "bob")
    live = tokens.Tokens(path, recheck=0.1)
    assert live.check(secret) is not None
    caplog.set_level(logging.ERROR)
    good = path.read_text()
    path.write_text(good + "half-written bob *\n")
    time.sleep(0.3)
    assert live.check(secret) is not None
    assert "expected 6 fields" in caplog.text and secret not in caplog.text


@pytest.mark.parametrize("text, words", [
    ("a b * never 2025-01-01T00:00:00Z sha256:" + "0" * 64 + "\n" * 2
     + "a c * never 2025-01-01T00:00:00Z sha256:" + "1" * 64, "a second token named a"),
    ("a b * soon 2025-01-01T00:00:00Z sha256:" + "0" * 64, "'soon' is not a time"),
    ("a b * never 2025-01-01T00:00:00Z md5:" + "0" * 32, "the hash is not sha256"),
    ("a b x/y never 2025-01-01T00:00:00Z sha256:" + "0" * 64, "is not * or a list"),
])
def test_tokens_file_errors(text, words):
    with pytest.raises(tokens.TokensError, match="line"):
        tokens.parse(text)
    with pytest.raises(tokens.TokensError) as info:
        tokens.parse(text)
    assert words in str(info.value)


def test_expiry_forms():
    now = 2_000_000_000.0  # 2033
    assert tokens.parse_expiry("90d", now) == now + 90 * 86400
    assert tokens.parse_expiry("12h", now) == now + 12 * 3600
    assert tokens.parse_expiry("2w", now) == now + 14 * 86400
    assert tokens.parse_expiry("never", now) is None
    assert tokens.parse_expiry("2999-01-01") == tokens.parse_time("2999-01-01")
    for bad in ("soon", "-1d", "2000-01-01"):
        with pytest.raises(ValueError):
            tokens.parse_expiry(bad, now)


def test_last_use_goes_to_the_packages_volume_throttled(tmp_path):
    auth = tmp_path / "auth"
    auth.mkdir()
    state = tmp_path / "packages" / ".pypibox"
    tok, secret = tokens.create(auth / "tokens", "bob", name="ci")
    before = sorted(os.listdir(auth))
    auth.chmod(0o555)  # the accounts volume is read-only to the server
    try:
        before_lines = (auth / "tokens").read_text().count("\n")
        use = tokens.TokenUse(state, interval=60)
        live = tokens.Tokens(auth / "tokens", usage=use)
        assert use.last_used(tok) is None
        assert live.check(secret) is not None
        first = use.last_used(tok)
        assert first is not None and first.endswith("Z")
        mtime = use.path.stat().st_mtime_ns
        for _ in range(50):
            live.check(secret)
        assert use.path.stat().st_mtime_ns == mtime      # at most once a minute per process
        other = tokens.TokenUse(state, interval=60)      # another worker merges, keeps it
        other._merge({"someone 2020-01-01T00:00:00Z": "2020-01-02T00:00:00Z"})
        assert use.last_used(tok) == first
        assert sorted(os.listdir(auth)) == before          # nothing written beside the tokens
        assert (auth / "tokens").read_text().count("\n") == before_lines
    finally:
        auth.chmod(0o755)


# --- the audit trail ----------------------------------------------------------------------

def test_trail_records_and_replays_every_kind_of_state(dirs):
    packages, _ = dirs
    trail = Ledger(packages)
    assert trail.owners("p") == frozenset() and trail.status("p") is None
    start = trail.stamp("p")
    trail.record(Event("add_owner", "alice", user="alice", project="p", subject="alice",
                       reason="first upload"),
                 Event("upload", "alice", user="alice", project="p", file="p-1.0.tar.gz",
                       sha256=SHA, client="10.0.0.1"))
    after_upload = trail.stamp("p")
    assert after_upload != start
    trail.record(Event("add_maintainer", "alice", project="p", subject="bob"))
    trail.record(Event("yank", "token:ci", user="bob", project="p", file="p-1.0.tar.gz",
                       reason="broken"))
    trail.record(Event("set_status", "alice", project="p", status="deprecated", reason="use q"))
    trail.record(Event("delete", "alice", project="p", file="sub/p-0.9.tar.gz"))
    assert trail.stamp("p") != after_upload
    assert trail.stamp("other") == (0, 0)
    for view in (trail, Ledger(packages)):          # this process, and a fresh replay
        assert view.owners("p") == {"alice"} and view.maintainers("p") == {"bob"}
        assert view.yanked("p-1.0.tar.gz") == "broken" and view.yanked("p-2.0.tar.gz") is None
        assert view.tombstoned("p-0.9.tar.gz") and not view.tombstoned("p-1.0.tar.gz")
        assert view.status("p") == "deprecated" and view.status_reason("p") == "use q"
    trail.record(Event("unyank", "alice", project="p", file="p-1.0.tar.gz"),
                 Event("set_status", "alice", project="p", status="active"),
                 Event("remove_maintainer", "alice", project="p", subject="bob"))
    again = Ledger(packages)
    assert again.yanked("p-1.0.tar.gz") is None and again.status("p") is None
    assert again.maintainers("p") == frozenset()
    lines = (packages / ".pypibox" / "audit.jsonl").read_text().splitlines()
    first = json.loads(lines[1])
    assert list(first)[:4] == ["time", "actor", "user", "action"]
    assert first["sha256"] == SHA and first["client"] == "10.0.0.1"
    assert [e.action for e in again.events("p")][:3] == ["add_owner", "upload", "add_maintainer"]


def test_an_empty_reason_is_a_yank_too(dirs):
    trail = Ledger(dirs[0])
    trail.record(Event("yank", "alice", project="p", file="p-1.0.tar.gz"))
    assert trail.yanked("p-1.0.tar.gz") == ""


@pytest.mark.parametrize("event", [
    Event("upload", "alice", reason="two\nlines"),
    Event("upload", "alice", reason="x" * 2000),
    Event("nonsense", "alice"),
    Event("upload", ""),
    Event("set_status", "alice", project="p", status="gone"),
])
def test_bad_events_are_never_written(dirs, event):
    trail = Ledger(dirs[0])
    with pytest.raises(ValueError):
        trail.record(event)
    assert not trail.path.exists() or trail.path.read_bytes() == b""


def test_another_process_sees_a_change_within_two_seconds(dirs):
    packages, _ = dirs
    reader = Ledger(packages, recheck=0.5)
    before = reader.generation
    script = ("from pathlib import Path; from pypibox.ledger import Ledger, Event; "
              f"Ledger(Path({str(packages)!r})).record(Event('add_owner', 'cli:x', "
              "project='p', subject='alice'))")
    subprocess.run([sys.executable, "-c", script], check=True, env=clean_env(PYTHONPATH=str(ROOT)))
    assert wait_for(lambda: reader.owners("p") == {"alice"}) < 2.0
    assert reader.generation > before


WRITER = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from pypibox.ledger import Ledger, Event
    trail = Ledger(Path(sys.argv[1]))
    name, count = sys.argv[2], int(sys.argv[3])
    for i in range(count):
        trail.record(Event("yank", "cli:" + name, project="p", file=f"{name}-{i}.tar.gz",
                           reason="r" * (i % 300)))
        print(i, flush=True)
""")


def test_many_writer_processes_lose_and_garble_nothing(dirs, tmp_path):
    packages, _ = dirs
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = clean_env(PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, str(script), str(packages), f"w{n}", "150"],
                              env=env, stdout=subprocess.DEVNULL) for n in range(4)]
    for proc in procs:
        assert proc.wait(120) == 0
    trail = Ledger(packages)
    assert trail.state.events == 600 and trail.state.skipped == 0
    for n in range(4):
        names = [e.file for e in trail.events() if e.actor == f"cli:w{n}"]
        assert names == [f"w{n}-{i}.tar.gz" for i in range(150)]   # each writer's order kept
    raw = trail.path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 600


def test_writers_killed_with_sigkill_leave_a_trail_that_replays(dirs, tmp_path):
    packages, _ = dirs
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = clean_env(PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, str(script), str(packages), f"k{n}", "100000"],
                              env=env, stdout=subprocess.PIPE, text=True) for n in range(3)]
    acknowledged = {}
    for n, proc in enumerate(procs):
        seen = -1
        while seen < 30:
            seen = int(proc.stdout.readline())
        acknowledged[n] = seen
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(30)
        proc.stdout.close()
    # A torn last line, as a writer killed inside write() would leave.
    with open(packages / ".pypibox" / "audit.jsonl", "ab") as handle:
        handle.write(b'{"time":"2026-01-01T00:00:00Z","actor":"cli:torn","act')
    trail = Ledger(packages)
    for n, last in acknowledged.items():
        files = {e.file for e in trail.events() if e.actor == f"cli:k{n}"}
        assert {f"k{n}-{i}.tar.gz" for i in range(last + 1)} <= files   # acknowledged = kept
    assert trail.state.skipped == 0                    # the torn tail is waited for, not read
    trail.record(Event("add_owner", "cli:after", project="p", subject="zed"))
    fresh = Ledger(packages)
    assert fresh.owners("p") == {"zed"}                # our line was not glued to the torn one
    assert fresh.state.skipped == 1                    # the torn line is skipped, not fatal


def test_snapshot_saves_replay_and_is_never_trusted_blindly(dirs, caplog):
    packages, _ = dirs
    trail = Ledger(packages, snapshot_every=200)
    for i in range(20):
        trail.record(Event("yank", "alice", project="p", file=f"p-{i}.tar.gz", reason=str(i)))
    trail.record(Event("add_owner", "alice", project="p", subject="alice"))
    snap = packages / ".pypibox" / "state.json"
    assert snap.exists()
    expected = (Ledger(packages, snapshot_every=1 << 30).state.yanked, {"alice"})

    def view() -> tuple:
        fresh = Ledger(packages)
        return dict(fresh.state.yanked), set(fresh.owners("p"))

    assert view() == expected
    snap.write_text("{not json")                                    # corrupt
    caplog.set_level(logging.WARNING)
    assert view() == expected and "ignoring the snapshot" in caplog.text
    # A snapshot of another trail (say, before a restore): its hash does not match.
    Ledger(packages, snapshot_every=1)                              # writes a good one
    data = json.loads(snap.read_text())
    data["state"]["projects"]["p"]["owners"] = ["mallory"]
    data["sha256"] = "0" * 64
    snap.write_text(json.dumps(data))
    assert view() == expected and "does not match" in caplog.text


def test_a_replaced_trail_is_read_again_from_the_start(dirs):
    packages, _ = dirs
    trail = Ledger(packages, recheck=0.1)
    trail.record(Event("add_owner", "alice", project="p", subject="alice"))
    old_stamp = trail.stamp("p")
    other = packages / ".pypibox" / "other.jsonl"
    other.write_text(Event("add_owner", "bob", project="p", subject="bob",
                           time="2026-01-01T00:00:00Z").to_json() + "\n")
    os.replace(other, trail.path)                                   # e.g. make restore
    wait_for(lambda: trail.owners("p") == {"bob"})
    assert trail.stamp("p") != old_stamp


# --- rights -------------------------------------------------------------------------------

def test_first_uploader_owns_and_others_are_refused_with_whom_to_ask(dirs):
    tm = teams_for(dirs)
    publish(tm, ALICE, "aliceproj", "1.0")
    assert tm.rights.owners("aliceproj") == {"alice"}
    denied = refused(publish, tm, BOB, "aliceproj", "9.9")
    assert denied.status == 403
    assert denied.reason == ("Forbidden: bob may not upload to aliceproj: ask its owners (alice)"
                             " to add bob as a maintainer")
    assert not (tm.packages_dir / "aliceproj-9.9-py3-none-any.whl").exists()
    for action in ("delete", "yank", "set_status", "add_maintainer"):
        denied = refused(tm.rights.check, BOB, action, "AliceProj")
        assert denied.status == 403 and "alice" in denied.reason and "aliceproj" in denied.reason
    tm.rights.add_member(ALICE, "maintainer", "aliceproj", "bob", "")
    publish(tm, BOB, "aliceproj", "2.0")
    tm.rights.check(BOB, "yank", "aliceproj")
    denied = refused(tm.rights.check, BOB, "delete", "aliceproj")
    assert "only its owners (alice) or an administrator (root) may" in denied.reason
    for action in ("upload", "delete", "set_status", "add_owner"):
        tm.rights.check(ROOT_ADMIN, action, "aliceproj")            # admins may do anything
    upload, = [e for e in tm.ledger.events("aliceproj") if e.user == "bob"]
    assert upload.action == "upload" and upload.file == "aliceproj-2.0-py3-none-any.whl"


def test_projects_from_before_are_administrators_only_until_an_owner_is_assigned(dirs):
    packages, _ = dirs
    make_wheel(packages, "oldproj", "1.0")                      # on disk, never recorded
    tm = teams_for(dirs)
    denied = refused(publish, tm, ALICE, "oldproj", "2.0")
    assert denied.status == 403
    assert "oldproj has no recorded owner" in denied.reason
    assert "administrator (root)" in denied.reason
    assert "python -m pypibox owner add oldproj USER" in denied.reason
    refused(tm.delete, ALICE, "oldproj", "1.0")
    assert (packages / "oldproj-1.0-py3-none-any.whl").exists()
    publish(tm, ROOT_ADMIN, "oldproj", "1.1")                   # the admin may; no claim
    assert tm.rights.owners("oldproj") == frozenset()
    tm.rights.add_member(Identity.cli("ops"), "owner", "oldproj", "alice", "")
    publish(tm, ALICE, "oldproj", "2.0")
    assert tm.rights.owners("oldproj") == {"alice"}
    no_admins = teams_for(dirs, roles_text="")
    make_wheel(packages, "older", "1.0")
    assert "none is named in the roles file" in refused(publish, no_admins, BOB, "older",
                                                            "2").reason


def test_roles_patterns_reserve_names_and_grant_rights(dirs):
    tm = teams_for(dirs, "admin root\nowner bob acme-*\nmaintainer carol acme-*\n")
    denied = refused(publish, tm, ALICE, "acme-web", "1.0")
    assert denied.reason == ("Forbidden: alice may not create acme-web: the roles file reserves"
                             " the name for bob, carol; ask them or an administrator (root)")
    publish(tm, CAROL, "acme-web", "1.0")                       # a maintainer may create it
    assert tm.ledger.owners("acme-web") == frozenset()          # the rules own it, no claim
    assert tm.rights.owners("acme-web") == {"bob"}
    tm.rights.check(BOB, "delete", "acme_web")
    assert "ask its owners (bob)" in refused(publish, tm, ALICE, "acme-web", "2.0").reason
    denied = refused(tm.rights.remove_member, ROOT_ADMIN, "owner", "acme-web", "bob", "")
    assert denied.status == 409 and "through the roles file" in denied.reason


def test_tokens_never_exceed_their_user_and_scoped_ones_only_their_projects(dirs):
    tm = teams_for(dirs)
    publish(tm, ALICE, "aliceproj", "1.0")
    scoped = Identity("bob", "ci-web", frozenset({"bobweb"}))
    publish(tm, scoped, "bobweb", "1.0")                        # scope names it: may create
    assert tm.rights.owners("bobweb") == {"bob"}
    denied = refused(publish, tm, scoped, "bobother", "1.0")
    assert denied.reason == ("Forbidden: bob's token ci-web is limited to bobweb; it may not"
                             " upload to bobother")
    unscoped = Identity("bob", "ci-all", None)
    assert "ask its owners (alice)" in refused(publish, tm, unscoped, "aliceproj", "2").reason
    admin_token = Identity("root", "ops", frozenset({"bobweb"}))
    assert refused(tm.rights.check, admin_token, "delete", "aliceproj").status == 403
    upload = next(e for e in tm.ledger.events("bobweb") if e.action == "upload")
    assert upload.actor == "token:ci-web" and upload.user == "bob"
    tm.rights.check(scoped, "download", "aliceproj")            # reading: the whole index
    tm.rights.check(scoped, "list", "anything")


def test_archived_and_quarantined_projects_take_no_uploads(dirs):
    tm = teams_for(dirs)
    publish(tm, ALICE, "p", "1.0")
    tm.rights.set_status(ALICE, "p", "archived", "", "moved to q")
    for who in (ALICE, ROOT_ADMIN):
        denied = refused(publish, tm, who, "p", "2.0")
        assert denied.reason == ("Forbidden: p is archived: it takes no new uploads; an owner"
                                 " can set it active again (reason: moved to q)")
    tm.rights.set_status(ALICE, "p", "quarantined", "")
    assert "p is quarantined:" in refused(publish, tm, ALICE, "p", "2.0").reason
    tm.rights.set_status(ALICE, "p", "deprecated", "")
    publish(tm, ALICE, "p", "2.0")
    assert refused(tm.rights.set_status, ALICE, "p", "gone", "").status == 400
    assert refused(tm.rights.set_status, BOB, "p", "active", "").status == 403


def test_a_deleted_file_name_is_refused_forever_even_to_its_owner(dirs):
    tm = teams_for(dirs)
    publish(tm, ALICE, "p", "1.0")
    assert tm.delete(ALICE, "p", "1.0", "10.0.0.9") == ["p-1.0-py3-none-any.whl"]
    denied = refused(publish, tm, ALICE, "p", "1.0")
    assert denied.status == 400
    assert "p-1.0-py3-none-any.whl was deleted on" in denied.reason
    assert "by alice; a deleted file's name is never used again, even by its owner" in denied.reason
    assert not (tm.packages_dir / "p-1.0-py3-none-any.whl").exists()
    unsafe = teams_for(dirs, overwrite=True)                    # PYPI_OVERWRITE=on: as before
    publish(unsafe, ALICE, "p", "1.0")
    assert not unsafe.ledger.tombstoned("p-1.0-py3-none-any.whl")


def test_owners_manage_owners_but_never_leave_a_project_without_one(dirs):
    tm = teams_for(dirs)
    publish(tm, ALICE, "p", "1.0")
    denied = refused(tm.rights.remove_member, ALICE, "owner", "p", "alice", "")
    assert denied.status == 409 and "last owner of p" in denied.reason
    assert tm.rights.add_member(ALICE, "owner", "p", "bob", "")
    assert not tm.rights.add_member(ALICE, "owner", "p", "bob", "")   # no second event
    assert tm.rights.remove_member(BOB, "owner", "p", "alice", "")
    assert tm.rights.owners("p") == {"bob"}
    checked = teams_for(dirs, user_exists={"alice", "bob"}.__contains__)
    assert refused(checked.rights.add_member, BOB, "maintainer", "p", "nobody", "").reason \
        == "Bad request: there is no account named nobody"
    assert refused(tm.rights.check, ALICE, "yank", "never-seen").status == 404


RACER = textwrap.dedent("""\
    import os, sys, time
    from pathlib import Path
    from pypibox.rights import Denied, Identity
    from pypibox.teams import Teams
    packages, auth, user, go = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    tm = Teams(packages, auth / "roles", auth / "tokens")
    name = f"race-1.0.{user}-py3-none-any.whl"
    while time.time() < go:
        pass
    try:
        tm.rights.upload(Identity(user), "race", name, "0" * 64, "",
                         lambda: (packages / name).write_bytes(b"x"))
        print("won")
    except Denied as exc:
        print("refused", exc.reason)
""")


def test_of_two_first_uploads_at_once_only_one_owns_the_project(dirs, tmp_path):
    packages, auth = dirs
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    env = clean_env(PYTHONPATH=str(ROOT))
    for attempt in range(3):
        project = packages / f"round{attempt}"
        project.mkdir()
        go = time.time() + 1.5
        procs = [subprocess.Popen([sys.executable, str(script), str(project), str(auth), user,
                                   str(go)], env=env, stdout=subprocess.PIPE, text=True)
                 for user in ("alice", "bob")]
        outs = [p.communicate(60)[0] for p in procs]
        assert sorted(o.split()[0] for o in outs) == ["refused", "won"], outs
        winner = ("alice", "bob")[[o.startswith("won") for o in outs].index(True)]
        trail = Ledger(project)
        assert trail.owners("race") == {winner}
        assert [e.user for e in trail.events() if e.action == "upload"] == [winner]
        assert len(list(project.glob("race-*.whl"))) == 1


def test_identify_tokens_only_with_the_token_user(dirs):
    tm = teams_for(dirs)
    _, secret = tokens.create(dirs[1] / "tokens", "bob", name="ci")
    tm.tokens.refresh(force=True)
    passwords = {("bob", "bobs-password")}

    def check(user, password):
        return (user, password) in passwords

    assert identify("__token__", secret, check, tm.tokens) == Identity("bob", "ci", None)
    assert identify("__token__", "bobs-password", check, tm.tokens) is None
    assert identify("bob", secret, check, tm.tokens) is None
    assert identify("bob", "bobs-password", check, tm.tokens) == Identity("bob")
    passwords.add(("__token__", "x"))
    assert identify("__token__", "x", check, tm.tokens) is None


# --- teams: files, forms, tokens in the trail -------------------------------------------

def test_yank_unyank_delete_by_version_or_file(dirs):
    tm = teams_for(dirs)
    publish(tm, ALICE, "p", "1.0")
    publish(tm, ALICE, "p", "1.0", sdist=True)
    publish(tm, ALICE, "p", "2.0")
    assert tm.yank(ALICE, "p", "1.0", "", "broken") == ["p-1.0-py3-none-any.whl",
                                                         "p-1.0.tar.gz"]
    assert tm.yank(ALICE, "p", "1.0", "", "broken") == []
    assert tm.ledger.yanked("p-1.0.tar.gz") == "broken"
    assert tm.unyank(ALICE, "p", "p-1.0.tar.gz", "") == ["p-1.0.tar.gz"]
    assert tm.ledger.yanked("p-1.0-py3-none-any.whl") == "broken"
    assert tm.yank(ALICE, "p", "2.0.0", "") == ["p-2.0-py3-none-any.whl"]   # same version
    denied = refused(tm.yank, ALICE, "p", "3.0", "")
    assert denied.status == 404 and denied.reason == ("Not found: p has no version or file 3.0"
                                                      " (versions: 1.0, 2.0)")
    yanks = [e for e in tm.ledger.events("p") if e.action == "yank"]
    assert all(len(e.sha256) == 64 and e.sha256 != SHA for e in yanks)


def test_delete_removes_files_and_sidecars_and_the_index_notices(dirs):
    packages, _ = dirs
    index = PackageIndex(packages, recheck=0.5)
    tm = teams_for(dirs, catalog=IndexCatalog(index))
    publish(tm, ALICE, "p", "1.0")
    publish(tm, ALICE, "p", "2.0")
    index.refresh(force=True)
    gone = index.project("p")[0]                                # read: hash and metadata kept
    assert gone.filename == "p-1.0-py3-none-any.whl" and index.metadata(gone) is not None
    reader = PackageIndex(packages, recheck=30)                # another worker
    reader.refresh(force=True)
    assert len(reader.project("p")) == 2
    assert tm.delete(ALICE, "p", "1.0", "10.1.1.1") == ["p-1.0-py3-none-any.whl"]
    assert not (packages / "p-1.0-py3-none-any.whl").exists()
    assert (packages / "p-2.0-py3-none-any.whl").exists()
    assert wait_for(lambda: (reader.refresh(), len(reader.project("p") or ()))[1] == 1) < 2
    assert reader.file(gone.relpath) is None and index.db.metadata(gone.relpath) is None
    reader.close()
    index.close()
    event = next(e for e in tm.ledger.events("p") if e.action == "delete")
    assert event.client == "10.1.1.1" and len(event.sha256) == 64


def test_form_actions_for_owners(dirs):
    tm = teams_for(dirs)
    publish(tm, ALICE, "p", "1.0")
    publish(tm, ALICE, "p", "2.0")
    form = tm.form
    assert form(ALICE, {":action": "yank", "name": "P", "version": "1.0",
                        "reason": "bad"}) == "Yanked p-1.0-py3-none-any.whl"
    assert form(ALICE, {":action": "unyank", "name": "p", "filename":
                        "p-1.0-py3-none-any.whl"}) == "Unyanked p-1.0-py3-none-any.whl"
    assert form(ALICE, {":action": "add_maintainer", "name": "p", "user": "bob"}) \
        == "bob is now a maintainer of p"
    assert form(BOB, {":action": "yank", "name": "p", "version": "2.0"}).startswith("Yanked")
    assert refused(form, BOB, {":action": "remove_pkg", "name": "p", "version": "2.0"}).status \
        == 403
    assert form(ALICE, {":action": "set_status", "name": "p", "status": "deprecated",
                        "reason": "use q"}) == "p is deprecated"
    assert form(ALICE, {":action": "remove_pkg", "name": "p", "version": "2.0"}) == (
        "Deleted p-2.0-py3-none-any.whl; these names can never be uploaded again")
    assert form(ALICE, {":action": "add_owner", "name": "p", "user": "carol"}) \
        == "carol is now an owner of p"
    assert form(ALICE, {":action": "remove_maintainer", "name": "p", "user": "bob"}) \
        == "bob is no longer a maintainer of p"
    for fields, words in (({":action": "yank", "name": "p"}, "yank needs the field 'version'"),
                          ({":action": "yank"}, "yank needs the field 'name'"),
                          ({":action": "add_owner", "name": "p"}, "needs the field 'user'"),
                          ({":action": "explode", "name": "p"}, "unknown :action 'explode'")):
        denied = refused(form, ALICE, fields)
        assert denied.status == 400 and words in denied.reason


def test_tokens_in_the_file_are_recorded_once_by_the_workers_that_read_it(dirs):
    packages, auth = dirs
    workers = [teams_for(dirs) for _ in range(2)]
    for tm in workers:
        tm.watch_tokens()
    tok, secret = tokens.create(auth / "tokens", "bob", ["web"], name="ci-web")
    for tm in workers:
        wait_for(lambda tm=tm: tm.tokens.check(secret) is not None)
    tokens.revoke(auth / "tokens", "ci-web")
    for tm in workers:
        wait_for(lambda tm=tm: tm.tokens.check(secret) is None)
    trail = Ledger(packages)
    changes = [(e.action, e.actor, e.subject, e.token_user, e.scope) for e in trail.events()]
    assert changes == [("token_create", "tokens-file", "ci-web", "bob", "web"),
                       ("token_revoke", "tokens-file", "ci-web", "", "")]
    assert secret not in trail.path.read_text() and tok.hash[7:] not in trail.path.read_text()
    assert trail.token_known("ci-web") is None


def test_a_broken_tokens_file_records_no_revocations(dirs):
    packages, auth = dirs
    tokens.create(auth / "tokens", "bob", name="ci")
    tm = teams_for(dirs)
    tm.watch_tokens()
    (auth / "tokens").write_text("garbage\n")
    time.sleep(0.5)
    tm.tokens.refresh(force=True)
    again = teams_for(dirs)                     # a worker that starts on the broken file
    again.watch_tokens()
    assert [e.action for e in Ledger(packages).events()] == ["token_create"]


def test_the_ledger_format_is_documented_json_lines(dirs):
    trail = Ledger(dirs[0])
    trail.record(Event("upload", "token:ci", user="bob", project="p", file="p-1.tar.gz",
                       sha256=SHA, client="::1", reason="ünïcode"))
    line = trail.path.read_text(encoding="utf-8").strip()
    data = json.loads(line)
    assert set(data) == {"time", "actor", "user", "action", "project", "file", "sha256",
                         "client", "reason"}
    assert data["reason"] == "ünïcode" and data["time"].endswith("Z")
    assert ledger_mod.Event.from_json(line.encode()) == next(trail.events())


def test_a_refusal_is_decided_on_what_other_workers_recorded_a_moment_ago(dirs):
    """Worker B's view is up to `recheck` old; it must not refuse bob right after A let him in."""
    worker_a = teams_for(dirs, recheck=30)
    worker_b = teams_for(dirs, recheck=30)
    publish(worker_a, ALICE, "p", "1.0")
    worker_b.ledger.refresh(force=True)
    worker_a.form(ALICE, {":action": "add_maintainer", "name": "p", "user": "bob"})
    worker_b.rights.check(BOB, "upload", "p")                     # no wait, no refusal
    publish(worker_b, BOB, "p", "2.0")
    _, secret = tokens.create(dirs[1] / "tokens", "bob", name="fresh")
    assert worker_b.tokens.check(secret) is not None              # a token made just now



def test_stamp_sees_another_workers_change_at_once_and_so_does_the_page_it_caches(dirs):
    packages, _ = dirs
    writer, reader = Ledger(packages, recheck=30), Ledger(packages, recheck=30)
    writer.record(Event("add_owner", "alice", project="p", subject="alice"))
    before = reader.stamp("p")
    writer.record(Event("yank", "alice", project="p", file="p-1.0.tar.gz", reason="x"))
    assert reader.stamp("p") != before                 # no wait for the 30 s recheck
    assert reader.yanked("p-1.0.tar.gz") == "x"        # what a render then asks


def test_refusals_fit_the_200_characters_of_a_status_line(dirs):
    packages, _ = dirs
    tm = teams_for(dirs, "admin root\nadmin ops-team\nowner acme-lead acme-*\n")
    make_wheel(packages, "an-old-internal-project", "1.0")
    publish(tm, ALICE, "a-rather-long-project-name", "1.0")
    tm.rights.add_member(ALICE, "owner", "a-rather-long-project-name", "alice-backup", "")
    token = Identity("bob", "ci-some-service", frozenset({"some-service", "some-service-cli"}))
    reasons = [
        refused(publish, tm, BOB, "a-rather-long-project-name", "2.0").reason,
        refused(tm.rights.check, BOB, "delete", "a-rather-long-project-name").reason,
        refused(publish, tm, BOB, "an-old-internal-project", "2.0").reason,
        refused(publish, tm, BOB, "acme-something-new", "1.0").reason,
        refused(publish, tm, token, "a-rather-long-project-name", "2.0").reason,
    ]
    tm.delete(ALICE, "a-rather-long-project-name", "1.0")
    reasons.append(refused(publish, tm, ALICE, "a-rather-long-project-name", "1.0").reason)
    assert all(len(r) <= 200 for r in reasons), [(len(r), r) for r in reasons]


def test_odd_form_input_gets_a_400_never_a_crash(dirs):
    tm = teams_for(dirs)
    publish(tm, ALICE, "p", "1.0")
    cases = [({":action": "yank", "name": "p", "version": "1.0", "reason": "x" * 501},
              "the reason is longer than 500 characters"),
             ({":action": "yank", "name": "../etc", "version": "1.0"}, "is not a project name"),
             ({":action": "yank", "name": "p" * 300, "version": "1.0"}, "is not a project name"),
             ({":action": "yank", "name": "p", "version": "1.0/../x"}, "not a version or a file"),
             ({":action": "add_owner", "name": "p", "user": "a:b"}, "is not a user name"),
             ({":action": "set_status", "name": "p", "status": "gone"}, "not a project status")]
    for fields, words in cases:
        denied = refused(tm.form, ALICE, fields)
        assert denied.status == 400 and words in denied.reason and len(denied.reason) < 200
    assert tm.form(ALICE, {":action": "yank", "name": "p", "version": "1.0",
                           "reason": "two\nlines\r\n  here"}).startswith("Yanked")
    assert tm.ledger.yanked("p-1.0-py3-none-any.whl") == "two lines here"


def test_the_request_paths_own_identity_type_works_as_it_is(dirs):
    from pypibox.messages import Identity as RequestIdentity

    tm = teams_for(dirs)
    publish(tm, RequestIdentity("alice"), "p", "1.0")
    scoped = RequestIdentity("bob", "ci", frozenset({"q"}))
    assert "bob's token ci is limited to q" in refused(publish, tm, scoped, "p", "2.0").reason
    publish(tm, scoped, "q", "1.0")
    assert [e.actor for e in tm.ledger.events() if e.action == "upload"] == ["alice", "token:ci"]


def test_a_worker_that_starts_with_nothing_to_record_writes_nothing(dirs):
    packages, auth = dirs
    tm = teams_for(dirs)
    tm.watch_tokens()
    tm.rights.check(ROOT_ADMIN, "upload", "p")
    assert tm.ledger.owners("p") == frozenset() and tm.tokens.check("pypibox-" + "a" * 43) is None
    # Nothing but the index's own state (there from the start): no ledger, no lock file.
    assert [p.name for p in packages.iterdir()] == [".pypibox"]
    assert {p.name for p in (packages / ".pypibox").iterdir()
            if not p.name.startswith("index-")} <= {"index.current", "maintainer.lock",
                                                    "maintainer.state", "sync-request",
                                                    "rebuild.lock"}
