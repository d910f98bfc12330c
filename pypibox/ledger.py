"""The audit trail of the packages volume and the state it implies (owners, yanks, status).

``<packages>/.pypibox/audit.jsonl`` is append-only: one JSON object a line, each written
with one ``write`` to a file opened ``O_APPEND``, under an exclusive ``flock`` of
``audit.lock``, then ``fsync``-ed. The server never rewrites it. Everything else is
derived by replaying it: owners, maintainers, yanks, tombstones, project status, the
tokens the trail knows. Each process keeps that state in memory and reads only what other
processes appended since (one ``stat`` at most every ``recheck`` seconds). A snapshot
(``state.json``, with the sha256 of the log prefix it was made from) saves replaying a
long log at start; a snapshot that is missing, unreadable or does not match the log is
ignored and the state is rebuilt from the log. A line torn by a killed writer is skipped.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
import typing as t
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .fsutil import fsync_dir
from .simple_api import PROJECT_STATUSES

log = logging.getLogger("pypibox.ledger")

STATE_DIR = ".pypibox"
LOG_NAME = "audit.jsonl"
LOCK_NAME = "audit.lock"
SNAPSHOT_NAME = "state.json"
SNAPSHOT_VERSION = 2  # 2: who uploaded each file
ACTIONS = ("upload", "yank", "unyank", "delete", "add_owner", "remove_owner",
           "add_maintainer", "remove_maintainer", "set_status", "token_create",
           "token_revoke")
STATUSES = PROJECT_STATUSES
#: Longest accepted text field (a reason is a sentence, not a file).
MAX_FIELD = 1000
#: A line longer than this cannot be an event of ours: it is skipped.
MAX_LINE = 64 * 1024
CHUNK = 1 << 20

Stamp = tuple[int, int]


def utc_now() -> str:
    """The current time, ISO 8601 UTC with microseconds and a Z."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Event:
    """One line of the audit trail. Empty fields are left out of the line."""

    action: str
    actor: str                 # alice, token:ci-web, cli:alice, tokens-file
    time: str = ""             # filled in by Ledger.record
    user: str = ""             # the account acting (a token's user); "" for the CLI
    project: str = ""          # PEP 503-normalised
    file: str = ""             # path under the packages directory ('/' separators)
    sha256: str = ""
    client: str = ""           # the client's address
    reason: str = ""
    subject: str = ""          # the user added or removed, or the token's name
    status: str = ""           # set_status: the new status
    scope: str = ""            # token_create: comma-separated projects, or *
    expires: str = ""          # token_create: ISO time, or never
    created: str = ""          # token events: when the token was made
    token_user: str = ""       # token events: the account the token acts for

    def to_json(self) -> str:
        """The event as one line of JSON (no newline)."""
        data = {k: v for k, v in asdict(self).items() if v or k in ("time", "actor", "action")}
        order = ("time", "actor", "user", "action")
        data = {**{k: data[k] for k in order if k in data},
                **{k: v for k, v in data.items() if k not in order}}
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: bytes) -> Event:
        """Parse one line; ValueError if it is not an event."""
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError("not an object")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if not all(isinstance(v, str) for v in values.values()):
            raise ValueError("a field is not text")
        if values.get("action") not in ACTIONS or not values.get("actor"):
            raise ValueError("no known action or no actor")
        return cls(**values)

    @property
    def filename(self) -> str:
        """The base name of the file."""
        return self.file.rsplit("/", 1)[-1]

    def check(self) -> None:
        """Raise ValueError for an event that must not be written."""
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        if not self.actor:
            raise ValueError("an event needs an actor")
        for f in fields(self):
            value = getattr(self, f.name)
            if len(value) > MAX_FIELD or "\n" in value or "\r" in value:
                raise ValueError(f"field {f.name} is too long or has a line break")
        if self.action == "set_status" and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")


#: One string object per actor name (see State.apply).
_ACTORS: dict[str, str] = {}


@dataclass
class ProjectState:
    """What the trail says about one project."""

    # Replaced, never changed in place: a thread reading them needs no lock.
    owners: frozenset[str] = frozenset()
    maintainers: frozenset[str] = frozenset()
    status: str = ""
    status_reason: str = ""
    stamp: int = 0


