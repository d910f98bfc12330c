"""Who may change what: roles per project, refusals that say whom to ask, changes recorded.

Owners upload, yank, delete, set the status and manage owners and maintainers;
maintainers upload and yank; administrators (roles file) and the command line may do
anything. The first uploader of a new project becomes its owner, unless the roles file
gives the name to someone: then the rules decide who may create it. A project that has
files but no recorded owner (it was published before owners were recorded) can be
changed by administrators only, until one of them assigns an owner.
"""

from __future__ import annotations

import re
import typing as t

from . import ledger as ledger_mod
from .ledger import Event, Ledger
from .messages import Identity, Refusal
from .roles import RoleRules, Roles, normalize

T = t.TypeVar("T")

#: The least role each action needs ("maintainer" actions are open to owners too).
NEEDS = {
    "upload": "maintainer", "yank": "maintainer", "unyank": "maintainer",
    "delete": "owner", "set_status": "owner",
    "add_maintainer": "owner", "remove_maintainer": "owner",
    "add_owner": "owner", "remove_owner": "owner",
}
#: How a refusal names an action.
VERBS = {
    "upload": "upload to", "yank": "yank files of", "unyank": "unyank files of",
    "delete": "delete files of", "set_status": "set the status of",
    "add_maintainer": "add maintainers to", "remove_maintainer": "remove maintainers of",
    "add_owner": "add owners to", "remove_owner": "remove owners of",
}
READ_ACTIONS = ("list", "download")
CLI_PREFIX = "cli:"  # as Identity.cli writes it
USER_RE = re.compile(r"^[^:\s#]{1,255}$")
PROJECT_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,198}[a-z0-9])?$")
CLOSED = ("archived", "quarantined")
#: Longest reason kept with a yank, a deletion or a status.
MAX_REASON = 500


