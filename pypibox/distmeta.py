"""The facts of a distribution file in the packages directory, read once when it is first seen.

The project and version come from the file's core metadata (a wheel's METADATA, an sdist's
PKG-INFO), read with validate's bounded readers; the file name decides only when there is no
readable metadata, and that is logged. Every read is bounded (see validate.Limits).
"""

from __future__ import annotations

import bz2
import hashlib
import logging
import lzma
import os
import re
import stat
import time
import typing as t
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version
from pypiserver.pkg_helpers import (
    guess_pkgname_and_version,
    normalize_pkgname,
)

from . import validate

log = logging.getLogger("pypibox.distmeta")

#: What the index lists (as pypiserver does); anything else in the directory is ignored.
WHEEL = (".whl",)
SDISTS = (".tar.gz", ".zip", ".tgz", ".tar.bz2", ".tar.xz")
OTHERS = (".egg", ".exe")
SUFFIXES = WHEEL + SDISTS + OTHERS
#: Reading the metadata of a file found on disk: as bounded as an upload's check.
LIMITS = validate.DEFAULT_LIMITS
_FALLBACK_LOG_EVERY = 60.0


def is_distribution(name: str) -> bool:
    """A file name the index lists (or, for ``.asc``, serves): by suffix, case-insensitive."""
    low = name.lower()
    return low.removesuffix(".asc").endswith(SUFFIXES)


def kind_of(name: str) -> str:
    """"wheel", "sdist", "signature" or "other" (eggs and installers)."""
    low = name.lower()
    if low.endswith(".asc"):
        return "signature"
    if low.endswith(WHEEL):
        return "wheel"
    if low.endswith(SDISTS):
        return "sdist"
    return "other"


def _sdist_stem(name: str) -> str | None:
    low = name.lower()
    for suffix in SDISTS:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return None


def guess(filename: str) -> tuple[str, str] | None:
    """(project, version) as the file name says them (for a signature, the signed file's).

    packaging's parsers first (build tags understood; a legacy sdist name split at the
    rightmost '-' that leaves a valid version), pypiserver's guess for legacy formats.
    """
    if filename.lower().endswith(".asc"):
        filename = filename[:-4]
    parsed = validate.parse_name(filename)
    if parsed is not None:
        project, version = parsed.readings[0]
        return project, str(version)
    stem = _sdist_stem(filename)
    if stem is not None:
        readings = validate.sdist_readings(stem)
        if readings:
            return readings[0][0], str(readings[0][1])
    found = guess_pkgname_and_version(filename)
    if found is None or not found[0] or not found[1]:
        return None
    return normalize_pkgname(found[0]), found[1]


def quick_guess(filename: str) -> tuple[str, str] | None:
    """A cheap guess for a first listing of a large tree (replaced when the file is read)."""
    if filename.endswith(".whl"):
        parts = filename.split("-")
        if len(parts) >= 5:
            return re.sub(r"[-_.]+", "-", parts[0]).lower(), parts[1]
    return guess(filename)


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the index keeps about one file."""

    kind: str
    project: str
    name: str
    version: str
    size: int
    mtime_ns: int
    ino: int
    sha256: str
    requires_python: str | None
    summary: str | None
    metadata: bytes | None
    metadata_sha256: str | None   # wheels only: what PEP 658/714 announce
    source: str                   # "metadata" or "filename"


class _Stat(t.NamedTuple):
    size: int
    mtime_ns: int
    ino: int


def stat_key(path: str) -> _Stat | None:
    """(size, mtime_ns, inode) of a regular file, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return _Stat(st.st_size, st.st_mtime_ns, st.st_ino)


def _hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _egg_metadata(path: Path) -> bytes | None:
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo("EGG-INFO/PKG-INFO")
        except KeyError:
            return None
        if info.file_size > LIMITS.metadata:
            return None
        return zf.read(info)


