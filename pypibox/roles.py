"""The roles file (``PYPI_ROLES``): administrators, and rights given in advance to name patterns.

One rule a line; ``#`` starts a comment::

    admin alice                    # alice may do anything, on every project
    owner bob acme-*               # bob owns every project whose name matches acme-*
    maintainer carol acme-* tools  # carol may upload to and yank in those projects

Patterns are project names, compared PEP 503-normalised, where ``*`` stands for any run of
characters. A pattern also reserves its names: a new project that matches a rule can only
be created by the users the rules name (and administrators).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import hotfile

ROLES = ("admin", "owner", "maintainer")
USER_RE = re.compile(r"^[^:\s#]{1,255}$")
PATTERN_RE = re.compile(r"^[A-Za-z0-9._*?-]{1,200}$")
HEADER = """\
# pypibox roles (PYPI_ROLES): one rule a line, '#' starts a comment.
#   admin USER                   USER may do anything, on every project
#   owner USER PATTERN...        USER owns the projects whose names match a PATTERN
#   maintainer USER PATTERN...   USER may upload to and yank in those projects
# A PATTERN is a project name, with * for any run of characters (acme-* matches acme-web).
"""


class RolesError(hotfile.FileError):
    """A roles file that cannot be used; the message names the file and the line."""


def normalize(name: str) -> str:
    """A project name (or pattern) as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Rule:
    """One line of the file."""

    role: str
    user: str
    patterns: tuple[str, ...] = ()

    def matches(self, project: str) -> bool:
        """True if the rule names this (normalised) project."""
        return any(fnmatch.fnmatchcase(project, p) for p in self.patterns)

    def render(self) -> str:
        """The rule as a line of the file."""
        return " ".join((self.role, self.user, *self.patterns))


@dataclass(frozen=True)
class RoleRules:
    """Every rule of one version of the file."""

    rules: tuple[Rule, ...] = ()
    _memo: dict[str, dict[str, str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def admins(self) -> frozenset[str]:
        """The administrators."""
        return frozenset(r.user for r in self.rules if r.role == "admin")

    def granted(self, project: str) -> dict[str, str]:
        """``{user: "owner" | "maintainer"}`` given by the rules for a normalised project."""
        found = self._memo.get(project)
        if found is None:
            found = {}
            for rule in self.rules:
                if rule.role != "admin" and rule.matches(project) \
                        and found.get(rule.user) != "owner":
                    found[rule.user] = rule.role
            if len(self._memo) < 4096:
                self._memo[project] = found
        return found

    def owners(self, project: str) -> frozenset[str]:
        """Users the rules make owners of the project."""
        return frozenset(u for u, r in self.granted(project).items() if r == "owner")

    def maintainers(self, project: str) -> frozenset[str]:
        """Users the rules make maintainers (and not owners) of the project."""
        return frozenset(u for u, r in self.granted(project).items() if r == "maintainer")

    def reserved(self, project: str) -> bool:
        """True if some owner or maintainer rule names the project."""
        return bool(self.granted(project))


def parse(text: str, source: str = "roles") -> RoleRules:
    """Parse a roles file; raise RolesError naming the first line that is wrong."""
    rules: list[Rule] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        role, rest = words[0].lower(), words[1:]
        where = f"{source}: line {number}"
        if role not in ROLES:
            raise RolesError(f"{where}: {words[0]!r} is not a role (admin, owner or maintainer)")
        if not rest or not USER_RE.match(rest[0]):
            raise RolesError(f"{where}: give a user name after {role!r}")
        user, patterns = rest[0], rest[1:]
        if role == "admin" and patterns:
            raise RolesError(f"{where}: admin takes a user name only (admins act on every project)")
        if role != "admin" and not patterns:
            raise RolesError(f"{where}: {role} {user} needs one or more project name patterns")
        bad = [p for p in patterns if not PATTERN_RE.match(p)]
        if bad:
            raise RolesError(f"{where}: {bad[0]!r} is not a project name pattern "
                             "(letters, digits, . _ - and *)")
        rules.append(Rule(role, user, tuple(normalize(p) for p in patterns)))
    return RoleRules(tuple(rules))


def read(path: Path) -> RoleRules:
    """Read a roles file; a missing file has no rules; RolesError if it cannot be used."""
    text = hotfile.read_text(path)
    return RoleRules() if text is None else parse(text, str(path))


class Roles(hotfile.HotFile[RoleRules]):
    """The roles file of a running server, reloaded when it changes."""

    def __init__(self, path: Path, recheck: float = 0.5) -> None:
        super().__init__(path, parse, RoleRules(), "roles", recheck)

    @property
    def rules(self) -> RoleRules:
        """The rules in force now."""
        return self.get()
