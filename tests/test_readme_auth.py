"""Every command of README's Authentication section, run as written (the seed's included)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from conftest import ROOT, clean_env
from support import FAKES, run_in_pty
from test_makefiles import copy_build_files

PROMPTING = re.compile(r"htpasswd (-c -B )?auth/htpasswd|adduser")


def auth_section_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Authentication", 1)[1].split("\n### ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                commands.append(line)
    return commands


def test_readme_lists_the_seed_commands():
    commands = auth_section_commands()
    assert "[ ! -f auth/htpasswd ] && htpasswd -c -B auth/htpasswd <username>" in commands
    assert "htpasswd auth/htpasswd <username>" in commands


def test_every_auth_command_works_as_written(tmp_path):
    repo = copy_build_files(tmp_path / "repo")
    (repo / ".venv").symlink_to(ROOT / ".venv")
    # As inside `make -C auth interact`: `htpasswd` is the auth image's bcrypt-by-default wrapper.
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "htpasswd").symlink_to(ROOT / "auth" / "htpasswd-bcrypt.sh")
    env = clean_env(PATH=f"{tools}:{FAKES}:{os.environ['PATH']}", PYTHONPATH=str(repo),
                    FAKE_DOCKER_LOG=str(tmp_path / "docker.jsonl"), HTPASSWD_COST="5",
                    HTPASSWD_REAL=shutil.which("htpasswd", path="/usr/bin:/usr/sbin") or "htpasswd",
                    PYPI_BCRYPT_COST="5")
    last_added = None
    ran = []
    for number, command in enumerate(auth_section_commands()):
        user = f"user{number}"
        if "deluser" in command:
            user = last_added
        elif PROMPTING.search(command):
            last_added = user
        line = command.replace("<username>", user).replace("USER=<name>", f"USER={user}")
        if "make -C auth adduser" in line:
            line += " COST=5"
        script = [("password:", "pw\n"), ("password:", "pw\n")] if PROMPTING.search(command) else []
        code, out = run_in_pty(["sh", "-c", line], script, env=env, cwd=str(repo))
        assert code == 0, f"{line!r} failed:\n{out}"
        ran.append(line)
    htp = repo / "auth" / "htpasswd"
    entries = dict(line.split(":", 1) for line in htp.read_text().splitlines())
    assert entries and all(h.startswith("$2y$") for h in entries.values()), entries
    assert any("install" in c for c in ran)
    calls = (tmp_path / "docker.jsonl").read_text()
    assert "install-htpasswd" in calls
    verify = subprocess.run(["htpasswd", "-vb", str(htp), next(iter(entries)), "pw"], capture_output=True)
    assert verify.returncode == 0