class Denied(Refusal):
    """A refusal of the rules: an HTTP status and a one-line reason a person can act on."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)


class Who(t.Protocol):
    """Anything shaped like an Identity (the request path's own Identity type will do)."""

    @property
    def user(self) -> str: ...

    @property
    def token(self) -> str | None: ...

    @property
    def scope(self) -> frozenset[str] | None: ...


def is_operator(who: Who) -> bool:
    """True for the command line (Identity.cli), which may do anything."""
    return bool(getattr(who, "operator", False))


def actor_of(who: Who) -> str:
    """The name the audit trail records: ``alice``, ``token:ci-web`` or ``cli:alice``."""
    return f"token:{who.token}" if who.token else who.user


def who_of(who: Who) -> str:
    """The name a refusal uses: ``alice`` or ``alice's token ci-web``."""
    return f"{who.user}'s token {who.token}" if who.token else who.user


def _names(users: t.Iterable[str]) -> str:
    return ", ".join(sorted(users))


def project_name(name: str) -> str:
    """A project name, PEP 503-normalised; Denied (400) if it cannot be one."""
    project = normalize(name.strip())
    if not PROJECT_RE.match(project):
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise Denied(400, f"Bad request: {shown!r} is not a project name")
    return project


def reason_text(text: str) -> str:
    """A reason as the trail keeps it: one line; Denied (400) if it is too long."""
    line = " ".join(text.split())
    if len(line) > MAX_REASON:
        raise Denied(400, f"Bad request: the reason is longer than {MAX_REASON} characters")
    return line


class Rights:
    """Checks actions against the roles file and the recorded owners, and records them.

    ``exists(project)`` tells whether the packages directory holds files of a project
    (the server passes its index); ``user_exists(user)`` whether an account exists.
    """

    def __init__(self, roles: Roles | RoleRules, ledger: Ledger,
                 exists: t.Callable[[str], bool] = lambda project: False,
                 user_exists: t.Callable[[str], bool] | None = None,
                 overwrite: bool = False) -> None:
        self._roles = roles
        self.ledger = ledger
        self.exists = exists
        self.user_exists = user_exists
        self.overwrite = overwrite

    @property
    def rules(self) -> RoleRules:
        """The roles in force now."""
        return self._roles.rules if isinstance(self._roles, Roles) else self._roles

    # -- who is what ----------------------------------------------------------------------
    def owners(self, project: str) -> frozenset[str]:
        """Owners of a project: recorded, and given by the roles file."""
        project = normalize(project)
        return self.ledger.owners(project) | self.rules.owners(project)

    def maintainers(self, project: str) -> frozenset[str]:
        """Maintainers of a project who are not owners."""
        project = normalize(project)
        both = self.ledger.maintainers(project) | self.rules.maintainers(project)
        return both - self.owners(project)

    def role(self, identity: Who, project: str) -> str:
        """``admin``, ``owner``, ``maintainer`` or ``""`` for this identity on a project."""
        if is_operator(identity) or identity.user in self.rules.admins:
            return "admin"
        if identity.user in self.owners(project):
            return "owner"
        if identity.user in self.maintainers(project):
            return "maintainer"
        return ""

    def is_new(self, project: str) -> bool:
        """True for a name with no files and no history: the first uploader may claim it."""
        project = normalize(project)
        return not self.ledger.known(project) and not self.exists(project)

    # -- checks ---------------------------------------------------------------------------
    def check(self, identity: Who, action: str, project: str) -> None:
        """Raise Denied (403, with whom to ask) unless ``identity`` may do ``action``.

        A refusal is decided on fresh state: what another worker recorded a moment ago (an
        owner adding a maintainer, say) is read first, so it never refuses wrongly.
        """
        if action in READ_ACTIONS:
            return  # every account (and each of its tokens) may read the whole index
        if action not in NEEDS:
            raise ValueError(f"unknown action {action!r}")
        project = project_name(project)
        try:
            self._check(identity, action, project)
        except Denied:
            self.ledger.refresh(force=True)
            if isinstance(self._roles, Roles):
                self._roles.refresh(force=True)
            self._check(identity, action, project)

    def _check(self, identity: Who, action: str, project: str) -> None:
        if identity.scope is not None and project not in identity.scope:
            raise Denied(403, f"Forbidden: {who_of(identity)} is limited to "
                              f"{_names(identity.scope)}; it may not {VERBS[action]} {project}")
        role = self.role(identity, project)
        allowed = role in ("admin", "owner") or (role == "maintainer"
                                                  and NEEDS[action] == "maintainer")
        if not allowed and action == "upload" and self.is_new(project):
            allowed = not self.rules.reserved(project)
        if not allowed:
            if action != "upload" and action != "add_owner" and self.is_new(project):
                raise Denied(404, f"Not found: no project named {project} on this index")
            raise Denied(403, self._refusal(identity, action, project))
        if action == "upload":
            status = self.ledger.status(project)
            if status in CLOSED:
                why = self.ledger.status_reason(project)
                raise Denied(403, f"Forbidden: {project} is {status}: it takes no new uploads;"
                                  " an owner can set it active again"
                                  f"{f' (reason: {why})' if why else ''}")

    def _refusal(self, identity: Who, action: str, project: str) -> str:
        who, verb = who_of(identity), VERBS[action]
        admins = self.rules.admins
        # Twine prints only the status line, which the server cuts at 200 characters: what
        # to do comes first, and the sentences stay short.
        ask_admin = (f"an administrator ({_names(admins)})" if admins else
                     "an administrator (none is named in the roles file)")
        owners = self.owners(project)
        if action == "upload" and self.is_new(project):
            granted = self.rules.granted(project)
            return (f"Forbidden: {who} may not create {project}: the roles file reserves the"
                    f" name for {_names(granted)}; ask them or {ask_admin}")
        if not owners:
            return (f"Forbidden: {project} has no recorded owner: only {ask_admin} may {verb}"
                    f" it, or assign one (python -m pypibox owner add {project} USER)")
        if NEEDS[action] == "maintainer":
            return (f"Forbidden: {who} may not {verb} {project}: ask its owners"
                    f" ({_names(owners)}) to add {identity.user} as a maintainer")
        return (f"Forbidden: {who} may not {verb} {project}: only its owners"
                f" ({_names(owners)}) or {ask_admin} may; ask one of them")

    def check_filename(self, filename: str) -> None:
        """Raise Denied (400) if the file name was deleted before and may not come back."""
        if self.overwrite:
            return  # PYPI_OVERWRITE=on: the old behaviour, a deleted name may come back
        stone = self.ledger.tombstone(filename)
        if stone is not None:
            when, actor = stone
            raise Denied(400, f"{filename} was deleted on {when[:10]} by {actor}; a deleted"
                              " file's name is never used again, even by its owner:"
                              " publish a new version")

    def _check_user(self, user: str) -> None:
        if not USER_RE.match(user):
            raise Denied(400, f"Bad request: {user!r} is not a user name")
        if self.user_exists is not None and not self.user_exists(user):
            raise Denied(400, f"Bad request: there is no account named {user}")

    # -- changes: check and record under the ledger's lock ---------------------------------
    def _event(self, identity: Who, action: str, project: str, client: str,
               **fields: str) -> Event:
        user = "" if is_operator(identity) else identity.user
        return Event(action=action, actor=actor_of(identity), user=user,
                     project=normalize(project), client=client, **fields)

    def upload(self, identity: Who, project: str, filename: str, sha256: str,
               client: str, place: t.Callable[[], T], relpath: str | None = None) -> T:
        """Check, call ``place()`` (which puts the file in place), then record the upload.

        Everything happens under the ledger's lock, so that of two first uploads of one
        new project only one can become its owner. ``place`` raising records nothing.
        """
        project = normalize(project)
        with self.ledger.exclusive():
            self.check(identity, "upload", project)
            self.check_filename(filename)
            claim = self.is_new(project) and not self.rules.reserved(project) \
                and not is_operator(identity)
            result = place()
            events = []
            if claim:
                events.append(self._event(identity, "add_owner", project, client,
                                          subject=identity.user, reason="first upload"))
            events.append(self._event(identity, "upload", project, client,
                                      file=relpath or filename, sha256=sha256))
            self.ledger.record(*events)
        return result

    def delete(self, identity: Who, project: str, relpath: str, client: str,
               remove: t.Callable[[], None], sha256: str = "", reason: str = "") -> None:
        """Check, call ``remove()``, record the deletion (the file name's tombstone)."""
        reason = reason_text(reason)
        with self.ledger.exclusive():
            self.check(identity, "delete", project)
            remove()
            self.ledger.record(self._event(identity, "delete", project, client, file=relpath,
                                           sha256=sha256, reason=reason))

    def yank(self, identity: Who, project: str, relpath: str, client: str,
             reason: str = "", sha256: str = "") -> bool:
        """Yank a file (PEP 592); False if it was already yanked for the same reason."""
        reason = reason_text(reason)
        with self.ledger.exclusive():
            self.check(identity, "yank", project)
            if self.ledger.yanked(relpath) == reason:
                return False
            self.ledger.record(self._event(identity, "yank", project, client, file=relpath,
                                           sha256=sha256, reason=reason))
        return True

    def unyank(self, identity: Who, project: str, relpath: str, client: str,
               sha256: str = "") -> bool:
        """Take a yank back; False if the file was not yanked."""
        with self.ledger.exclusive():
            self.check(identity, "unyank", project)
            if self.ledger.yanked(relpath) is None:
                return False
            self.ledger.record(self._event(identity, "unyank", project, client, file=relpath,
                                           sha256=sha256))
        return True

    def set_status(self, identity: Who, project: str, status: str, client: str,
                   reason: str = "") -> bool:
        """Set a project's PEP 792 status; False if it already had it."""
        reason = reason_text(reason)
        if status not in ledger_mod.STATUSES:
            raise Denied(400, f"Bad request: {status!r} is not a project status"
                              f" ({', '.join(ledger_mod.STATUSES)})")
        with self.ledger.exclusive():
            self.check(identity, "set_status", project)
            now = self.ledger.status(project) or "active"
            if now == status and self.ledger.status_reason(project) == reason:
                return False
            self.ledger.record(self._event(identity, "set_status", project, client,
                                           status=status, reason=reason))
        return True

    def add_member(self, identity: Who, role: str, project: str, user: str,
                   client: str) -> bool:
        """Make ``user`` an owner or a maintainer; False if they already were."""
        action = f"add_{role}"
        with self.ledger.exclusive():
            self.check(identity, action, project)
            self._check_user(user)
            held = self.ledger.owners(project) if role == "owner" else \
                self.ledger.maintainers(project)
            if user in held:
                return False
            self.ledger.record(self._event(identity, action, project, client, subject=user))
        return True

    def remove_member(self, identity: Who, role: str, project: str, user: str,
                      client: str) -> bool:
        """Take the owner or maintainer role from ``user``; False if they did not have it."""
        action = f"remove_{role}"
        project = normalize(project)
        with self.ledger.exclusive():
            self.check(identity, action, project)
            held = self.ledger.owners(project) if role == "owner" else \
                self.ledger.maintainers(project)
            if user not in held:
                if role == "owner" and user in self.rules.owners(project):
                    raise Denied(409, f"Conflict: {user} owns {project} through the roles file;"
                                      " change that file to take it away")
                return False
            left = self.owners(project) - {user}
            if role == "owner" and not left and self.role(identity, project) != "admin":
                raise Denied(409, f"Conflict: {user} is the last owner of {project}; add"
                                  " another owner first")
            self.ledger.record(self._event(identity, action, project, client, subject=user))
        return True


def identify(user: str, password: str, check_password: t.Callable[[str, str], bool],
             tokens: t.Any) -> Identity | None:
    """The identity behind Basic credentials; None if they are wrong.

    The user name ``__token__`` means the password is an API token, and nothing else: an
    account's password is never accepted with it. ``tokens`` is a ``tokens.Tokens``.
    """
    if user == "__token__":
        found = tokens.check(password)
        return found if isinstance(found, Identity) else None
    if check_password(user, password):
        return Identity(user=user)
    return None
