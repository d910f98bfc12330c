"""``POST /``: the upload form's actions (file_upload, remove_pkg, and the legacy ones)."""

from __future__ import annotations

import hashlib
import io
import logging
import typing as t

from . import validate
from .messages import Refusal, Request, Response, plain
from .multipart import Form
from .storage import AtomicFileBackend, FileExists, UploadFile
from .teams import FORM_ACTIONS

if t.TYPE_CHECKING:
    from .index import PackageIndex
    from .settings import Settings
    from .teams import Teams

log = logging.getLogger("pypibox.writepath")


class Receiver:
    """The file part of one upload form, written to a temporary file as it arrives."""

    def __init__(self, backend: AtomicFileBackend) -> None:
        self.backend = backend
        self.upload: UploadFile | None = None

    def open_file(self, filename: str) -> UploadFile:
        """The form's file part begins: refuse a bad name before any byte is stored."""
        try:
            validate.check_name(filename)
        except validate.InvalidUpload as exc:
            raise Refusal(400, str(exc)) from None
        self.upload = self.backend.new_upload()
        return self.upload

    def abort(self) -> None:
        """Remove what was not committed."""
        if self.upload is not None:
            self.upload.discard()


class WritePath:
    """The actions of the upload form, run in the upload pool once the form is received."""

    def __init__(self, settings: Settings, index: PackageIndex, backend: AtomicFileBackend,
                 teams: Teams) -> None:
        self.settings = settings
        self.index = index
        self.backend = backend
        self.teams = teams

    def receiver(self, req: Request) -> Receiver:
        """Where the event loop puts this request's file part."""
        receiver = Receiver(self.backend)
        req.upload = receiver
        return receiver

    def post(self, req: Request) -> Response:
        """Dispatch on the form's ``:action``."""
        form: Form = req.form
        action = form.get(":action")
        if action is None:
            raise Refusal(400, "Bad request: the form has no ':action' field")
        if action == "file_upload":
            return self.file_upload(req, form)
        if action in FORM_ACTIONS:
            # remove_pkg, yank, unyank, set_status, add_/remove_maintainer, add_/remove_owner
            fields = {name: form.get(name) or "" for name in
                      (":action", "name", "version", "filename", "reason", "status", "user")}
            assert req.identity is not None
            return plain(200, self.teams.form(req.identity, fields, req.client))
        if action in ("submit", "verify"):
            # `setup.py register`: an upload creates the project, nothing to register.
            log.info("ignored :action=%s (registering is not needed)", action)
            return plain(200, "OK")
        if action == "doc_upload":
            raise Refusal(400, "Bad request: documentation upload (doc_upload) is not "
                               "supported by this index")
        raise Refusal(400, f"Bad request: unsupported ':action' {action[:40]!r}")

    # -- file_upload -------------------------------------------------------------------------
    def file_upload(self, req: Request, form: Form) -> Response:
        """Validate the received file and link it into place."""
        receiver: Receiver = req.upload
        upload = receiver.upload
        filename = form.filename
        if upload is None or filename is None:
            raise Refusal(400, "Bad request: the form has no 'content' file")
        if form.signature is not None and form.signature[0] != f"{filename}.asc":
            raise Refusal(400, f"Bad request: the signature {form.signature[0][:80]!r} is not "
                               f"named {filename}.asc")
        upload.stage()
        try:
            dist = validate.check_file(upload.path, filename)
        except validate.InvalidUpload as exc:
            log.warning("refused an upload: %s", exc)
            raise Refusal(400, str(exc)) from None
        # Rights before "already exists": bob learns he may not, not what alice stored.
        rights = self.teams.rights
        assert req.identity is not None
        rights.check(req.identity, "upload", dist.project)
        rights.check_filename(filename)  # a deleted file's name is never used again
        if not self.settings.overwrite and self.backend.exists(filename):
            raise self._exists(req, filename)
        sha256 = _sha256(upload.path)
        claimed = form.get("sha256_digest")
        if claimed and claimed.strip().lower() != sha256:
            raise Refusal(400, f"Bad upload: {filename} has sha256 {sha256}, not the "
                               f"sha256_digest {claimed[:64]!r} the form gives; nothing was "
                               "stored")
        try:
            # Under the audit trail's lock: the first uploader of a project becomes its owner.
            rights.upload(req.identity, dist.project, filename, sha256, req.client,
                          lambda: self.backend.commit(upload, filename))
        except FileExists:
            raise self._exists(req, filename) from None
        if form.signature is not None:
            self._store_signature(req, *form.signature)
        self.index.add(filename, sha256, dist)
        log.info("stored %s (%d bytes, sha256 %s)", filename, form.size, sha256)
        return plain(200, "OK")

    def _store_signature(self, req: Request, name: str, data: bytes) -> None:
        if not data.startswith(b"-----BEGIN PGP SIGNATURE-----") or len(data) > 64 << 10:
            log.warning("dropped a signature that is not ASCII-armored: %s", name[:80])
            return
        if self.backend.exists(name) and not self.settings.overwrite:
            return
        try:
            self.backend.add_package(name, io.BytesIO(data))
        except FileExists:
            pass

    def _exists(self, req: Request, filename: str) -> Refusal:
        # twine expects 400 for "already exists", as PyPI answers; others get 409. The words
        # come first: uv wraps the body it prints at 80 columns, after a 64-column prefix.
        code = 400 if "twine" in req.headers.get("user-agent", "") else 409
        return Refusal(code, f"already exists: {filename}; a stored file is never replaced "
                             "(PYPI_OVERWRITE is off): publish a new version")


def _sha256(path: t.Any) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
