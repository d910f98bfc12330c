"""README's "Quick start without Docker", pasted as written into a fresh shell, in order.

The block's commands run in one bash, as a person pasting them would (``export`` and ``cd``
carry over), in a copy of the repository, with a fresh HOME and a PATH without the test venv.
What stands in for the outside world:

- the public index that ``pip install uv twine`` reaches is a second server on 127.0.0.1
  holding wheels of uv, twine and their dependencies packed from the test venv (repack.py),
  given to pip as ``PIP_INDEX_URL``; HTTP(S)_PROXY points at a trap that fails the test on any
  request off 127.0.0.1 (clienttools.Trap);
- ``.venv`` is a link to the suite's own, made from the same lock by ``make test``, so that
  ``make venv`` finds it up to date (the test stops rather than let it rebuild a shared venv);
- port 8080 is a free port: the test replaces ``8080`` in the commands and sets
  ``PYPI_PORT``, which ``make dev`` and ``python -m pypibox healthcheck`` both read;
- the server ``make dev`` starts sends names it lacks to the stand-in (``PYPI_FALLBACK_URL``),
  not to the public index: the newcomer's pip asks it for a newer pip after each install.

``make dev`` runs in the background exactly as the block says; the test ends it and the server
(one process group) afterwards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clienttools import Trap, upload
from conftest import PASSWORD, ROOT, free_port, make_server
from repack import repack_all
from test_makefiles import copy_build_files

SECTION = "## Quick start without Docker"


def quickstart_commands() -> list[str]:
    """The commands of the section's sh block, comments dropped, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    section = text.split(SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line:
            commands.append(line)
    return commands


def test_readme_quickstart_has_the_whole_path():
    commands = quickstart_commands()
    joined = "\n".join(commands)
    for step in ("make venv", "--password-stdin", "make dev", "python3 -m venv", "pip install uv",
                 "uv init --lib", "uv build", "twine upload", "--index-url", "import pypibox_demo"):
        assert step in joined, step
    assert commands.index("make venv") < next(i for i, c in enumerate(commands) if "make dev" in c)


@pytest.fixture
def public(tmp_path):
    """The public index's stand-in, holding the client tools README installs."""
    server = make_server(tmp_path / "public", {"alice": PASSWORD}, PYPI_FALLBACK="off").start()
    upload(server, repack_all(["uv", "twine"], tmp_path / "wheels"))
    yield server
    server.stop()


def fresh_repo(dest: Path) -> Path:
    repo = copy_build_files(dest)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    stamp = ROOT / ".venv" / ".installed"
    if stamp.exists():  # a copy is as new as its files: make it no newer than the venv it links
        then = stamp.stat().st_mtime - 1
        os.utime(repo / "requirements.lock", (then, then))
    fresh = subprocess.run(["make", "-q", "venv"], check=False, cwd=repo, capture_output=True)
    if fresh.returncode != 0:
        pytest.fail(f"{ROOT / '.venv'} is older than requirements.lock: run make test-env first")
    return repo


def test_every_quickstart_command_works_pasted_in_order(public, tmp_path):
    repo = fresh_repo(tmp_path / "repo")
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    trap = Trap()
    venv_bin = str(Path(sys.executable).parent)
    path = ":".join(p for p in os.environ["PATH"].split(":") if p and p != venv_bin)
    env = {"HOME": str(home), "PATH": path, "LANG": os.environ.get("LANG", "C.UTF-8"),
           "PIP_INDEX_URL": public.url + "/simple/", "PIP_CONFIG_FILE": os.devnull,
           "PYPI_PORT": str(port), "PYPI_FALLBACK_URL": public.url + "/simple/",
           "TMPDIR": str(tmp_path), **trap.env()}
    commands = [c.replace("8080", str(port)) for c in quickstart_commands()]
    script = ("set -e\n"
              "trap 'echo \"README command failed: $BASH_COMMAND\" >&2' ERR\n"
              + "\n".join(commands) + "\n")
    transcript = tmp_path / "transcript.txt"  # a file, not a pipe: `make dev &` inherits it
    with open(transcript, "wb") as handle:
        proc = subprocess.Popen(["bash", "-xc", script], cwd=repo, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        proc.wait(timeout=480)
    finally:
        stop_group(proc.pid)
        trap.close()
    output = transcript.read_text(errors="replace")
    log = repo / "data" / "dev.log"
    assert proc.returncode == 0, output + "\n--- data/dev.log:\n" + (
        log.read_text() if log.exists() else "(none)")
    said = [line for line in output.splitlines() if not line.startswith("+")]  # bash -x
    assert said[-1] == "Hello from pypibox-demo!", output
    assert not trap.hits, f"a README command tried to reach the internet: {trap.hits}"
    stored = sorted(p.name for p in (repo / "data" / "packages").iterdir()
                    if not p.name.startswith("."))
    assert stored == ["pypibox_demo-0.1.0-py3-none-any.whl", "pypibox_demo-0.1.0.tar.gz"]
    assert (repo / "auth" / "htpasswd").read_text().startswith("alice:$2")
    assert (home / ".venvs" / "pypi-clients" / "bin" / "uv").exists()


def stop_group(pgid: int) -> None:
    """End the bash, the background ``make dev`` and the server it started: one group."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


# The seed README's commands and settings, which README keeps (they still work as written:
# test_readme_auth.py and test_clients_publish.py/test_clients_install.py run them).
SEED = [
    "[ ! -f auth/htpasswd ] && htpasswd -c -B auth/htpasswd <username>",
    "htpasswd auth/htpasswd <username>",
    "make -C auth interact",
    "make run",
    "[distutils]\nindex-servers =\n  <servername>\n\n[<servername>]\nrepository=<url>\n"
    "username=<username>\npassword=<password>",
    "python3 setup.py register -r <servername>",
    "python3 setup.py sdist upload -r <servername>",
    "[global]\nextra-index-url=<url>/simple/",
    "pip3 install --user <package>",
]


def test_readme_keeps_the_seed_commands():
    text = (ROOT / "README.md").read_text()
    missing = [command for command in SEED if command not in text]
    assert not missing, missing
