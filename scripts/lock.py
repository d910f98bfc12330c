"""Compile requirements*.in into hash-pinned lock files with uv (``make lock``)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = """\
# requirements.lock: the one pinned set of runtime dependencies, with hashes.
# The image (Dockerfile), `make dev` and the test suite all install this file with
# `pip install --require-hashes`. Change versions in requirements.in, then `make lock`.
#
# Why libpass + bcrypt 5: passlib 1.7.4 is unmaintained and breaks against bcrypt 5
# (`import passlib.apache` fails), and logs a traceback with bcrypt 4.1-4.3. libpass is
# passlib's maintained fork (it installs the same `passlib` module). bcrypt 5 refuses
# passwords over 72 bytes, so the server cuts every password at 72 bytes before checking,
# exactly as Apache's htpasswd does when it writes the hash (pypibox/htpasswd.py).
# Every package here is pure Python or has musllinux wheels for x86_64 and aarch64, so the
# Alpine image needs no compiler (tests/test_lock.py checks it).
"""
COMPILE = ["uv", "pip", "compile", "--universal", "--python-version", "3.11",
           "--generate-hashes", "--no-header", "--quiet"]


# A pin, with the extras the test lock keeps (``name[extra]==version``).
PIN = r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?=="
PIN_START = r"(?m)^(?=[A-Za-z0-9_.-]+(?:\[[^\]]*\])?==)"  # no group: re.split keeps groups


def _names(lock: str) -> set[str]:
    return {m.group(1).lower() for m in re.finditer("^" + PIN, lock, re.MULTILINE)}


def _drop(lock: str, names: set[str]) -> str:
    blocks = re.split(PIN_START, lock)
    return "".join(b for b in blocks if not (m := re.match(PIN, b))
                   or m.group(1).lower() not in names)


def main() -> int:
    runtime = ROOT / "requirements.lock"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runtime.txt"
        subprocess.run(COMPILE + ["requirements.in", "-o", str(out)], cwd=ROOT, check=True)
        runtime.write_text(HEADER + out.read_text())
        full = Path(tmp) / "test.txt"
        # Extras stay on the test pins: pip's --require-hashes mode takes a requirement with
        # extras (pdm's hishel[httpx2]>=1.4.0) as unpinned unless the pin names them too, and
        # then wants the newest release (pip issue 9644).
        subprocess.run(COMPILE + ["--no-strip-extras", "requirements-test.in",
                                  "-c", "requirements.lock", "-o", str(full)], cwd=ROOT, check=True)
        test = _drop(full.read_text(), _names(runtime.read_text()))
        (ROOT / "requirements-test.lock").write_text(
            "# requirements-test.lock: test tools, installed with requirements.lock.\n"
            "# Pins shared with requirements.lock live there only. Regenerate: make lock\n" + test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
