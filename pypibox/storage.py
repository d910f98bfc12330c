"""Package storage: pypiserver's file backend with atomic, never-overwriting uploads.

An upload is written under a hidden temporary name (with an exclusive ``flock`` held
until it is in place), synced, checked by the caller, then linked to its real name:
``os.link`` fails if the name exists, so of two uploads of one new file only one wins,
and a reader never sees a partial file.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import socket
import typing as t
from pathlib import Path

import pypiserver
from pypiserver.backend import SimpleFileBackend
from pypiserver.core import PkgFile

from .fsutil import fsync_dir
from .messages import Refusal

if t.TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("pypibox.storage")

TMP_PREFIX = ".upload-"
CHUNK = 1 << 20
#: Where request bodies arrive, inside the packages volume (same file system, hidden).
INCOMING = ".pypibox/incoming"


class FileExists(Exception):
    """The name is taken: nothing was stored."""


def upload_tmp_name() -> str:
    """A hidden temporary name that says which host and process owns it."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
    return f"{TMP_PREFIX}{host}-{os.getpid()}-{os.urandom(6).hex()}"


def _owner_gone(path: Path) -> bool:
    """True if no process holds the upload's lock: its writer died (locks die with it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def clean_stale_uploads(root: Path) -> list[str]:
    """Remove temporary files of uploads whose writing process is gone.

    A writer holds an exclusive ``flock`` on its temporary file until the file is in place,
    so a file nobody holds was left by a killed server. This is safe while other servers
    share the directory, and does not depend on process ids, which a restart reuses.
    """
    removed: list[str] = []
    for folder in (root, root / INCOMING):
        try:
            # Streamed, not listed: the master forks the workers after this, and a list of a
            # million names would stay in every worker's memory.
            names = [e.name for e in os.scandir(folder) if e.name.startswith(TMP_PREFIX)]
        except OSError:
            continue
        for name in names:
            path = folder / name
            if _owner_gone(path):
                try:
                    path.unlink()
                    removed.append(name)
                except OSError:
                    continue
    if removed:
        log.warning("removed %d unfinished upload(s) left by a stopped server", len(removed))
    return removed


def storage_refusal(exc: OSError, what: str = "stored") -> Refusal:
    """What the client is told when the disk refuses: full (507), read-only (503) ..."""
    log.error("package storage: %s", exc.strerror or exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Refusal(507, f"Insufficient storage: the package disk is full; nothing was {what}")
    if exc.errno == errno.EROFS:
        return Refusal(503, f"The package storage is read-only; nothing was {what}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return Refusal(503, f"The server may not write to its package directory; nothing was "
                            f"{what}")
    return Refusal(500, f"Could not write to the package storage; nothing was {what}")


class UploadFile:
    """A file being uploaded, under a locked temporary name.

    Its body arrives in ``.pypibox/incoming/``; once complete it is staged (renamed, lock
    and all) to a hidden name beside the packages, checked, then linked into place.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        incoming = root / INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        self.path = incoming / upload_tmp_name()
        self.size = 0
        # The lock is held until the file is in place or gone: see clean_stale_uploads.
        self.handle = open(self.path, "xb")
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX)

    def stage(self) -> Path:
        """The body is complete: move it beside the packages (one file system, one inode)."""
        staged = self.root / self.path.name
        try:
            self.handle.flush()
            os.rename(self.path, staged)
        except OSError as exc:
            raise storage_refusal(exc) from exc
        self.path = staged
        return staged

    def write(self, data: bytes) -> None:
        """Append bytes (the event loop calls this as the body arrives)."""
        try:
            self.handle.write(data)
        except OSError as exc:
            raise storage_refusal(exc) from exc
        self.size += len(data)

    def discard(self) -> None:
        """Remove the temporary file (nothing happens if it was committed)."""
        if not self.handle.closed:
            self.handle.close()
        self.path.unlink(missing_ok=True)


class AtomicFileBackend(SimpleFileBackend):  # type: ignore[misc]
    """pypiserver's file backend whose uploads are atomic and never replace a file."""

    def __init__(self, config: t.Any) -> None:
        super().__init__(config)
        self.root = Path(self.roots[0])
        self.overwrite = bool(getattr(config, "overwrite", False))

    @classmethod
    def from_settings(cls, settings: Settings) -> AtomicFileBackend:
        """The backend for our packages directory, configured through pypiserver's Config."""
        config = pypiserver.Config.default_with_overrides(
            roots=[settings.packages_dir.resolve()], overwrite=settings.overwrite,
            hash_algo="sha256", backend_arg="simple-dir")
        return cls(config)

    def new_upload(self) -> UploadFile:
        """A temporary file to receive an upload into."""
        try:
            return UploadFile(self.root)
        except OSError as exc:
            raise storage_refusal(exc) from exc

    def commit(self, upload: UploadFile, filename: str) -> Path:
        """Sync the upload and give it its name; FileExists if the name is taken."""
        dest = self.root / filename
        try:
            upload.handle.flush()
            os.fsync(upload.handle.fileno())
            if self.overwrite:
                os.replace(upload.path, dest)
            else:
                try:
                    os.link(upload.path, dest)
                except FileExistsError:
                    raise FileExists(filename) from None
            fsync_dir(self.root)
        except OSError as exc:
            raise storage_refusal(exc) from exc
        finally:
            upload.discard()
        return dest

    def exists(self, filename: str) -> bool:
        """True if a file of that name is stored (in the top directory, where uploads go)."""
        return (self.root / filename).exists()

    def add_package(self, filename: str, stream: t.BinaryIO) -> None:
        """pypiserver's interface: store ``stream`` as ``filename`` (no checks)."""
        upload = self.new_upload()
        try:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                upload.write(chunk)
        except BaseException:
            upload.discard()
            raise
        self.commit(upload, filename)

    def remove_package(self, pkg: PkgFile) -> None:
        """pypiserver's interface: delete a file (gone already is fine); errors are raised,
        for the caller to answer (pypiserver's own version logs a traceback first)."""
        if pkg.fn is not None:
            try:
                os.remove(pkg.fn)
            except FileNotFoundError:
                log.warning("%s was removed already", os.path.basename(pkg.fn))
            fsync_dir(Path(pkg.fn).parent)

    def remove_file(self, path: str, project: str, version: str) -> None:
        """Delete one stored file through pypiserver's interface."""
        try:
            self.remove_package(PkgFile(project, version, fn=path, root=str(self.root)))
        except OSError as exc:
            raise storage_refusal(exc, "removed") from exc
