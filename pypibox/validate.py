"""Upload validation: a stored file must be a real distribution whose name says what it holds.

Accepted: wheels (``.whl``) and sdists (``.tar.gz``, ``.zip``), as PyPI accepts them, plus a
detached ``.asc`` signature of one. Legacy ``.egg``, ``.exe``, ``.tar.bz2``, ``.tgz`` and the
like are refused: PyPI no longer takes them and modern installers do not need them.
"""

from __future__ import annotations

import email.parser
import logging
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

log = logging.getLogger("pypibox.validate")

MAX_NAME = 200
MAX_METADATA = 1 << 20
MAX_SIGNATURE = 64 << 10
#: A .tar.gz may expand to at most this many times its size (plus 64 MiB): refuses gzip bombs.
MAX_EXPANSION = 40
_NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.!+-]*")
_SIG_START = b"-----BEGIN PGP SIGNATURE-----"


class InvalidUpload(ValueError):
    """An upload that is not stored; the message says why, for the HTTP reason phrase."""


@dataclass(frozen=True)
class DistName:
    """What a distribution file name says: its kind, project and version."""

    kind: str  # "wheel", "sdist-tar", "sdist-zip" or "signature"
    project: str
    version: Version


def check_name(filename: str) -> DistName:
    """The file name is a plain, short, visible distribution file name; say what it names."""
    shown = ascii(filename[:80])[1:-1]
    if not filename:
        raise InvalidUpload("Bad filename: empty")
    if len(filename) > MAX_NAME:
        raise InvalidUpload(f"Bad filename: longer than {MAX_NAME} characters")
    if any(c in filename for c in "/\\\0"):
        raise InvalidUpload(f"Bad filename: {shown} has path parts or a NUL byte")
    if filename.startswith("."):
        raise InvalidUpload(f"Bad filename: {shown} starts with a dot")
    if not _NAME_CHARS.fullmatch(filename):
        raise InvalidUpload(f"Bad filename: {shown} may only use letters, digits and _.!+-")
    if filename.endswith(".asc"):
        inner = check_name(filename[:-4])
        if inner.kind == "signature":
            raise InvalidUpload(f"Bad filename: {shown} is a signature of a signature")
        return DistName("signature", inner.project, inner.version)
    if filename.endswith(".whl"):
        try:
            name, version, _build, _tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion) as exc:
            raise InvalidUpload(
                f"Bad filename: {shown} is not a valid wheel name ({exc})") from None
        return DistName("wheel", name, version)
    if filename.endswith((".tar.gz", ".zip")):
        try:
            name, version = parse_sdist_filename(filename)
        except (InvalidSdistFilename, InvalidVersion) as exc:
            raise InvalidUpload(
                f"Bad filename: {shown} is not a valid sdist name ({exc})") from None
        kind = "sdist-tar" if filename.endswith(".tar.gz") else "sdist-zip"
        return DistName(kind, name, version)
    raise InvalidUpload(
        f"Bad filename: {shown} is not a wheel (.whl) or sdist (.tar.gz, .zip); "
        "legacy formats such as .egg and .tar.bz2 are not accepted")


def check_file(path: Path, filename: str) -> DistName:
    """The complete uploaded file at ``path`` is what ``filename`` says; raise InvalidUpload."""
    dist = check_name(filename)
    if dist.kind == "wheel":
        _check_wheel(path, filename, dist)
    elif dist.kind == "sdist-tar":
        _check_sdist_tar(path, filename, dist)
    elif dist.kind == "sdist-zip":
        _check_sdist_zip(path, filename, dist)
    else:
        _check_signature(path, filename)
    return dist


def _match(filename: str, dist: DistName, meta: bytes, where: str) -> None:
    """Name and Version in core metadata agree with the file name (PEP 503 / PEP 440)."""
    headers = email.parser.BytesHeaderParser().parsebytes(meta)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        raise InvalidUpload(f"Bad upload: {where} of {filename} has no Name or Version")
    if canonicalize_name(str(name)) != canonicalize_name(dist.project):
        raise InvalidUpload(f"Bad upload: {filename} holds project {str(name)[:80]!r}, "
                            "not the one its name says")
    try:
        same = Version(str(version)) == dist.version
    except InvalidVersion:
        same = False
    if not same:
        raise InvalidUpload(f"Bad upload: {filename} holds version {str(version)[:40]!r}, "
                            "not the one its name says")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, filename: str) -> bytes:
    if info.file_size > MAX_METADATA:
        raise InvalidUpload(f"Bad upload: {filename} has an oversized {info.filename}")
    with zf.open(info) as fh:
        return fh.read(MAX_METADATA + 1)[:MAX_METADATA]


