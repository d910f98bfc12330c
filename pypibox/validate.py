"""Upload validation: a stored file must be a real distribution whose name says what it holds.

Accepted: wheels (``.whl``) and sdists (``.tar.gz``, ``.zip``), as PyPI accepts them, plus a
detached ``.asc`` signature of one. Legacy ``.egg``, ``.exe``, ``.tar.bz2``, ``.tgz`` and the
like are refused: PyPI no longer takes them and modern installers do not need them.

The file-name rule: a wheel name is PEP 427's (a build tag allowed); an sdist name is
``<name>-<version>`` plus the archive suffix. The project and version are those of the core
metadata (``METADATA``, ``PKG-INFO``), and the name must be able to say them: a standard name
(no ``-`` inside the name or the version part, as PEP 625 writes it) must name exactly that
project and version; a legacy sdist name (``docutils-0.15.1-post1.tar.gz``,
``connected-components-3d-1.9.0.tar.gz``) is accepted when its ``PKG-INFO`` is sound and the
name splits at some ``-`` into a part that normalises to the metadata's Name and a part that is
the same PEP 440 version. Archives are read within bounds: member count, expanded size, size
of any one header or metadata file, and CPU time.
"""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import io
import re
import struct
import time
import typing as t
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

MAX_NAME = 200
#: Core metadata larger than this is refused (PyPI's own limits are far below).
MAX_METADATA = 1 << 20
MAX_SIGNATURE = 64 << 10
#: An archive may expand to at most this many times its size (plus 64 MiB): refuses bombs.
MAX_EXPANSION = 40
EXPANSION_SLACK = 64 << 20
#: Members of one archive. The largest distributions on PyPI have a few tens of thousands.
MAX_MEMBERS = 100_000
#: CPU seconds one validation may use; a real 100 MB distribution needs a second or two.
MAX_CPU_SECONDS = 20.0
#: A tar extension header (pax, GNU long name) larger than this is not believed.
MAX_TAR_HEADER = 1 << 20

_NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.!+-]*")
_PROJECT = re.compile(r"([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])", re.IGNORECASE)
_SIG_START = b"-----BEGIN PGP SIGNATURE-----"
SDIST_SUFFIXES = (".tar.gz", ".zip")
_TOP_PKG_INFO = re.compile(r"[^/]+/PKG-INFO")
_WHEEL_METADATA = re.compile(r"[^/]+\.dist-info/METADATA")


class InvalidUpload(ValueError):
    """An upload that is not stored; the message says why, for the HTTP reason phrase."""


@dataclass(frozen=True)
class Limits:
    """The bounds of reading one archive."""

    members: int = MAX_MEMBERS
    cpu_seconds: float = MAX_CPU_SECONDS
    expansion: int = MAX_EXPANSION
    metadata: int = MAX_METADATA


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class DistName:
    """What a distribution file name says: its kind and the (project, version) it can mean."""

    kind: str                                  # "wheel", "sdist" or "signature"
    archive: str                               # "zip", "tar.gz" or "asc"
    readings: tuple[tuple[str, Version], ...]  # (PEP 503 project, version), best first
    standard: bool                             # the name alone says project and version

    @property
    def project(self) -> str:
        """The project of the best reading (the only one for a standard name)."""
        return self.readings[0][0]

    @property
    def version(self) -> Version:
        """The version of the best reading."""
        return self.readings[0][1]


@dataclass(frozen=True)
class Distribution:
    """What an accepted upload holds, from its core metadata (or its name, for a signature)."""

    filename: str
    kind: str                    # "wheel", "sdist" or "signature"
    project: str                 # PEP 503 normalised Name
    name: str                    # Name as the metadata spells it
    version: str                 # str(packaging Version)
    metadata: bytes | None       # METADATA / PKG-INFO bytes, exactly as in the archive
    requires_python: str | None
    summary: str | None


# -- names -------------------------------------------------------------------------------------
def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def sdist_readings(stem: str) -> tuple[tuple[str, Version], ...]:
    """Every (project, version) a legacy sdist stem can mean, split at its '-'; rightmost first."""
    out = []
    for at in range(len(stem) - 1, 0, -1):
        if stem[at] != "-":
            continue
        name, rest = stem[:at], stem[at + 1:]
        if not _PROJECT.fullmatch(name):
            continue
        version = _version(rest)
        if version is not None:
            out.append((canonicalize_name(name), version))
    return tuple(out)