@dataclass
class State:
    """Everything derived from the trail up to ``offset``."""

    projects: dict[str, ProjectState] = field(default_factory=dict)
    yanked: dict[str, str] = field(default_factory=dict)                 # relpath -> reason
    tombstones: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> time, actor
    tokens: dict[str, str] = field(default_factory=dict)                 # name -> created
    uploaders: dict[str, str] = field(default_factory=dict)              # relpath -> actor
    offset: int = 0
    events: int = 0
    skipped: int = 0

    def apply(self, event: Event, end: int) -> None:
        """Fold one event in; ``end`` is its end offset in the log (a unique, rising stamp)."""
        self.events += 1
        if event.action.startswith("token_"):
            if event.action == "token_create":
                self.tokens[event.subject] = event.created
            elif self.tokens.get(event.subject) == event.created or not event.created:
                self.tokens.pop(event.subject, None)
            return
        if not event.project:
            return
        proj = self.projects.get(event.project)
        if proj is None:
            proj = self.projects[event.project] = ProjectState()
        proj.stamp = end
        action = event.action
        if action == "upload":
            # Actors are few: one string object each, however many files they uploaded.
            self.uploaders[event.file] = _ACTORS.setdefault(event.actor, event.actor)
            self.yanked.pop(event.file, None)
            self.tombstones.pop(event.filename, None)   # only with PYPI_OVERWRITE=on
        elif action == "yank":
            self.yanked[event.file] = event.reason
        elif action == "unyank":
            self.yanked.pop(event.file, None)
        elif action == "delete":
            self.yanked.pop(event.file, None)
            self.uploaders.pop(event.file, None)
            self.tombstones[event.filename] = (event.time, event.actor)
        elif action == "add_owner":
            proj.owners = proj.owners | {event.subject}
            proj.maintainers = proj.maintainers - {event.subject}
        elif action == "remove_owner":
            proj.owners = proj.owners - {event.subject}
        elif action == "add_maintainer":
            proj.maintainers = proj.maintainers | {event.subject}
        elif action == "remove_maintainer":
            proj.maintainers = proj.maintainers - {event.subject}
        elif action == "set_status":
            proj.status = "" if event.status == "active" else event.status
            proj.status_reason = event.reason if proj.status else ""

    def to_json(self) -> dict[str, t.Any]:
        """A snapshot of the state (sets as sorted lists)."""
        return {
            "projects": {name: {"owners": sorted(p.owners), "maintainers": sorted(p.maintainers),
                                "status": p.status, "status_reason": p.status_reason,
                                "stamp": p.stamp} for name, p in self.projects.items()},
            "yanked": self.yanked, "tombstones": {k: list(v) for k, v in self.tombstones.items()},
            "tokens": self.tokens, "uploaders": self.uploaders, "offset": self.offset,
            "events": self.events,
            "skipped": self.skipped,
        }

    @classmethod
    def from_json(cls, data: t.Any) -> State:
        """Rebuild a snapshot; KeyError, TypeError or ValueError if it is not one of ours."""
        state = cls(offset=int(data["offset"]), events=int(data["events"]),
                    skipped=int(data["skipped"]))
        for name, p in data["projects"].items():
            state.projects[str(name)] = ProjectState(
                owners=frozenset(str(u) for u in p["owners"]),
                maintainers=frozenset(str(u) for u in p["maintainers"]),
                status=str(p["status"]), status_reason=str(p["status_reason"]),
                stamp=int(p["stamp"]))
        state.yanked = {str(k): str(v) for k, v in data["yanked"].items()}
        state.tombstones = {str(k): (str(v[0]), str(v[1])) for k, v in data["tombstones"].items()}
        state.tokens = {str(k): str(v) for k, v in data["tokens"].items()}
        state.uploaders = {str(k): _ACTORS.setdefault(str(v), str(v))
                           for k, v in data["uploaders"].items()}
        return state


