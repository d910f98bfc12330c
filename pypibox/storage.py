"""Package storage: pypiserver's file backend with atomic, never-overwriting uploads."""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import time
import typing as t
from pathlib import Path

from pypiserver.backend import SimpleFileBackend
from pypiserver.bottle_wrapper import HTTPError, request

from . import validate

log = logging.getLogger("pypibox.storage")

TMP_PREFIX = ".upload-"
CHUNK = 1 << 20


def upload_tmp_name() -> str:
    """A hidden temporary name that says which host and process owns it."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
    return f"{TMP_PREFIX}{host}-{os.getpid()}-{os.urandom(6).hex()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_uploads(root: Path, max_age: float = 24 * 3600) -> list[str]:
    """Remove temporary files of uploads whose process died (or that are very old)."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(TMP_PREFIX):
            continue
        path = root / name
        parts = name[len(TMP_PREFIX):].split("-")
        stale = False
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            stale = not _pid_alive(int(parts[1])) or int(parts[1]) == os.getpid()
        try:
            stale = stale or time.time() - path.stat().st_mtime > max_age
            if stale:
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
            with open(tmp, "xb") as out:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            try:
                validate.check_file(tmp, filename)
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
        except OSError as exc:
            raise _storage_error(exc) from exc
        finally:
            tmp.unlink(missing_ok=True)


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
        return HTTPError(503, "The server may not write to its package directory; nothing was stored")
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
