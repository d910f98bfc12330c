"""Package storage: pypiserver's file backend with atomic, never-overwriting uploads."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import socket
import typing as t
from pathlib import Path

from pypiserver.backend import SimpleFileBackend
from pypiserver.bottle_wrapper import HTTPError, request

from . import validate

log = logging.getLogger("pypibox.storage")

TMP_PREFIX = ".upload-"
CHUNK = 1 << 20
#: This process's package index, told of every file stored or removed (readpath sets it).
INDEX: t.Any = None


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
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        path = root / name
        if name.startswith(TMP_PREFIX) and _owner_gone(path):
            try:
                path.unlink()
                removed.append(name)
            except OSError:
                continue
    if removed:
        log.warning("removed %d unfinished upload(s) left by a stopped server", len(removed))
    return removed


def check_filename(filename: str) -> None:
    """Refuse names that could escape the directory, hide, not fit, or name no distribution."""
    try:
        validate.check_name(filename)
    except validate.InvalidUpload as exc:
        raise HTTPError(400, str(exc)) from None


def check_request_complete() -> None:
    """Refuse an upload whose request body ended early: a client that went away mid-upload.

    bottle stops reading at the end of the stream and the form parser keeps what it got, so
    the size of the body and the closing boundary of the form are checked here.
    """
    env = request.environ
    expected = request.content_length
    body = env.get("bottle.request.body")
    if body is not None and expected >= 0:
        where = body.tell()
        size = body.seek(0, os.SEEK_END)
        body.seek(where)
        if size < expected:
            raise HTTPError(400, f"Upload incomplete: the request body ended after {size} of "
                                 f"{expected} bytes; nothing was stored")
    form = env.get("_cgi.FieldStorage")
    parts = getattr(form, "list", None) or []
    if parts and getattr(parts[-1], "done", 1) != 1:
        raise HTTPError(400, "Upload incomplete: the form data has no closing boundary; "
                             "nothing was stored")


class AtomicFileBackend(SimpleFileBackend):
    """Writes each upload under a hidden temporary name, then links it into place.

    ``os.link`` fails if the name exists, so two uploads of one new file cannot both
    win, and a reader never sees a partial file.
    """

    def __init__(self, config: t.Any) -> None:
        super().__init__(config)
        self.overwrite = bool(getattr(config, "overwrite", False))

    def exists(self, filename: str) -> bool:
        try:
            validate.check_name(filename)
        except validate.InvalidUpload:
            return False  # add_package refuses it with the reason
        return (self.roots[0] / filename).exists() or super().exists(filename)

    def add_package(self, filename: str, stream: t.BinaryIO) -> None:
        check_filename(filename)
        check_request_complete()
        root = self.roots[0]
        dest = root / filename
        tmp = root / upload_tmp_name()
        try:
            # The lock is held until the file is in place: see clean_stale_uploads.
            with open(tmp, "xb") as out:
                fcntl.flock(out.fileno(), fcntl.LOCK_EX)
                try:
                    for chunk in iter(lambda: stream.read(CHUNK), b""):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                    try:
                        dist = validate.check_file(tmp, filename)
                    except validate.InvalidUpload as exc:
                        log.warning("refused an upload: %s", exc)
                        raise HTTPError(400, str(exc)) from None
                    if self.overwrite:
                        os.replace(tmp, dest)
                    else:
                        try:
                            os.link(tmp, dest)
                        except FileExistsError:
                            raise _exists_error(filename) from None
                    _fsync_dir(root)
                finally:
                    tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise _storage_error(exc) from exc
        if INDEX is not None:
            INDEX.add(filename, _sha256(dest), dist)

    def remove_package(self, pkg: t.Any) -> None:
        super().remove_package(pkg)
        if INDEX is not None and pkg.fn:
            INDEX.remove(Path(pkg.fn).resolve().relative_to(self.roots[0].resolve()).as_posix())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _exists_error(filename: str) -> HTTPError:
    # twine expects 400 for "already exists", as PyPI answers (pypiserver does the same).
    code = 400 if "twine" in request.headers.get("User-Agent", "") else 409
    return HTTPError(code, f"File already exists: {filename} (uploads never overwrite; "
                           "publish a new version)")


def _storage_error(exc: OSError) -> HTTPError:
    log.error("could not store an upload: %s", exc.strerror or exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return HTTPError(507, "Insufficient storage: the package disk is full; nothing was stored")
    if exc.errno == errno.EROFS:
        return HTTPError(503, "The package storage is read-only; nothing was stored")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return HTTPError(503, "The server may not write to its package directory; "
                              "nothing was stored")
    return HTTPError(500, "Could not store the package; nothing was stored")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