class Ledger:
    """The audit trail of one packages directory, and its derived state, for one process."""

    def __init__(self, packages_dir: Path, recheck: float = 0.5,
                 snapshot_every: int = 4 << 20) -> None:
        self.root = Path(packages_dir)
        self.state_dir = self.root / STATE_DIR
        self.path = self.state_dir / LOG_NAME
        self.lock_path = self.state_dir / LOCK_NAME
        self.snapshot_path = self.state_dir / SNAPSHOT_NAME
        self.recheck = recheck
        self.snapshot_every = snapshot_every
        self._mutex = threading.RLock()
        self._lock_fd: int | None = None
        self._lock_pid = 0
        self._lock_depth = 0
        self._state = State()
        self._hash = hashlib.sha256()
        self._ino: int | None = None
        self._epoch = 0
        self._next_check = 0.0
        self._snapshot_offset = 0
        self._warned_offsets: set[int] = set()
        #: Rises whenever the state changes (in this process or, once seen, in another).
        self.generation = 0
        self.refresh(force=True)

    def after_fork(self) -> None:
        """In a new worker process: own locks (flock is per open file, so reopen it)."""
        self._mutex = threading.RLock()
        self._lock_fd = None
        self._lock_depth = 0
        self._next_check = 0.0

    # -- reading the log ----------------------------------------------------------------
    def refresh(self, force: bool = False, wait: bool | None = None) -> None:
        """Take in what was appended since the last look (rate limited unless ``force``).

        ``wait`` (default: ``force``) waits for another thread of this process that holds
        the state; without it, that thread brings the state up to date itself.
        """
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        # Another thread that holds the state (reading, or writing under the lock) brings
        # it up to date itself: a reader does not wait for it, and answers from memory.
        if not self._mutex.acquire(blocking=force if wait is None else wait):
            return
        try:
            if force or time.monotonic() >= self._next_check:
                self._catch_up()
                self._next_check = time.monotonic() + self.recheck
        finally:
            self._mutex.release()

    def _catch_up(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._state.offset or self._ino is not None:
                log.warning("%s is gone: starting from an empty audit trail", self.path)
                self._reset()
            return
        except OSError as exc:
            log.error("cannot read the audit trail %s: %s", self.path, exc.strerror)
            return
        if self._ino is not None and (st.st_ino != self._ino or st.st_size < self._state.offset):
            log.warning("%s was replaced or cut short: rebuilding the state from it", self.path)
            self._reset()
        if self._ino is None:
            self._ino = st.st_ino
            self._load_snapshot(st.st_size)
        if st.st_size > self._state.offset:
            self._read_from(self._state.offset)

    def _reset(self) -> None:
        self._state = State()
        self._hash = hashlib.sha256()
        self._ino = None
        self._epoch += 1
        self._snapshot_offset = 0
        self.generation += 1

    def _read_from(self, offset: int) -> None:
        changed = False
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            log.error("cannot read the audit trail %s: %s", self.path, exc.strerror)
            return
        with handle:
            handle.seek(offset)
            pending = b""
            while True:
                chunk = handle.read(CHUNK)
                if not chunk:
                    break
                pending += chunk
                lines = pending.split(b"\n")
                pending = lines.pop()   # no newline yet: unfinished, or torn by a crash
                for line in lines:
                    end = offset + len(line) + 1
                    self._hash.update(line + b"\n")
                    changed |= self._take(line, offset, end)
                    offset = end
                if len(pending) > MAX_LINE:
                    # Not a line a writer of ours can be in the middle of: skip it whole.
                    self._hash.update(pending)
                    offset += len(pending)
                    pending = b""
                    self._state.skipped += 1
            self._state.offset = offset
        if changed:
            self.generation += 1
        if self._state.offset - self._snapshot_offset >= self.snapshot_every:
            self._save_snapshot()

    def _take(self, line: bytes, start: int, end: int) -> bool:
        if not line.strip():
            return False
        try:
            event = Event.from_json(line)
        except (ValueError, TypeError):
            self._state.skipped += 1
            if start not in self._warned_offsets and len(self._warned_offsets) < 100:
                self._warned_offsets.add(start)
                log.warning("%s: skipped an unreadable line at byte %d (torn by a crash?)",
                            self.path, start)
            return False
        self._state.apply(event, end)
        return True

    # -- snapshot -----------------------------------------------------------------------
    def _load_snapshot(self, size: int) -> None:
        try:
            with open(self.snapshot_path, "rb") as handle:
                data = json.load(handle)
            if data.get("v") != SNAPSHOT_VERSION:
                return
            state = State.from_json(data["state"])
            if state.offset > size or state.offset <= 0:
                return
            digest = hashlib.sha256()
            with open(self.path, "rb") as handle:
                left = state.offset
                while left:
                    chunk = handle.read(min(CHUNK, left))
                    if not chunk:
                        return
                    digest.update(chunk)
                    left -= len(chunk)
            if digest.hexdigest() != data["sha256"]:
                log.warning("%s does not match the audit trail: rebuilding from the trail",
                            self.snapshot_path)
                return
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring the snapshot %s (%s): rebuilding from the audit trail",
                        self.snapshot_path, exc)
            return
        self._state = state
        self._hash = digest
        self._snapshot_offset = state.offset
        self.generation += 1

    def _save_snapshot(self) -> None:
        data = {"v": SNAPSHOT_VERSION, "sha256": self._hash.hexdigest(),
                "state": self._state.to_json()}
        tmp = self.snapshot_path.with_name(f".{SNAPSHOT_NAME}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(data, handle, separators=(",", ":"))
            os.replace(tmp, self.snapshot_path)
            self._snapshot_offset = self._state.offset
        except OSError as exc:
            log.debug("cannot write the snapshot %s: %s", self.snapshot_path, exc.strerror)
            with contextlib.suppress(OSError):
                tmp.unlink()

    # -- writing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self) -> t.Iterator[Ledger]:
        """Hold the trail's lock (across threads and processes) with the state up to date.

        Check and record inside it, so that no other writer acts on the same state in
        between. Re-entrant within a thread.
        """
        with self._mutex:
            if self._lock_depth == 0:
                fd = self._lockfile()
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                self._catch_up()
                yield self
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _lockfile(self) -> int:
        if self._lock_fd is None or self._lock_pid != os.getpid():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self._lock_pid = os.getpid()
        return self._lock_fd

    def record(self, *events: Event) -> list[Event]:
        """Append events (their time filled in) to the trail, durably; return them."""
        stamped = [e if e.time else _with_time(e, utc_now()) for e in events]
        for event in stamped:
            event.check()
        data = "".join(e.to_json() + "\n" for e in stamped).encode("utf-8")
        with self.exclusive():
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # A writer died in the middle of its line: end that line, keep ours whole.
                    data = b"\n" + data
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.state_dir)
            self._catch_up()
        return stamped

    # -- queries ------------------------------------------------------------------------
    @property
    def state(self) -> State:
        """The state now (after a rate-limited look at the log)."""
        self.refresh()
        return self._state

    def known(self, project: str) -> bool:
        """True if the trail has anything about the project."""
        return project in self.state.projects

    def owners(self, project: str) -> frozenset[str]:
        """The recorded owners."""
        proj = self.state.projects.get(project)
        return proj.owners if proj else frozenset()

    def maintainers(self, project: str) -> frozenset[str]:
        """The recorded maintainers."""
        proj = self.state.projects.get(project)
        return proj.maintainers if proj else frozenset()

    def yanked(self, relpath: str) -> str | None:
        """The yank reason of a file ("" for none given), or None if it is not yanked."""
        return self.state.yanked.get(relpath)

    def uploader(self, relpath: str) -> str | None:
        """Who uploaded a file (an account, ``token:<name>`` or ``cli:<name>``), if recorded."""
        return self.state.uploaders.get(relpath)

    def tombstone(self, filename: str) -> tuple[str, str] | None:
        """(time, actor) of the deletion of a file name, or None."""
        return self.state.tombstones.get(filename)

    def tombstoned(self, filename: str) -> bool:
        """True if a file of this name was deleted."""
        return filename in self.state.tombstones

    def status(self, project: str) -> str | None:
        """The PEP 792 status: archived, quarantined, deprecated; None means active."""
        proj = self.state.projects.get(project)
        return proj.status or None if proj else None

    def status_reason(self, project: str) -> str:
        """The reason given with the status ("" if none)."""
        proj = self.state.projects.get(project)
        return proj.status_reason if proj else ""

    def stamp(self, project: str) -> Stamp:
        """Changes whenever anything about the project changes (for page caches).

        Looks at the trail (one ``stat``, and the new lines if any) on every call, never
        waiting for another thread: a page cached on it shows a yank or a status that
        another worker recorded a moment ago, and the queries made to render it see it too.
        """
        self.refresh(force=True, wait=False)
        proj = self._state.projects.get(project)
        return (self._epoch, proj.stamp if proj else 0)

    def token_known(self, name: str) -> str | None:
        """The creation time of a token the trail knows by this name, or None."""
        return self.state.tokens.get(name)

    def events(self, project: str | None = None) -> t.Iterator[Event]:
        """Every readable event of the trail in order (of one project if given)."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                if not line.endswith(b"\n") or len(line) > MAX_LINE:
                    continue
                try:
                    event = Event.from_json(line)
                except (ValueError, TypeError):
                    continue
                if project is None or event.project == project:
                    yield event


def _with_time(event: Event, when: str) -> Event:
    return Event(**{**asdict(event), "time": when})
