"""Roles, tokens and the audit trail put together, and the changes they allow on files.

``Teams`` is what the server and the command line use: it reads the roles and tokens
files, keeps the ledger of the packages directory, and yanks, unyanks and deletes files
by version or file name, and answers the HTTP form actions (``remove_pkg``, ``yank``,
``unyank``, ``set_status``, ``add_maintainer``...) for owners.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
import typing as t
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from .ledger import Event, Ledger
from .messages import Identity
from .rights import Denied, Rights, Who, identify, project_name
from .roles import Roles
from .tokens import Token, Tokens, TokenTable, TokenUse

if t.TYPE_CHECKING:
    from .index import PackageIndex
    from .settings import Settings

log = logging.getLogger("pypibox.teams")

#: The actor of token changes the server finds in the tokens file (made without the CLI
#: on this volume, e.g. by `make -C auth token`).
TOKENS_FILE_ACTOR = "tokens-file"
#: ``:action`` values of ``POST /`` answered by Teams.form.
FORM_ACTIONS = ("remove_pkg", "yank", "unyank", "set_status", "add_maintainer",
                "remove_maintainer", "add_owner", "remove_owner")


@dataclass(frozen=True)
class FileRef:
    """One file of the packages directory."""

    relpath: str
    path: str
    project: str
    version: str

    @property
    def filename(self) -> str:
        """The base name of the file."""
        return self.relpath.rsplit("/", 1)[-1]


class Catalog(t.Protocol):
    """What Teams needs to know about the files on disk."""

    def files(self, project: str) -> list[FileRef]:
        """Every file of a (normalised) project, signatures included."""

    def exists(self, project: str) -> bool:
        """True if the project has listed files."""

    def forget(self, relpath: str) -> None:
        """A file was just deleted from disk: stop listing it at once."""


class IndexCatalog:
    """A Catalog over the server's PackageIndex."""

    def __init__(self, index: PackageIndex) -> None:
        self.index = index

    def files(self, project: str) -> list[FileRef]:
        """Every file of the project, in version order."""
        self.index.sync()  # files copied in a moment ago count too
        found = [FileRef(e.relpath, e.path, e.project, e.version)
                 for e in self.index.files_of(project)]
        return sorted(found, key=lambda f: (f.version, f.relpath))

    def exists(self, project: str) -> bool:
        """True if the index lists files of the project."""
        self.index.refresh()
        if self.index.project_stamp(project) is not None:
            return True
        self.index.sync()  # copied in a moment ago, perhaps
        return self.index.project_stamp(project) is not None

    def forget(self, relpath: str) -> None:
        """Drop the file from the index (every server sees it at its next request)."""
        self.index.remove(relpath)


