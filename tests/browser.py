"""The headless browser of this machine: Debian's chromium, or the Chrome or Chromium a GitHub
Ubuntu runner comes with (``/usr/bin/chromium`` and ``chromium-browser`` link to a Chromium
build there, ``google-chrome`` is Chrome). Ubuntu's own chromium packages are stubs that start
the snap, which CI machines do not run: those are passed over. ``PYPIBOX_BROWSER`` names one
explicitly.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def is_snap_stub(path: str) -> bool:
    """A launcher that only hands over to snap (Ubuntu's chromium and chromium-browser debs)."""
    real = Path(path).resolve()
    if str(real).startswith("/snap/") or real.name == "snap":
        return True
    try:
        with open(real, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return True
    return head.startswith(b"#!") and b"snap" in head


@functools.cache
def browser_path() -> str | None:
    """The first candidate that exists, is no snap stub and answers ``--version``."""
    named = os.environ.get("PYPIBOX_BROWSER")
    for name in ([named] if named else CANDIDATES):
        path = shutil.which(name)
        if path is None or is_snap_stub(path):
            continue
        try:
            probe = subprocess.run([path, "--version"], capture_output=True, text=True,
                                   timeout=60, stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return path
    return None


def headless(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the browser headless as root in CI would, with a new profile and no network of its
    own (no sync, component updates or background requests)."""
    exe = browser_path()
    if exe is None:
        pytest.fail("no Chromium or Chrome: apt-get install chromium on Debian (.ci/run does); "
                    f"looked for {', '.join(CANDIDATES)} (PYPIBOX_BROWSER names another)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
            env={**os.environ, "HOME": profile}, check=False)
