"""Command line for teams: tokens, yank, delete, project status, owners, the audit trail.

Commands that change the packages volume are recorded in its audit trail with the actor
``cli:<name>`` (``--as``, default ``$USER``). Registered by ``__main__.parser``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import typing as t
from pathlib import Path

from . import hotfile, htpasswd, ledger, roles, tokens
from .messages import Identity
from .rights import Denied
from .roles import normalize
from .settings import ConfigError, Settings
from .teams import Teams, token_event, with_article

Handler = t.Callable[[argparse.Namespace], int]


def _fail(message: str, code: int = 1) -> int:
    print(f"pypibox: error: {message}", file=sys.stderr)
    return code


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(_fail(f"configuration: {exc}", 2)) from None


def _actor(args: argparse.Namespace) -> Identity:
    name = getattr(args, "as_", None) or os.environ.get("USER") or ""
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = f"uid{os.getuid()}"
    return Identity.cli(name)


def _path(args: argparse.Namespace, attr: str, default: Path) -> Path:
    value = getattr(args, attr, None)
    return Path(value) if value else default


def _user_exists(path: Path) -> t.Callable[[str], bool] | None:
    """Who has an account (None when the htpasswd file cannot be read: not checked)."""
    try:
        users = {e.user for e in htpasswd.read(path)}
    except htpasswd.HtpasswdError:
        return None
    return users.__contains__


def _teams(args: argparse.Namespace, need_packages: bool = True) -> Teams:
    settings = _settings()
    packages = _path(args, "packages", settings.packages_dir)
    if need_packages and not packages.is_dir():
        raise SystemExit(_fail(f"packages directory {packages} does not exist"
                               " (give --packages DIR or set PYPI_PACKAGES_DIR)"))
    htp = _path(args, "htpasswd", settings.htpasswd)
    return Teams(packages, _path(args, "roles", settings.roles),
                 _path(args, "tokens", settings.tokens), overwrite=settings.overwrite,
                 user_exists=_user_exists(htp))


def _run(func: t.Callable[[argparse.Namespace], int]) -> Handler:
    """Turn refusals and unusable files into one error line and exit code 1."""
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except Denied as exc:
            return _fail(exc.reason)
        except BrokenPipeError:
            # The reader (head, less) has gone: nothing more to say to it.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except hotfile.FileError as exc:
            return _fail(str(exc))
        except OSError as exc:
            return _fail(f"{exc.filename or ''}: {exc.strerror}".lstrip(": "))
    return wrapped


# -- tokens ---------------------------------------------------------------------------------
def cmd_token_create(args: argparse.Namespace) -> int:
    settings = _settings()
    path = _path(args, "file", settings.tokens)
    try:
        expires = tokens.parse_expiry(args.expires)
    except ValueError as exc:
        return _fail(str(exc), 2)
    exists = _user_exists(_path(args, "htpasswd", settings.htpasswd))
    if exists is not None and not exists(args.user):
        return _fail(f"there is no account named {args.user} in"
                     f" {_path(args, 'htpasswd', settings.htpasswd)}; add it first")
    packages = _path(args, "packages", settings.packages_dir)
    trail = ledger.Ledger(packages) if packages.is_dir() and not args.no_trail else None
    if trail is None:
        token, secret = tokens.create(path, args.user, args.project, expires, args.name)
        _note("(The server records the token in its audit trail when it reads the file.)")
    else:
        # Under the trail's lock: a server that reads the new file meanwhile waits, then
        # finds the token recorded, and does not record it a second time.
        with trail.exclusive():
            token, secret = tokens.create(path, args.user, args.project, expires, args.name)
            trail.record(token_event("token_create", _actor(args).actor, token))
    scope = "every project of " + token.user if token.scope is None else token.scope_text
    _note(f"Created token {token.name} for {token.user} in {path}: {scope},"
          f" expires {token.expires_text}.")
    _note("This is the only time it is shown; use it as the password of the user __token__:")
    print(secret)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    settings = _settings()
    path = _path(args, "file", settings.tokens)
    table = tokens.read(path)
    packages = _path(args, "packages", settings.packages_dir)
    usage = tokens.TokenUse(packages / ledger.STATE_DIR) if packages.is_dir() else None
    if not table.tokens:
        _note(f"{path}: no tokens")
        return 0
    rows = [("NAME", "USER", "PROJECTS", "EXPIRES", "CREATED", "LAST USED")]
    for tok in table.tokens:
        expires = tok.expires_text + (" (expired)" if tok.expired() else "")
        used = (usage.last_used(tok) if usage else None) or "never"
        rows.append((tok.name, tok.user, tok.scope_text, expires, tok.created, used))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True))
              + "  " + row[-1])
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    settings = _settings()
    path = _path(args, "file", settings.tokens)
    packages = _path(args, "packages", settings.packages_dir)
    if packages.is_dir() and not args.no_trail:
        trail = ledger.Ledger(packages)
        with trail.exclusive():
            token = tokens.revoke(path, args.name)
            trail.record(token_event("token_revoke", _actor(args).actor, token))
    else:
        token = tokens.revoke(path, args.name)
    _note(f"Revoked token {token.name} of {token.user}: removed from {path}; a server reading"
          " this file refuses it at once (make -C auth install puts the file into"
          " the pypi-auth volume).")
    return 0


# -- files and projects ---------------------------------------------------------------------
def cmd_yank(args: argparse.Namespace) -> int:
    teams = _teams(args)
    names = teams.yank(_actor(args), args.project, args.target, "", args.reason or "")
    print(f"Yanked {', '.join(names)}" if names else
          f"{args.target} of {normalize(args.project)} was yanked already")
    return 0


def cmd_unyank(args: argparse.Namespace) -> int:
    teams = _teams(args)
    names = teams.unyank(_actor(args), args.project, args.target, "")
    print(f"Unyanked {', '.join(names)}" if names else
          f"{args.target} of {normalize(args.project)} was not yanked")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    teams = _teams(args)
    names = teams.delete(_actor(args), args.project, args.target, "", args.reason or "")
    print(f"Deleted {', '.join(names)}; these file names can never be uploaded again")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    teams = _teams(args)
    project = normalize(args.project)
    if args.status:
        changed = teams.rights.set_status(_actor(args), project, args.status, "",
                                          args.reason or "")
        print(f"{project} is {args.status}" + ("" if changed else " already"))
        return 0
    trail, rights = teams.ledger, teams.rights
    files = teams.catalog.files(project)
    if not files and not trail.known(project):
        return _fail(f"no project named {project} here")
    status = trail.status(project) or "active"
    why = trail.status_reason(project)
    print(f"{project}: {status}" + (f" ({why})" if why else ""))
    recorded = trail.owners(project)
    owners = [u + ("" if u in recorded else " (roles file)")
              for u in sorted(rights.owners(project))]
    print("owners: " + (", ".join(owners) or "none recorded (administrators only)"))
    print("maintainers: " + (", ".join(sorted(rights.maintainers(project))) or "none"))
    for ref in files:
        reason = trail.yanked(ref.relpath)
        mark = "" if reason is None else "  yanked" + (f": {reason}" if reason else "")
        print(f"  {ref.relpath}{mark}")
    return 0


def cmd_member(args: argparse.Namespace) -> int:
    teams = _teams(args)
    project = normalize(args.project)
    role = args.role
    if args.change == "add":
        changed = teams.rights.add_member(_actor(args), role, project, args.user, "")
        state = "now" if changed else "already"
    else:
        changed = teams.rights.remove_member(_actor(args), role, project, args.user, "")
        state = "no longer" if changed else "not"
    print(f"{args.user} is {state} {with_article(role)} of {project}")
    return 0


def describe(event: ledger.Event) -> str:
    """One readable line of the audit trail."""
    when = event.time[:19].replace("T", " ") + "Z" if event.time else "?"
    who = event.actor + (f" ({event.user})" if event.user and event.user != event.actor
                         else "")
    parts = [when, who, event.action]
    if event.project:
        parts.append(event.project)
    if event.file:
        parts.append(event.file)
    if event.subject:
        parts.append(("token " if event.action.startswith("token_") else "user ") + event.subject)
    if event.token_user:
        parts.append(f"for {event.token_user}")
    if event.scope:
        parts.append(f"projects {event.scope}")
    if event.expires:
        parts.append(f"expires {event.expires}")
    if event.status:
        parts.append(f"-> {event.status}")
    if event.sha256:
        parts.append(f"sha256 {event.sha256}")
    if event.reason:
        parts.append(f"reason: {json.dumps(event.reason, ensure_ascii=False)}")
    if event.client:
        parts.append(f"from {event.client}")
    return "  ".join(parts)


def cmd_audit(args: argparse.Namespace) -> int:
    settings = _settings()
    packages = _path(args, "packages", settings.packages_dir)
    trail = ledger.Ledger(packages)
    project = normalize(args.project) if args.project else None
    count = 0
    for event in trail.events(project):
        print(event.to_json() if args.json else describe(event))
        count += 1
    if not count:
        _note(f"no events{f' for {project}' if project else ''} in {trail.path}")
    return 0


def cmd_roles(args: argparse.Namespace) -> int:
    settings = _settings()
    path = _path(args, "file", settings.roles)
    rules = roles.read(path)
    if not rules.rules:
        _note(f"{path}: no rules (no administrators; owners come from first uploads)")
        return 0
    for rule in rules.rules:
        print(rule.render())
    return 0


# -- the parser -----------------------------------------------------------------------------
def _common(sp: argparse.ArgumentParser, writes: bool = True) -> None:
    sp.add_argument("--packages", metavar="DIR", help="packages directory"
                    " (default: $PYPI_PACKAGES_DIR)")
    sp.add_argument("--roles", metavar="FILE", help="roles file (default: $PYPI_ROLES)")
    sp.add_argument("--htpasswd", metavar="FILE", help="accounts (default: $PYPI_HTPASSWD)")
    if writes:
        sp.add_argument("--as", dest="as_", metavar="NAME",
                        help="who acts, for the audit trail as cli:NAME (default: $USER)")


def _no_trail(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--no-trail", action="store_true",
                    help="do not record it in the packages directory's audit trail here (the"
                         " server records token changes when it reads the tokens file)")


def add_commands(sub: t.Any) -> None:
    """Register the team commands on ``python -m pypibox``'s subparsers."""
    tok = sub.add_parser("token", help="API tokens: create, list, revoke")
    tsub = tok.add_subparsers(dest="token_cmd", required=True)
    sp = tsub.add_parser("create", help="make a token and print it once")
    sp.add_argument("user", help="the account the token acts for")
    sp.add_argument("--project", action="append", default=[], metavar="NAME",
                    help="limit the token to this project (repeat for more; default: all)")
    sp.add_argument("--expires", default="90d",
                    help="90d, 12h, 2w, 30m, a date (2026-03-01) or never (default: 90d)")
    sp.add_argument("--name", help="a name for the token (default: USER-<random>)")
    sp.add_argument("--file", help="tokens file (default: $PYPI_TOKENS); created if missing")
    _common(sp)
    _no_trail(sp)
    sp.set_defaults(func=_run(cmd_token_create))
    sp = tsub.add_parser("list", help="the tokens (never a secret), expiry and last use")
    sp.add_argument("--file", help="tokens file (default: $PYPI_TOKENS)")
    sp.add_argument("--packages", metavar="DIR", help="where last use is recorded"
                    " (default: $PYPI_PACKAGES_DIR)")
    sp.set_defaults(func=_run(cmd_token_list))
    sp = tsub.add_parser("revoke", help="remove a token from the tokens file")
    sp.add_argument("name")
    sp.add_argument("--file", help="tokens file (default: $PYPI_TOKENS)")
    _common(sp)
    _no_trail(sp)
    sp.set_defaults(func=_run(cmd_token_revoke))

    for name, func, text in (("yank", cmd_yank, "yank a version or a file (PEP 592)"),
                             ("unyank", cmd_unyank, "take a yank back"),
                             ("delete", cmd_delete, ("delete a version or a file for good"
                                                     " (its names can never come back)"))):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("project")
        sp.add_argument("target", metavar="VERSION|FILE")
        if name != "unyank":
            sp.add_argument("--reason", help="why (shown to installers for a yank)")
        _common(sp)
        sp.set_defaults(func=_run(func))

    sp = sub.add_parser("status", help="show a project, or set its status (PEP 792)")
    sp.add_argument("project")
    sp.add_argument("status", nargs="?", choices=ledger.STATUSES)
    sp.add_argument("--reason", help="why (shown with the status)")
    _common(sp)
    sp.set_defaults(func=_run(cmd_status))

    for role in ("owner", "maintainer"):
        sp = sub.add_parser(role, help=f"add or remove a project's {role}")
        sp.add_argument("change", choices=("add", "remove"))
        sp.add_argument("project")
        sp.add_argument("user")
        _common(sp)
        sp.set_defaults(func=_run(cmd_member), role=role)

    sp = sub.add_parser("audit", help="print the audit trail (of one project)")
    sp.add_argument("project", nargs="?")
    sp.add_argument("--json", action="store_true", help="the trail's own lines")
    sp.add_argument("--packages", metavar="DIR", help="packages directory"
                    " (default: $PYPI_PACKAGES_DIR)")
    sp.set_defaults(func=_run(cmd_audit))

    sp = sub.add_parser("roles", help="check the roles file and print its rules")
    sp.add_argument("--file", help="roles file (default: $PYPI_ROLES)")
    sp.set_defaults(func=_run(cmd_roles))
