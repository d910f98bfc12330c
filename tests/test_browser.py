"""tests/browser.py finds a real browser and passes over Ubuntu's snap launchers."""

from __future__ import annotations

import subprocess

from browser import browser_path, is_snap_stub


def test_snap_launchers_are_passed_over_and_real_programs_kept(tmp_path):
    stub = tmp_path / "chromium-browser"
    stub.write_text('#!/bin/sh\nexec /usr/bin/snap run chromium "$@"\n')
    real = tmp_path / "chromium"
    real.write_text("#!/bin/sh\necho Chromium 140\n")
    assert is_snap_stub(str(stub))
    assert not is_snap_stub(str(real))


def test_this_machine_has_a_browser_that_answers():
    path = browser_path()
    assert path is not None, "no Chromium or Chrome (.ci/run installs Debian's chromium)"
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60,
                             check=False)
    assert "Chrom" in version.stdout, version.stdout + version.stderr