def read_metadata(path: Path, kind: str, project: str | None) -> bytes | None:
    """The core metadata bytes of a file (None if it has none); InvalidUpload if unreadable."""
    name = path.name
    low = name.lower()
    if kind == "wheel":
        return validate.wheel_metadata(path, name, project, LIMITS)
    if low.endswith((".tar.gz", ".tgz")):
        return validate.tar_metadata(path, name, LIMITS)
    if low.endswith(".tar.bz2"):
        return validate.tar_metadata(path, name, LIMITS, opener=lambda p: bz2.open(p, "rb"))
    if low.endswith(".tar.xz"):
        return validate.tar_metadata(path, name, LIMITS, opener=lambda p: lzma.open(p, "rb"))
    if low.endswith(".zip"):
        return validate.zip_sdist_metadata(path, name, LIMITS)
    if low.endswith(".egg"):
        return _egg_metadata(path)
    return None


class _FallbackLog:
    """Says which files are listed by their names: 20 a minute at most, then a count."""

    def __init__(self) -> None:
        self.window_end = 0.0
        self.shown = 0
        self.quiet = 0

    def __call__(self, relpath: str, project: str, version: str, why: str) -> None:
        now = time.monotonic()
        if now >= self.window_end:
            if self.quiet:
                log.warning("%d more files were listed by their file names (not shown)",
                            self.quiet)
            self.window_end, self.shown, self.quiet = now + _FALLBACK_LOG_EVERY, 0, 0
        self.shown += 1
        if self.shown > 20:
            self.quiet += 1
            return
        log.warning("%s is listed as %s %s by its file name: its metadata %s", relpath,
                    project, version, why)


_fallback_log = _FallbackLog()


def examine(path: str, relpath: str, signed: tuple[str, str, str] | None = None) -> Facts | None:
    """Read a file's facts. None if it is gone or changed while being read; project "" if
    nothing says which project it belongs to (it is then neither listed nor served).

    ``signed`` is (project, name, version) of the file a signature signs, when known.
    """
    before = stat_key(path)
    if before is None:
        return None
    filename = relpath.rsplit("/", 1)[-1]
    kind = kind_of(filename)
    try:
        sha256 = _hash(path)
    except OSError as exc:
        log.warning("cannot read %s: %s", relpath, exc.strerror)
        return None
    named = guess(filename)
    if kind == "signature":
        if signed is None:
            signed = (named[0], named[0], named[1]) if named else ("", "", "")
        facts = Facts(kind, signed[0], signed[1], signed[2], before.size, before.mtime_ns,
                      before.ino, sha256, None, None, None, None, "filename")
        return facts if stat_key(path) == before else None
    meta: bytes | None = None
    why = "is missing"
    try:
        meta = read_metadata(Path(path), kind, named[0] if named else None)
    except validate.InvalidUpload as exc:
        why = f"cannot be read ({str(exc).removeprefix('Bad upload: ')})"
    except Exception as exc:  # noqa: BLE001 - a broken file is listed by its name
        why = f"cannot be read ({type(exc).__name__}: {exc})"
    fields = validate.sound_fields(meta) if meta is not None else None
    if isinstance(fields, validate.Fields):
        metadata_sha = hashlib.sha256(meta).hexdigest() if kind == "wheel" and meta else None
        facts = Facts(kind, fields.project, fields.name, str(fields.version), before.size,
                      before.mtime_ns, before.ino, sha256, fields.requires_python,
                      fields.summary, meta, metadata_sha, "metadata")
    else:
        if isinstance(fields, str):
            why = fields
        if named is None:
            log.warning("%s is not listed: its metadata %s and its name says no project and "
                        "version", relpath, why)
            named = ("", "")
        else:
            _fallback_log(relpath, named[0], named[1], why)
        facts = Facts(kind, named[0], named[0], named[1], before.size, before.mtime_ns,
                      before.ino, sha256, None, None, None, None, "filename")
    return facts if stat_key(path) == before else None


def version_key(version: str) -> tuple[int, t.Any]:
    """Sort key of a version string: PEP 440 order; anything else first, as pypiserver would."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        from pypiserver.pkg_helpers import parse_version

        return (0, parse_version(version))
