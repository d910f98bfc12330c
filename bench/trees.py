"""Package trees for the benchmark: real wheels and sdists, and nginx's static PEP 503 pages."""

from __future__ import annotations

import hashlib
import html
import os
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pkgfactory import make_sdist, make_wheel  # noqa: E402

BIG_PROJECT = "bigproject"        # the project with 300 files
WHEEL_PROJECT = "wheel100k"       # one ~100 KB wheel
SDIST_PROJECT = "sdist10m"        # one ~10 MB sdist
SCALE_PROJECT = "scaletarget"     # the project asked for in the scaling trees (10 files)
SMALL_PREFIX = "benchpkg"


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Tree:
    """A flat packages directory, and what the benchmark asks of it."""

    packages: Path
    projects: int
    files: int
    names: dict[str, str] = field(default_factory=dict)  # role -> file name or project


def _incompressible(size: int, seed: int) -> bytes:
    """Deterministic bytes that neither zip nor gzip can shrink."""
    return random.Random(seed).randbytes(size)


def main_tree(base: Path) -> Tree:
    """1,000 projects: one with 300 files, one 100 KB wheel, one 10 MB sdist, 997 small ones."""
    pkgs = base / "packages"
    pkgs.mkdir(parents=True)
    for i in range(150):
        make_wheel(pkgs, BIG_PROJECT, f"1.{i}.0")
        make_sdist(pkgs, BIG_PROJECT, f"1.{i}.0")
    wheel = make_wheel(pkgs, WHEEL_PROJECT, "1.0", payload=_incompressible(100_000, 1))
    sdist = make_sdist(pkgs, SDIST_PROJECT, "1.0", payload=_incompressible(10_000_000, 2))
    for i in range(1, 998):
        make_wheel(pkgs, f"{SMALL_PREFIX}-{i:04d}", "1.0")
    files = sum(1 for _ in pkgs.iterdir())
    return Tree(pkgs, projects=1000, files=files,
                names={"big": BIG_PROJECT, "wheel": wheel.name, "sdist": sdist.name})


def small_projects(count: int) -> list[str]:
    """Names of ``count`` single-wheel projects of the main tree (for pip download)."""
    return [f"{SMALL_PREFIX}-{i:04d}" for i in range(1, count + 1)]


def scaling_tree(base: Path, files: int) -> Tree:
    """``files`` wheels in all: the 10 of SCALE_PROJECT plus filler projects of 10 files each."""
    pkgs = base / "packages"
    pkgs.mkdir(parents=True)
    for v in range(10):
        make_wheel(pkgs, SCALE_PROJECT, f"1.{v}")
    filler = files - 10
    for i in range(filler):
        make_wheel(pkgs, f"filler-{i // 10:05d}", f"1.{i % 10}")
    return Tree(pkgs, projects=1 + (filler + 9) // 10, files=files, names={"big": SCALE_PROJECT})


def upload_files(base: Path, count: int) -> list[Path]:
    """``count`` distinct small wheels to upload."""
    base.mkdir(parents=True)
    return [make_wheel(base, f"uploaded-{i:04d}", "1.0") for i in range(count)]


def _project_of(filename: str) -> str:
    """The project of a file name written by pkgfactory (wheel or sdist)."""
    if filename.endswith(".whl"):
        return normalize(filename.split("-")[0])
    return normalize(filename[: -len(".tar.gz")].rsplit("-", 1)[0])


def static_index(tree: Tree, dest: Path) -> Path:
    """Write ``dest/simple/`` PEP 503 pages for nginx, links to ``/packages/<file>#sha256=``."""
    projects: dict[str, list[str]] = {}
    for entry in sorted(os.listdir(tree.packages)):
        projects.setdefault(_project_of(entry), []).append(entry)
    simple = dest / "simple"
    simple.mkdir(parents=True)
    links = "".join(f'<a href="{p}/">{p}</a><br>\n' for p in sorted(projects))
    (simple / "index.html").write_text(
        "<!DOCTYPE html>\n<html><head><title>Simple Index</title></head><body>\n"
        f"{links}</body></html>\n")
    for project, files in projects.items():
        rows = []
        for name in files:
            digest = hashlib.sha256((tree.packages / name).read_bytes()).hexdigest()
            quoted = html.escape(name)
            rows.append(f'<a href="../../packages/{quoted}#sha256={digest}">{quoted}</a><br>\n')
        page = simple / project
        page.mkdir()
        (page / "index.html").write_text(
            f"<!DOCTYPE html>\n<html><head><title>Links for {project}</title></head><body>\n"
            f"<h1>Links for {project}</h1>\n{''.join(rows)}</body></html>\n")
    return dest