def parse_name(filename: str) -> DistName | None:
    """What a file name says, or None if it names no wheel, sdist or signature.

    No checks on characters or length: also used for files found in the packages directory.
    """
    if filename.endswith(".asc"):
        inner = parse_name(filename[:-4])
        if inner is None or inner.kind == "signature":
            return None
        return DistName("signature", "asc", inner.readings, inner.standard)
    if filename.endswith(".whl"):
        try:
            name, version, _build, _tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion):
            return None
        return DistName("wheel", "zip", ((name, version),), True)
    for suffix in SDIST_SUFFIXES:
        if filename.endswith(suffix):
            stem = filename[: -len(suffix)]
            readings = sdist_readings(stem)
            if not readings:
                return None
            return DistName("sdist", suffix[1:], readings, stem.count("-") == 1)
    return None


def check_name(filename: str) -> DistName:
    """The file name is a plain, short, visible distribution file name; say what it names.

    Cheap: used before the body of an upload is read.
    """
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
        return DistName("signature", "asc", inner.readings, inner.standard)
    dist = parse_name(filename)
    if dist is not None:
        return dist
    if filename.endswith(".whl"):
        try:
            parse_wheel_filename(filename)
            why = "unreadable"
        except (InvalidWheelFilename, InvalidVersion) as exc:
            why = str(exc)
        raise InvalidUpload(f"Bad filename: {shown} is not a valid wheel name ({why})")
    if filename.endswith(SDIST_SUFFIXES):
        raise InvalidUpload(f"Bad filename: {shown} is not a valid sdist name (expected "
                            "<name>-<version>.tar.gz or .zip with a PEP 440 version)")
    raise InvalidUpload(
        f"Bad filename: {shown} is not a wheel (.whl) or sdist (.tar.gz, .zip); "
        "legacy formats such as .egg and .tar.bz2 are not accepted")


# -- metadata fields ---------------------------------------------------------------------------
def parse_metadata(raw: bytes) -> dict[str, str]:
    """Name, Version, Requires-Python and Summary of core metadata bytes (missing ones left out).

    Values are whitespace-collapsed; undecodable bytes are replaced, never fatal.
    """
    text = raw.decode("utf-8", "replace")
    try:
        headers = email.parser.HeaderParser(policy=email.policy.compat32).parsestr(text)
    except Exception:  # noqa: BLE001 - odd metadata simply has none of the fields
        return {}
    out = {}
    for key in ("Name", "Version", "Requires-Python", "Summary"):
        value = headers.get(key)
        if value is not None:
            value = " ".join(str(value).split())
            if value:
                out[key] = value[:2000]
    return out


@dataclass(frozen=True)
class Fields:
    """The fields of sound core metadata."""

    project: str
    name: str
    version: Version
    requires_python: str | None
    summary: str | None


def sound_fields(raw: bytes) -> Fields | str:
    """The fields of core metadata, or why they are not sound (no Name, bad Version...)."""
    fields = parse_metadata(raw)
    name, version_text = fields.get("Name"), fields.get("Version")
    if not name or not version_text:
        return "has no Name or Version"
    if not _PROJECT.fullmatch(name):
        return f"has an invalid Name {name[:80]!r}"
    version = _version(version_text)
    if version is None:
        return f"has an invalid Version {version_text[:40]!r}"
    return Fields(canonicalize_name(name), name, version, fields.get("Requires-Python"),
                  fields.get("Summary"))


# -- bounded archive reading -------------------------------------------------------------------
class _Budget:
    """Expanded bytes, members and CPU time left for one archive."""

    def __init__(self, path: Path, filename: str, limits: Limits) -> None:
        self.filename = filename
        self.limits = limits
        self.bytes = path.stat().st_size * limits.expansion + EXPANSION_SLACK
        self.members = limits.members
        self.cpu_end = time.thread_time() + limits.cpu_seconds

    def spend(self, nbytes: int) -> None:
        self.bytes -= nbytes
        if self.bytes < 0:
            raise InvalidUpload(f"Bad upload: {self.filename} expands too much to be a "
                                "distribution")

    def member(self) -> None:
        self.members -= 1
        if self.members < 0:
            raise InvalidUpload(f"Bad upload: {self.filename} has more than "
                                f"{self.limits.members} members")
        if self.members & 255 == 0:
            self.clock()

    def clock(self) -> None:
        if time.thread_time() > self.cpu_end:
            raise InvalidUpload(f"Bad upload: {self.filename} takes more than "
                                f"{self.limits.cpu_seconds:g} s of CPU time to check")


_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")


