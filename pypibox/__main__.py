"""Command line: ``python -m pypibox [serve|check|adduser|deluser|users|healthcheck|cache]``,
and the team commands of teamcli (token, yank, unyank, delete, status, owner, audit...)."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import urllib.error
import urllib.request
from pathlib import Path

from . import __version__, htpasswd, logs, preflight, teamcli
from .settings import DEFAULTS, ConfigError, Settings


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise SystemExit(_fail(f"configuration: {exc}", preflight.EXIT_CONFIG)) from None


def _fail(message: str, code: int) -> int:
    print(f"pypibox: error: {message}", file=sys.stderr)
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings()
    logs.setup(settings.log_level)
    try:
        entries = preflight.run(settings)
    except preflight.PreflightError as exc:
        return _fail(str(exc), exc.code)
    count = len(entries)
    logging.getLogger("pypibox").info("%d account%s in %s", count, "" if count == 1 else "s",
                                      settings.htpasswd)
    from .server import serve

    serve(settings)
    return 0


def _file(args: argparse.Namespace) -> Path:
    return Path(args.file) if args.file else _settings().htpasswd


def cmd_check(args: argparse.Namespace) -> int:
    path = _file(args)
    try:
        entries = htpasswd.validate(path)
    except htpasswd.HtpasswdError as exc:
        return _fail(str(exc), 1)
    print(f"{path}: {len(entries)} users, all bcrypt")
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    path = _file(args)
    try:
        entries = htpasswd.read(path)
    except htpasswd.HtpasswdError as exc:
        return _fail(str(exc), 1)
    for entry in entries:
        print(entry.user if entry.is_bcrypt else f"{entry.user}  (not bcrypt: {entry.kind})")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Re-type new password: ") != password:
            raise htpasswd.HtpasswdError("passwords do not match; nothing changed")
    if not password:
        raise htpasswd.HtpasswdError("empty password; nothing changed")
    return password


def cmd_adduser(args: argparse.Namespace) -> int:
    path = _file(args)
    cost = args.cost if args.cost else _settings().bcrypt_cost
    try:
        password = _read_password(args.password_stdin)
        created = htpasswd.set_user(path, args.user, password, cost)
    except htpasswd.HtpasswdError as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"{path}: {exc.strerror}", 1)
    print(f"{'Adding' if created else 'Updating'} password for user {args.user} in {path}")
    return 0


def cmd_deluser(args: argparse.Namespace) -> int:
    path = _file(args)
    try:
        htpasswd.delete_user(path, args.user)
    except htpasswd.HtpasswdError as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"{path}: {exc.strerror}", 1)
    print(f"Deleting password for user {args.user} in {path}")
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    settings = _settings()
    url = args.url or f"http://127.0.0.1:{settings.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            ok = resp.status == 200
    except (urllib.error.URLError, OSError) as exc:
        return _fail(f"{url}: {exc}", 1)
    return 0 if ok else 1


def cmd_cache(args: argparse.Namespace) -> int:
    from . import cache_cli

    settings = _settings()
    logs.setup("warning")
    try:
        return cache_cli.run(args, settings)
    except ConfigError as exc:
        return _fail(str(exc), preflight.EXIT_CONFIG)


def parser() -> argparse.ArgumentParser:
    env_help = "\n".join(f"  {k:<22} {v[1]} (default: {v[0]})" for k, v in DEFAULTS.items())
    p = argparse.ArgumentParser(
        prog="python -m pypibox",
        description="A private Python package index (pypiserver under gunicorn).",
        epilog="Environment variables:\n" + env_help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"pypibox {__version__}")
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("serve", help="run the server (the default)").set_defaults(func=cmd_serve)
    for name, func, text in (
        ("check", cmd_check, "check an htpasswd file: users present, all bcrypt"),
        ("users", cmd_users, "list the user names (never the hashes)"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--file", help="htpasswd file (default: $PYPI_HTPASSWD)")
        sp.set_defaults(func=func)
    sp = sub.add_parser("adduser", help="add a user or change a password (bcrypt)")
    sp.add_argument("user")
    sp.add_argument("--file", help="htpasswd file (default: $PYPI_HTPASSWD); created if missing")
    sp.add_argument("--cost", type=int, choices=range(4, 32), metavar="4..31",
                    help="bcrypt cost (default: $PYPI_BCRYPT_COST)")
    sp.add_argument("--password-stdin", action="store_true",
                    help="read the password from the first line of standard input")
    sp.set_defaults(func=cmd_adduser)
    sp = sub.add_parser("deluser", help="remove a user")
    sp.add_argument("user")
    sp.add_argument("--file", help="htpasswd file (default: $PYPI_HTPASSWD)")
    sp.set_defaults(func=cmd_deluser)
    sp = sub.add_parser("healthcheck", help="exit 0 if the local server answers /health")
    sp.add_argument("--url", help="default: http://127.0.0.1:$PYPI_PORT/health")
    sp.add_argument("--timeout", type=float, default=3.0)
    sp.set_defaults(func=cmd_healthcheck)
    teamcli.add_commands(sub)
    from . import cache_cli

    cache_cli.add_parser(sub).set_defaults(func=cmd_cache)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    func = getattr(args, "func", cmd_serve)
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
