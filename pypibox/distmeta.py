"""Core metadata of a distribution file: a wheel's METADATA or an sdist's PKG-INFO."""

from __future__ import annotations

import email.parser
import email.policy
import logging
import re
import tarfile
import zipfile

log = logging.getLogger("pypibox.distmeta")

#: Larger METADATA files are not believed (PyPI's own limits are far below this).
MAX_METADATA = 8 << 20
_WHEEL_METADATA = re.compile(r"^([^/]+)\.dist-info/METADATA$")


def _norm(text: str) -> str:
    return re.sub(r"[-_.]+", "_", text).lower()


def _wheel_metadata(path: str) -> bytes | None:
    with zipfile.ZipFile(path) as zf:
        candidates = [i for i in zf.infolist() if _WHEEL_METADATA.match(i.filename)]
        if not candidates:
            return None
        if len(candidates) > 1:
            # The dist-info directory is named after the distribution, as the file is.
            stem = _norm(path.rsplit("/", 1)[-1].split("-", 1)[0])
            candidates = [i for i in candidates if _norm(i.filename.split("-", 1)[0]) == stem]
            if len(candidates) != 1:
                return None
        info = candidates[0]
        if info.file_size > MAX_METADATA:
            return None
        return zf.read(info)


def _sdist_tar_metadata(path: str) -> bytes | None:
    with tarfile.open(path) as tf:
        for member in tf:
            parts = member.name.split("/")
            if len(parts) == 2 and parts[1] == "PKG-INFO" and member.isfile():
                if member.size > MAX_METADATA:
                    return None
                handle = tf.extractfile(member)
                return handle.read() if handle else None
    return None


def _sdist_zip_metadata(path: str) -> bytes | None:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            parts = info.filename.split("/")
            if len(parts) == 2 and parts[1] == "PKG-INFO" and info.file_size <= MAX_METADATA:
                return zf.read(info)
    return None


def read_metadata(path: str) -> bytes | None:
    """The metadata bytes of a wheel or sdist; None when there are none or the file is broken."""
    lower = path.lower()
    try:
        if lower.endswith(".whl"):
            return _wheel_metadata(path)
        if lower.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            return _sdist_tar_metadata(path)
        if lower.endswith(".zip"):
            return _sdist_zip_metadata(path)
    except Exception as exc:  # noqa: BLE001 - a broken file is listed without metadata
        log.warning("cannot read the metadata of %s: %s", path, exc)
    return None


def requires_python(raw: bytes) -> str | None:
    """The Requires-Python field of metadata bytes, or None."""
    try:
        message = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
        value = message.get("Requires-Python")
    except Exception:  # noqa: BLE001 - any odd metadata just has no Requires-Python
        return None
    if value is None:
        return None
    value = " ".join(str(value).split())
    return value or None
