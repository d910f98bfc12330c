"""Every pinned runtime package installs on Alpine (musl) without a compiler."""

from __future__ import annotations

import re
import sys

import pytest
from conftest import ROOT, run

PYTHON = re.search(r"python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text()).group(1)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_lock_has_musllinux_wheels_or_pure_python(tmp_path, arch):
    """pip download --only-binary=:all: for the image's Python on musllinux, from PyPI."""
    result = run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                  "--only-binary=:all:", "--require-hashes",
                  "--platform", f"musllinux_1_2_{arch}", "--python-version", PYTHON,
                  "--implementation", "cp", "-d", str(tmp_path), "-r", str(ROOT / "requirements.lock")])
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = [p.name for p in tmp_path.iterdir()]
    assert all(name.endswith(".whl") for name in wheels)
    for name in wheels:
        tag = name.rsplit("-", 1)[-1]
        assert tag == "any.whl" or arch in tag, name
