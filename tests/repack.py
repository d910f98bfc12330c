"""Wheels of distributions installed in the test venv, for a local index to serve.

Build backends (hatchling, flit_core, poetry-core, setuptools) and client tools must come from
somewhere when a tool builds in isolation or a README command says ``pip install``; in the
tests that somewhere is a server on 127.0.0.1, never the public index. This packs the files an
installed distribution's ``RECORD`` lists back into a wheel with the same tags.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Files pip adds at install time: they belong to this installation, not to the wheel.
_INSTALL_ONLY = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


def _dist(name: str) -> metadata.Distribution:
    return metadata.distribution(name)


def repack(name: str, dest: Path) -> Path:
    """Write the wheel of installed distribution ``name`` into ``dest``; return its path."""
    dist = _dist(name)
    meta = next(f for f in dist.files or []
                if f.name == "METADATA" and f.parent.name.endswith(".dist-info"))
    info = Path(str(dist.locate_file(meta))).parent  # the .dist-info folder
    site = info.parent
    wheel_meta = (info / "WHEEL").read_text()
    tags = [line.split(":", 1)[1].strip() for line in wheel_meta.splitlines()
            if line.startswith("Tag:")]
    if not tags:
        raise ValueError(f"{name}: no Tag in {info / 'WHEEL'}")
    generated = {ep.name for ep in dist.entry_points
                 if ep.group in ("console_scripts", "gui_scripts")}
    data_dir = info.name.removesuffix(".dist-info") + ".data"
    files: dict[str, bytes] = {}
    for row in csv.reader(io.StringIO((info / "RECORD").read_text())):
        rel = row[0]
        if "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        if rel.startswith(".."):
            script = Path(rel)
            if script.parent.name != "bin" or script.name in generated:
                continue  # pip writes entry-point scripts itself at install time
            path = (site / rel).resolve()
            body = path.read_bytes() if path.is_file() else b"#!"
            if not body.startswith(b"#!"):  # a program shipped as is (uv's binary)
                files[f"{data_dir}/scripts/{script.name}"] = body
            continue  # a "#!" script names this venv's python: not for elsewhere
        if rel.startswith(info.name + "/") and rel.split("/", 1)[1] in _INSTALL_ONLY:
            continue
        path = site / rel
        if path.is_file():
            files[rel] = path.read_bytes()
    record = []
    for rel, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    record.append(f"{info.name}/RECORD,,")
    files[f"{info.name}/RECORD"] = ("\n".join(record) + "\n").encode()
    dist_name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    tag = _compress_tags(tags)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{dist_name}-{dist.version}-{tag}.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files.items():
            entry = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            # pip keeps the executable bit of a file in .data/scripts (uv's binary needs it)
            entry.external_attr = (0o100755 if rel.startswith(f"{data_dir}/scripts/") else 0o100644) << 16
            zf.writestr(entry, data)
    return out


def _compress_tags(tags: list[str]) -> str:
    """``py2-none-any`` + ``py3-none-any`` -> ``py2.py3-none-any`` (the wheel's file-name tag)."""
    parts = [tag.split("-") for tag in tags]
    return "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))


def with_requirements(names: list[str]) -> list[str]:
    """``names`` and every distribution they require (for this Python), each once."""
    seen: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = canonicalize_name(name)
        if key in seen:
            continue
        dist = _dist(name)
        seen[key] = dist.metadata["Name"]
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def repack_all(names: list[str], dest: Path) -> list[Path]:
    """Wheels of ``names`` and of everything they require, into ``dest``."""
    return [repack(name, dest) for name in with_requirements(names)]