def _open_zip(path: Path, filename: str) -> zipfile.ZipFile:
    """Open the zip and check every member's CRC (bounded against zip bombs)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise InvalidUpload(f"Bad upload: {filename} is not a valid zip archive") from None
    budget = path.stat().st_size * MAX_EXPANSION + (64 << 20)
    if sum(i.file_size for i in zf.infolist()) > budget:
        zf.close()
        raise InvalidUpload(f"Bad upload: {filename} expands too much to be a distribution")
    try:
        bad = zf.testzip()
    except Exception:  # zlib and zipfile raise many kinds for a damaged member
        bad = "?"
    if bad is not None:
        zf.close()
        raise InvalidUpload(f"Bad upload: {filename} is a damaged zip archive")
    return zf


def _check_wheel(path: Path, filename: str, dist: DistName) -> None:
    try:
        with _open_zip(path, filename) as zf:
            candidates = [i for i in zf.infolist()
                          if re.fullmatch(r"[^/]+\.dist-info/METADATA", i.filename)]
            found = None
            for info in candidates:
                stem = info.filename.split("/")[0][: -len(".dist-info")]
                project, _, version = stem.rpartition("-")
                if canonicalize_name(project) == canonicalize_name(dist.project):
                    found = info
                    break
            if found is None and len(candidates) == 1:
                found = candidates[0]  # its Name says which project it really is
            if found is None:
                raise InvalidUpload(f"Bad upload: {filename} has no "
                                    f"{dist.project}-{dist.version}.dist-info/METADATA")
            meta = _read_member(zf, found, filename)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        if isinstance(exc, InvalidUpload):
            raise
        raise InvalidUpload(f"Bad upload: {filename} is a damaged zip archive") from None
    _match(filename, dist, meta, "METADATA")


def _check_sdist_zip(path: Path, filename: str, dist: DistName) -> None:
    try:
        with _open_zip(path, filename) as zf:
            infos = [i for i in zf.infolist() if re.fullmatch(r"[^/]+/PKG-INFO", i.filename)]
            meta = _read_member(zf, infos[0], filename) if infos else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        if isinstance(exc, InvalidUpload):
            raise
        raise InvalidUpload(f"Bad upload: {filename} is a damaged zip archive") from None
    if meta is not None:
        _match(filename, dist, meta, "PKG-INFO")


def _check_sdist_tar(path: Path, filename: str, dist: DistName) -> None:
    """A complete gzip'd tar (read to its end, bounded against bombs); PKG-INFO matches."""
    budget = path.stat().st_size * MAX_EXPANSION + (64 << 20)
    meta = None
    try:
        with tarfile.open(path, mode="r:gz") as tf:
            for member in tf:
                budget -= member.size + 512
                if budget < 0:
                    raise InvalidUpload(f"Bad upload: {filename} expands too much to be a sdist")
                top_pkg_info = re.fullmatch(r"[^/]+/PKG-INFO", member.name)
                if meta is None and member.isfile() and top_pkg_info:
                    if member.size > MAX_METADATA:
                        raise InvalidUpload(f"Bad upload: {filename} has an oversized PKG-INFO")
                    fh = tf.extractfile(member)
                    meta = fh.read() if fh else None
            # Read the gzip stream to its end: a cut or corrupt upload fails its CRC here.
            fileobj = tf.fileobj
            while fileobj is not None and budget >= 0:
                chunk = fileobj.read(1 << 20)
                if not chunk:
                    break
                budget -= len(chunk)
            if budget < 0:
                raise InvalidUpload(f"Bad upload: {filename} expands too much to be a sdist")
    except Exception as exc:  # tarfile, gzip and zlib raise many kinds for a bad archive
        if isinstance(exc, InvalidUpload):
            raise
        raise InvalidUpload(f"Bad upload: {filename} is not a valid gzip-compressed tar "
                            "archive") from None
    if meta is not None:
        _match(filename, dist, meta, "PKG-INFO")


def _check_signature(path: Path, filename: str) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(len(_SIG_START))
    if size > MAX_SIGNATURE or head != _SIG_START:
        raise InvalidUpload(f"Bad upload: {filename} is not an ASCII-armored signature")