def _zip_directory(fh: t.BinaryIO, size: int) -> tuple[int, int]:
    """(offset, size) of a zip's central directory, from its end record (zip64 understood)."""
    tail_len = min(size, (1 << 16) + _EOCD.size + _ZIP64_LOCATOR.size)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0 and at + _EOCD.size > len(tail):
        at = tail.rfind(b"PK\x05\x06", 0, at)
    if at < 0:
        raise ValueError("no end of central directory")
    (_sig, _disk, _cd_disk, _n_disk, count, cd_size, cd_offset,
     _comment) = _EOCD.unpack_from(tail, at)
    eocd_pos = size - tail_len + at
    if count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        loc = at - _ZIP64_LOCATOR.size
        if loc < 0 or tail[loc:loc + 4] != b"PK\x06\x07":
            raise ValueError("no zip64 locator")
        z64_pos = _ZIP64_LOCATOR.unpack_from(tail, loc)[2]
        fh.seek(z64_pos)
        rec = fh.read(_ZIP64_EOCD.size)
        if len(rec) != _ZIP64_EOCD.size or rec[:4] != b"PK\x06\x06":
            raise ValueError("bad zip64 end record")
        fields = _ZIP64_EOCD.unpack(rec)
        cd_size, cd_offset = fields[8], fields[9]
        eocd_pos = z64_pos
    # Data prepended to the archive shifts every offset (zipfile allows it too).
    start = eocd_pos - cd_size
    if start < 0 or cd_offset > start:
        raise ValueError("bad central directory offset")
    return start, cd_size


def _count_zip_members(fh: t.BinaryIO, size: int, budget: _Budget) -> None:
    """Walk the central directory before zipfile parses it: bounds its memory and time."""
    start, cd_size = _zip_directory(fh, size)
    fh.seek(start)
    reader = fh  # a buffered file: small reads are cheap
    left = cd_size
    while left > 0:
        head = reader.read(_CENTRAL.size)
        if len(head) < _CENTRAL.size or head[:4] != b"PK\x01\x02":
            raise ValueError("bad central directory entry")
        fields = _CENTRAL.unpack(head)
        name_len, extra_len, comment_len = fields[12], fields[13], fields[14]
        skip = name_len + extra_len + comment_len
        reader.seek(skip, io.SEEK_CUR)
        left -= _CENTRAL.size + skip
        budget.member()


def _open_zip(path: Path, filename: str, limits: Limits, verify: bool) -> zipfile.ZipFile:
    """Open the zip within bounds; with ``verify``, check every member's CRC."""
    budget = _Budget(path, filename, limits)
    try:
        with open(path, "rb") as raw:
            _count_zip_members(t.cast(t.BinaryIO, raw), path.stat().st_size, budget)
        zf = zipfile.ZipFile(path)
    except InvalidUpload:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        raise InvalidUpload(f"Bad upload: {filename} is not a valid zip archive") from None
    try:
        infos = zf.infolist()
        budget.spend(sum(i.file_size for i in infos))
        if verify:
            for info in infos:
                with zf.open(info) as fh:
                    while fh.read(1 << 20):
                        budget.clock()
    except InvalidUpload:
        zf.close()
        raise
    except Exception:  # noqa: BLE001 - zlib and zipfile raise many kinds for a damaged member
        zf.close()
        raise InvalidUpload(f"Bad upload: {filename} is a damaged zip archive") from None
    return zf


def _read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, filename: str,
                     limits: Limits) -> bytes:
    if info.file_size > limits.metadata:
        raise InvalidUpload(f"Bad upload: {filename} has an oversized {info.filename[:80]}")
    with zf.open(info) as fh:
        return fh.read(limits.metadata + 1)[: limits.metadata]


def _wheel_metadata_member(zf: zipfile.ZipFile, project: str | None) -> zipfile.ZipInfo | None:
    """The wheel's ``<name>-<version>.dist-info/METADATA``: the one named for ``project``."""
    candidates = [i for i in zf.infolist() if _WHEEL_METADATA.fullmatch(i.filename)]
    if project is not None:
        for info in candidates:
            stem = info.filename.split("/")[0][: -len(".dist-info")]
            if canonicalize_name(stem.rpartition("-")[0] or stem) == project:
                return info
    if len(candidates) == 1:
        return candidates[0]  # its Name says which project it really is
    return None


def wheel_metadata(path: Path, filename: str, project: str | None,
                   limits: Limits = DEFAULT_LIMITS, verify: bool = False) -> bytes | None:
    """A wheel's METADATA bytes (None if it has none); InvalidUpload if the zip is bad."""
    try:
        with _open_zip(path, filename, limits, verify) as zf:
            info = _wheel_metadata_member(zf, project)
            return None if info is None else _read_zip_member(zf, info, filename, limits)
    except InvalidUpload:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise InvalidUpload(f"Bad upload: {filename} is a damaged zip archive") from None