def sha256_of(path: str) -> str:
    """The sha256 of a file's content ("" if it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


def _same_version(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False


class Teams:
    """The rights of one server (or command line) over one packages directory."""

    def __init__(self, packages_dir: Path, roles_path: Path, tokens_path: Path,
                 overwrite: bool = False, catalog: Catalog | None = None,
                 user_exists: t.Callable[[str], bool] | None = None,
                 on_change: t.Callable[[], None] | None = None, recheck: float = 0.5,
                 remover: t.Callable[[FileRef], None] | None = None) -> None:
        self.packages_dir = Path(packages_dir)
        if catalog is None:
            from .index import PackageIndex

            catalog = IndexCatalog(PackageIndex(self.packages_dir, recheck=recheck))
        self.catalog = catalog
        self.ledger = Ledger(self.packages_dir, recheck=recheck)
        self.roles = Roles(roles_path, recheck=recheck)
        self.usage = TokenUse(self.ledger.state_dir)
        self.tokens = Tokens(tokens_path, recheck=recheck, user_exists=user_exists,
                             usage=self.usage)
        self.rights = Rights(self.roles, self.ledger, exists=catalog.exists,
                             user_exists=user_exists, overwrite=overwrite)
        self.on_change = on_change or self._touch_index
        #: Deletes one file from disk (default: the file and its .pypibox/files sidecars).
        self.remover = remover or self._remove
        self._watching = False

    @classmethod
    def from_settings(cls, settings: Settings, catalog: Catalog | None = None,
                      user_exists: t.Callable[[str], bool] | None = None,
                      on_change: t.Callable[[], None] | None = None,
                      remover: t.Callable[[FileRef], None] | None = None) -> Teams:
        """Teams for the configured directories and files."""
        return cls(settings.packages_dir, settings.roles, settings.tokens,
                   overwrite=settings.overwrite, catalog=catalog, user_exists=user_exists,
                   on_change=on_change, remover=remover)

    def after_fork(self) -> None:
        """In a new worker process: fresh locks everywhere."""
        self.ledger.after_fork()
        self.roles.after_fork()
        self.tokens.after_fork()

    def watch_tokens(self) -> None:
        """Record in the trail every token that appears in or leaves the tokens file.

        The server calls this once per worker: tokens made with ``make -C auth token``
        (no access to this volume) are recorded when the server first reads them.
        """
        if not self._watching:
            self._watching = True
            self.tokens.listeners.append(self.reconcile_tokens)
        self.reconcile_tokens(self.tokens.value)

    def identify(self, user: str, password: str,
                 check_password: t.Callable[[str, str], bool]) -> Identity | None:
        """The identity behind Basic credentials (``__token__`` means a token)."""
        return identify(user, password, check_password, self.tokens)

    # -- tokens in the trail -------------------------------------------------------------
    def reconcile_tokens(self, table: TokenTable, actor: str = TOKENS_FILE_ACTOR) -> None:
        """Record token_create/token_revoke for differences between the file and the trail."""
        if self.tokens.error is not None and table is self.tokens.value:
            return  # the file could not be read: what we hold is not what it says
        self.ledger.refresh(force=True)
        if not self._token_changes(table, actor):
            return  # nothing to record: take no lock, write nothing
        try:
            with self.ledger.exclusive():
                events = self._token_changes(table, actor)   # again, under the lock
                if events:
                    self.ledger.record(*events)
        except OSError as exc:
            log.error("cannot record token changes in %s: %s", self.ledger.path, exc.strerror)

    def _token_changes(self, table: TokenTable, actor: str) -> list[Event]:
        known = dict(self.ledger.state.tokens)
        events = []
        for name, created in sorted(known.items()):
            tok = table.by_name(name)
            if tok is None or tok.created != created:
                events.append(Event("token_revoke", actor, subject=name, created=created))
        for tok in table.tokens:
            if known.get(tok.name) != tok.created:
                events.append(token_event("token_create", actor, tok))
        return events

    # -- files ------------------------------------------------------------------------------
    def select(self, project: str, target: str) -> list[FileRef]:
        """The files a VERSION or a FILE name stands for; Denied (404) if none."""
        project = project_name(project)
        if not target or len(target) > 255 or any(c.isspace() or c in "/\\" for c in target):
            raise Denied(400, f"Bad request: {target[:60]!r} is not a version or a file name")
        files = self.catalog.files(project)
        chosen = [f for f in files if f.filename == target]
        if chosen:
            signature = target + ".asc"
            chosen += [f for f in files if f.filename == signature]
        else:
            chosen = [f for f in files if _same_version(f.version, target)]
        if not chosen:
            versions = sorted({f.version for f in files})
            known = f" (versions: {', '.join(versions)})" if versions else ""
            raise Denied(404, f"Not found: {project} has no version or file {target}{known}")
        return chosen

    def yank(self, identity: Who, project: str, target: str, client: str = "",
             reason: str = "") -> list[str]:
        """Yank the files of a version (or one file); the names that changed."""
        self.rights.check(identity, "yank", project)
        done = []
        for ref in self.select(project, target):
            if ref.filename.endswith(".asc"):
                continue
            if self.rights.yank(identity, project, ref.relpath, client, reason,
                                sha256_of(ref.path)):
                done.append(ref.filename)
        return done

    def unyank(self, identity: Who, project: str, target: str,
               client: str = "") -> list[str]:
        """Take back the yank of a version's files (or one file); the names that changed."""
        self.rights.check(identity, "unyank", project)
        done = []
        for ref in self.select(project, target):
            if self.rights.unyank(identity, project, ref.relpath, client, sha256_of(ref.path)):
                done.append(ref.filename)
        return done

    def delete(self, identity: Who, project: str, target: str, client: str = "",
               reason: str = "") -> list[str]:
        """Delete the files of a version (or one file), leaving tombstones; their names."""
        self.rights.check(identity, "delete", project)
        done = []
        try:
            for ref in self.select(project, target):
                digest = sha256_of(ref.path)
                self.rights.delete(identity, project, ref.relpath, client,
                                   functools.partial(self.remover, ref), digest, reason)
                done.append(ref.filename)
        finally:
            if done:
                self.on_change()
        return done

    def _remove(self, ref: FileRef) -> None:
        try:
            os.unlink(ref.path)
        except FileNotFoundError:
            pass  # gone already (another request): the tombstone is still right
        except OSError as exc:
            raise Denied(503, f"Service unavailable: cannot delete {ref.filename}:"
                              f" {exc.strerror}; nothing was changed") from None
        side = self.ledger.state_dir / "files"
        for suffix in (".json", ".metadata"):
            try:
                os.unlink(side / (ref.relpath + suffix))
            except OSError:
                pass
        self.catalog.forget(ref.relpath)

    def _touch_index(self) -> None:
        """Tell every server's index that files changed (a new stamp file, as index.touch)."""
        stamp = self.ledger.state_dir / "stamp"
        tmp = stamp.with_name(f".stamp.{os.getpid()}.tmp")
        try:
            self.ledger.state_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(f"{time.time_ns()} {os.getpid()}\n")
            os.replace(tmp, stamp)
        except OSError as exc:
            log.warning("cannot write %s: %s (servers notice the change within a second)",
                        stamp, exc.strerror)

    # -- HTTP form actions -----------------------------------------------------------------
    def form(self, identity: Who, fields: t.Mapping[str, str], client: str = "") -> str:
        """Answer a ``POST /`` form action of FORM_ACTIONS; the one-line success message.

        Raises Denied with the status and reason for every refusal.
        """
        action = fields.get(":action", "")
        if action not in FORM_ACTIONS:
            raise Denied(400, f"Bad request: unknown :action {action!r}")

        def need(key: str, what: str) -> str:
            value = (fields.get(key) or "").strip()
            if not value:
                raise Denied(400, f"Bad request: {action} needs the field {key!r} ({what})")
            return value

        project = project_name(need("name", "the project"))
        reason = (fields.get("reason") or "").strip()
        if action in ("remove_pkg", "yank", "unyank"):
            target = (fields.get("filename") or "").strip() or need("version", "the version")
            if action == "remove_pkg":
                names = self.delete(identity, project, target, client, reason)
                return f"Deleted {', '.join(names)}; these names can never be uploaded again"
            if action == "yank":
                names = self.yank(identity, project, target, client, reason)
                return (f"Yanked {', '.join(names)}" if names
                        else f"{target} of {project} was yanked already")
            names = self.unyank(identity, project, target, client)
            return (f"Unyanked {', '.join(names)}" if names
                    else f"{target} of {project} was not yanked")
        if action == "set_status":
            status = need("status", "active, archived, deprecated or quarantined")
            changed = self.rights.set_status(identity, project, status, client, reason)
            return f"{project} is {status}" + ("" if changed else " already")
        role, verb = action.split("_")[1], action.split("_")[0]
        user = need("user", f"the user to make {role}")
        if verb == "add":
            changed = self.rights.add_member(identity, role, project, user, client)
            return f"{user} is {'now' if changed else 'already'} {with_article(role)} of {project}"
        changed = self.rights.remove_member(identity, role, project, user, client)
        return f"{user} is {'no longer' if changed else 'not'} {with_article(role)} of {project}"


def with_article(role: str) -> str:
    """``an owner``, ``a maintainer``."""
    return f"an {role}" if role[0] in "aeiou" else f"a {role}"


def token_event(action: str, actor: str, token: Token, user: str = "") -> Event:
    """The trail's record of a token's creation or revocation (never its hash)."""
    return Event(action, actor, user=user, subject=token.name, scope=token.scope_text,
                 expires=token.expires_text, created=token.created, token_user=token.user)
