"""Build small, real distributions (wheel and sdist) for tests, without network or build tools."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
import zipfile
from pathlib import Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def metadata(name: str, version: str, requires: list[str] | None = None,
             requires_python: str | None = None, summary: str = "A test package",
             description: str = "", content_type: str = "") -> str:
    """Core metadata text (Metadata-Version 2.1), the description as its body."""
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Summary: {summary}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    if content_type:
        lines.append(f"Description-Content-Type: {content_type}")
    lines += [f"Requires-Dist: {r}" for r in requires or []]
    return "\n".join(lines) + "\n\n" + description


def module_source(name: str, version: str) -> str:
    return f'"""Test module of {name}."""\n__version__ = "{version}"\nNAME = "{name}"\n'


def make_wheel(dest: Path, name: str, version: str, requires: list[str] | None = None,
               requires_python: str | None = None, module: str | None = None,
               payload: bytes = b"", filename: str | None = None, build: str | None = None,
               summary: str = "A test package", description: str = "",
               content_type: str = "") -> Path:
    """Write ``<dest>/<name>-<version>[-<build>]-py3-none-any.whl`` with one module (or
    ``<dest>/<filename>``); return its path. ``description`` is its long description,
    of ``content_type`` (text/markdown, text/x-rst, text/plain)."""
    dist = _norm(name)
    module = module or dist
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": module_source(name, version).encode(),
        f"{info}/METADATA": metadata(name, version, requires, requires_python, summary,
                                     description, content_type).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: pkgfactory\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n",
        f"{info}/top_level.txt": f"{module}\n".encode(),
    }
    if payload:
        files[f"{module}/payload.bin"] = payload
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    tag = f"-{build}" if build else ""
    out = dest / (filename or f"{dist}-{version}{tag}-py3-none-any.whl")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return out


def make_sdist(dest: Path, name: str, version: str, module: str | None = None,
               requires_python: str | None = None, payload: bytes = b"",
               filename: str | None = None, top: str | None = None, fmt: str = "tar.gz",
               pkg_info: bool = True, summary: str = "A test package") -> Path:
    """Write ``<dest>/<name>-<version>.tar.gz`` (or ``.zip``, or ``<dest>/<filename>``, e.g. a
    legacy name) with a setup.py that builds with setuptools; ``top`` is its top directory."""
    dist = _norm(name)
    module = module or re.sub(r"\W", "_", dist)
    base = top or (filename.rsplit(".tar.gz", 1)[0].rsplit(".zip", 1)[0] if filename
                   else f"{dist}-{version}")
    files = {
        f"{base}/PKG-INFO": metadata(name, version, None, requires_python, summary).encode(),
        f"{base}/setup.py": (
            "from setuptools import setup\n"
            f"setup(name={name!r}, version={version!r}, packages=[{module!r}])\n").encode(),
        f"{base}/{module}/__init__.py": module_source(name, version).encode(),
    }
    if not pkg_info:
        del files[f"{base}/PKG-INFO"]
    if payload:
        files[f"{base}/{module}/payload.bin"] = payload
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / (filename or f"{dist}-{version}.{fmt}")
    if fmt == "zip":
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path, data in files.items():
                zf.writestr(path, data)
        return out
    with tarfile.open(out, "w:gz") as tf:
        for path, data in files.items():
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    return out