def zip_sdist_metadata(path: Path, filename: str, limits: Limits = DEFAULT_LIMITS,
                       verify: bool = False) -> bytes | None:
    """The top-level PKG-INFO of a zip sdist (None if it has none)."""
    try:
        with _open_zip(path, filename, limits, verify) as zf:
            for info in zf.infolist():
                if _TOP_PKG_INFO.fullmatch(info.filename):
                    return _read_zip_member(zf, info, filename, limits)
    except InvalidUpload:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise InvalidUpload(f"Bad upload: {filename} is a damaged zip archive") from None
    return None


_ZERO_BLOCK = bytes(512)
_TAR_REGULAR = (b"0", b"\0", b"7")
_TAR_NO_DATA = (b"1", b"2", b"3", b"4", b"5", b"6")
_TAR_EXTENSION = (b"x", b"g", b"X", b"L", b"K")
_CHECKSUM = struct.Struct("148B8x356B")


class _TarError(ValueError):
    """The tar stream is damaged (a reason for the refusal)."""


def _tar_number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        return -value if field[:1] == b"\xff" else value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise _TarError("a header has an invalid number") from None


def _signed_sum(block: bytes) -> int:
    """The checksum some old tar programs wrote, with signed bytes."""
    values: tuple[int, ...] = _CHECKSUM.unpack(block)
    return sum(v - 256 if v > 127 else v for v in values) + 256


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    out = {}
    pos = 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        space = data.find(b" ", pos)
        if space < 0:
            raise _TarError("a pax header is malformed")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise _TarError("a pax header is malformed") from None
        if length <= space - pos + 1 or pos + length > len(data):
            raise _TarError("a pax header is malformed")
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        out[key] = value
        pos += length
    return out


def _read_exact(fh: t.BinaryIO, size: int) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise _TarError("the archive is cut short")
    return data


def _skip(fh: t.BinaryIO, size: int, budget: _Budget) -> None:
    while size > 0:
        chunk = fh.read(min(size, 1 << 20))
        if not chunk:
            raise _TarError("the archive is cut short")
        size -= len(chunk)
        budget.clock()


