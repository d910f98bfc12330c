"""Checks made before serving: a server that would fail later refuses to start now."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import typing as t
from pathlib import Path

from . import hotfile, htpasswd, roles, tokens
from .settings import Settings

#: Exit codes of ``python -m pypibox`` (documented in README).
EXIT_CONFIG = 2
EXIT_PACKAGES = 3
EXIT_HTPASSWD = 4


class PreflightError(Exception):
    """A reason not to start; ``code`` is the process exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def check_packages_dir(settings: Settings) -> None:
    """The packages directory exists, is a directory, and we can create files in it."""
    path = settings.packages_dir
    if not path.exists():
        raise PreflightError(
            f"packages directory {path} does not exist; create it (mkdir -p {path}) "
            "or point PYPI_PACKAGES_DIR at one", EXIT_PACKAGES)
    if not path.is_dir():
        raise PreflightError(f"packages directory {path} is not a directory", EXIT_PACKAGES)
    try:
        with tempfile.NamedTemporaryFile(prefix=".write-test-", dir=path):
            pass
    except OSError as exc:
        raise PreflightError(
            f"packages directory {path} is not writable by this user (uid {os.getuid()}): "
            f"{exc.strerror}; fix its owner or permissions", EXIT_PACKAGES) from None


def check_htpasswd(settings: Settings) -> list[htpasswd.Entry]:
    """The accounts file is readable, parses, has users, and every hash is bcrypt."""
    try:
        return htpasswd.validate(settings.htpasswd)
    except htpasswd.HtpasswdError as exc:
        hint = ""
        if not settings.htpasswd.exists():
            # Commands that work as typed: this very interpreter has passlib and bcrypt.
            hint = (f"\nCreate it with: htpasswd -c -B {settings.htpasswd} <username>"
                    " (or: make -C auth adduser USER=<username>, or: "
                    f"{sys.executable} -m pypibox adduser <username> --file "
                    f"{settings.htpasswd})")
        raise PreflightError(f"accounts: {exc}{hint}", EXIT_HTPASSWD) from None


def check_team_files(settings: Settings) -> None:
    """The roles and tokens files parse (a missing one means no roles or no tokens)."""
    checks: tuple[tuple[str, Path, t.Callable[[Path], object]], ...] = (
        ("PYPI_ROLES", settings.roles, roles.read), ("PYPI_TOKENS", settings.tokens, tokens.read))
    for name, path, read in checks:
        try:
            read(path)
        except hotfile.FileError as exc:
            raise PreflightError(f"accounts: {exc} (fix the file, or point {name} elsewhere)",
                                 EXIT_HTPASSWD) from None


def check_port(settings: Settings) -> None:
    """Nothing else listens on PYPI_HOST:PYPI_PORT.

    The workers share the port (SO_REUSEPORT, so that the kernel spreads connections
    over them); a plain bind first makes sure no other server already has it.
    """
    where = f"{settings.host}:{settings.port}"
    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PreflightError(f"PYPI_HOST {settings.host!r}: {exc.strerror}", EXIT_CONFIG) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise PreflightError(
                f"cannot listen on {where}: {exc.strerror}; another server has it "
                "(stop it, or set PYPI_PORT to a free port)", EXIT_CONFIG) from None


def run(settings: Settings) -> list[htpasswd.Entry]:
    """Every check, in order; raise PreflightError at the first failure."""
    check_packages_dir(settings)
    entries = check_htpasswd(settings)
    check_team_files(settings)
    check_port(settings)
    return entries