def _walk_tar(fh: t.BinaryIO, budget: _Budget, stop_at_pkg_info: bool) -> bytes | None:
    """Read a tar stream header by header; the first top-level PKG-INFO's bytes (or None).

    Bounded: member count, expanded size, extension headers of at most MAX_TAR_HEADER, and
    CPU time. Nothing but the current header is kept in memory.
    """
    pkg_info: bytes | None = None
    long_name: bytes | None = None
    pax: dict[bytes, bytes] = {}
    first = True
    while True:
        block = fh.read(512)
        if len(block) < 512:
            if first:
                raise _TarError("it holds no tar archive")
            raise _TarError("the archive has no end marker")
        if block == _ZERO_BLOCK:
            if first:
                raise _TarError("it holds an empty tar archive")
            return pkg_info
        budget.member()
        try:
            stored = _tar_number(block[148:156])
        except _TarError:
            stored = -1
        if stored != sum(block) - sum(block[148:156]) + 256 and stored != _signed_sum(block):
            raise _TarError("a header has a bad checksum" if not first
                            else "it holds no tar archive")
        first = False
        kind = block[156:157]
        size = _tar_number(block[124:136])
        if size < 0:
            raise _TarError("a header has a negative size")
        padded = (size + 511) // 512 * 512
        if kind in _TAR_EXTENSION:
            if size > MAX_TAR_HEADER:
                raise InvalidUpload(f"Bad upload: {budget.filename} has a tar header of "
                                    f"{size} bytes (at most {MAX_TAR_HEADER})")
            budget.spend(512 + padded)
            data = _read_exact(fh, padded)[:size]
            if kind == b"L":
                long_name = data.split(b"\0", 1)[0]
            elif kind in (b"x", b"X"):
                pax = _pax_records(data)
            elif kind == b"g":
                _pax_records(data)
            continue
        if kind == b"S":
            raise _TarError("it holds a sparse file")
        name = long_name if long_name is not None else block[0:100].split(b"\0", 1)[0]
        if long_name is None and block[257:263] == b"ustar\x00":
            prefix = block[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        if b"path" in pax:
            name = pax[b"path"]
        if b"size" in pax:
            try:
                size = int(pax[b"size"])
            except ValueError:
                raise _TarError("a pax header has an invalid size") from None
            padded = (size + 511) // 512 * 512
        long_name, pax = None, {}
        if kind in _TAR_NO_DATA:
            budget.spend(512)
            continue
        budget.spend(512 + padded)
        text = name.decode("utf-8", "surrogateescape")
        if pkg_info is None and kind in _TAR_REGULAR and _TOP_PKG_INFO.fullmatch(text):
            if size > budget.limits.metadata:
                raise InvalidUpload(f"Bad upload: {budget.filename} has an oversized PKG-INFO")
            pkg_info = _read_exact(fh, padded)[:size]
            if stop_at_pkg_info:
                return pkg_info
            continue
        _skip(fh, padded, budget)


def _gunzip(path: Path) -> t.Any:
    return gzip.open(path, "rb")  # the caller closes it


def tar_metadata(path: Path, filename: str, limits: Limits = DEFAULT_LIMITS,
                 verify: bool = False,
                 opener: t.Callable[[Path], t.Any] | None = None,
                 ) -> bytes | None:
    """The top-level PKG-INFO of a gzip'd tar sdist (None if it has none).

    With ``verify`` the whole archive is read, to its end and the gzip CRC: a cut or corrupt
    file is refused. Without, reading stops at PKG-INFO. ``opener`` decompresses (the index
    also reads legacy .tar.bz2 and .tar.xz files found on disk).
    """
    budget = _Budget(path, filename, limits)
    try:
        with (opener or _gunzip)(path) as fh:
            meta = _walk_tar(t.cast(t.BinaryIO, fh), budget, stop_at_pkg_info=not verify)
            if verify:
                while True:  # the rest of the stream, to its CRC
                    chunk = fh.read(1 << 20)
                    if not chunk:
                        break
                    budget.spend(len(chunk))
                    budget.clock()
            return meta
    except InvalidUpload:
        raise
    except _TarError as exc:
        raise InvalidUpload(f"Bad upload: {filename} is not a valid gzip-compressed tar "
                            f"archive ({exc})") from None
    except Exception:  # noqa: BLE001 - gzip and zlib raise many kinds for a bad stream
        raise InvalidUpload(f"Bad upload: {filename} is not a valid gzip-compressed tar "
                            "archive") from None


# -- the check ---------------------------------------------------------------------------------
def check_file(path: Path, filename: str, limits: Limits = DEFAULT_LIMITS) -> Distribution:
    """The complete uploaded file at ``path`` is what ``filename`` says; what it holds.

    Raises InvalidUpload with the reason.
    """
    dist = check_name(filename)
    if dist.kind == "signature":
        _check_signature(path, filename)
        project, version = dist.readings[0]
        return Distribution(filename, "signature", project, project, str(version), None,
                            None, None)
    if dist.kind == "wheel":
        meta = wheel_metadata(path, filename, dist.project, limits, verify=True)
        if meta is None:
            raise InvalidUpload(f"Bad upload: {filename} has no "
                                f"{dist.project}-{dist.version}.dist-info/METADATA")
        return _matched(filename, dist, meta, "METADATA")
    if dist.archive == "zip":
        pkg_info = zip_sdist_metadata(path, filename, limits, verify=True)
    else:
        pkg_info = tar_metadata(path, filename, limits, verify=True)
    if pkg_info is not None:
        return _matched(filename, dist, pkg_info, "PKG-INFO")
    if not dist.standard:
        raise InvalidUpload(f"Bad upload: {filename} has no PKG-INFO, and a legacy name like "
                            "its own needs one to say its project and version")
    project, version = dist.readings[0]
    return Distribution(filename, "sdist", project, project, str(version), None, None, None)


def _matched(filename: str, dist: DistName, meta: bytes, where: str) -> Distribution:
    """Name and Version in core metadata are a reading of the file name (PEP 503 / PEP 440)."""
    fields = sound_fields(meta)
    if isinstance(fields, str):
        raise InvalidUpload(f"Bad upload: {where} of {filename} {fields}")
    if not any(p == fields.project for p, _v in dist.readings):
        raise InvalidUpload(f"Bad upload: {filename} holds project {fields.name[:80]!r}, "
                            "not the one its name says")
    if (fields.project, fields.version) not in dist.readings:
        raise InvalidUpload(f"Bad upload: {filename} holds version {str(fields.version)[:40]!r}, "
                            "not the one its name says")
    return Distribution(filename, dist.kind, fields.project, fields.name, str(fields.version),
                        meta, fields.requires_python, fields.summary)


def _check_signature(path: Path, filename: str) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(len(_SIG_START))
    if size > MAX_SIGNATURE or head != _SIG_START:
        raise InvalidUpload(f"Bad upload: {filename} is not an ASCII-armored signature")
