"""The images built from the unchanged Dockerfiles, and what their build contexts hold."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import PASSWORD, add_user

from .harness import AUTH_IMAGE, IMAGE, copy_repo
from .standin import base_images

pytestmark = [pytest.mark.container, pytest.mark.timeout(1200)]

PROBE = "ARG BASE\nFROM ${BASE}\nCOPY . /ctx/\n"


def test_images_are_built_with_their_settings(session):
    """Both images exist with the user, health check and entrypoint the Dockerfile gives."""
    print("\n".join(session.report))
    config = json.loads(session.engine.docker("image", "inspect", "--format", "{{json .Config}}",
                                              IMAGE).stdout)
    assert config["User"] == "9898:9898"
    assert config["Entrypoint"] == ["python", "-m", "pypibox"]
    assert config["Healthcheck"]["Test"][-1] == "healthcheck"
    assert "8080/tcp" in config["ExposedPorts"]
    assert "/data/packages" in config["Volumes"]
    made = session.engine.docker("run", "--rm", "--network", "none", AUTH_IMAGE,
                                 "htpasswd", "-nb", "zed", "pw").stdout
    assert made.startswith("zed:$2y$12$"), made


def _context_files(engine, context: Path, base: str) -> set[str]:
    """Build a probe image that copies the whole context, as the real build sends it."""
    (context / "Dockerfile.probe").write_text(PROBE)
    tag = f"pypibox-test/probe-{context.name}:latest".lower()
    engine.docker("build", "-q", "-f", "Dockerfile.probe", "--build-arg", f"BASE={base}",
                  "-t", tag, ".", cwd=context)
    try:
        found = engine.docker("run", "--rm", "--network", "none", tag,
                              "find", "/ctx", "-mindepth", "1").stdout.split()
    finally:
        engine.docker("rmi", "-f", tag, check=False)
    return {path.removeprefix("/ctx/") for path in found}


def test_build_contexts_keep_out_accounts_git_tests_and_venv(engine, tmp_path):
    """Only the lock file and the package reach the server build, only the helper scripts the
    auth build; never auth/htpasswd (or roles, tokens), .git, tests, .venv, caches or data."""
    repo = copy_repo(tmp_path / "repo")
    add_user(repo / "auth" / "htpasswd", "alice", PASSWORD)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for junk in (".venv/bin/python", "pypibox/__pycache__/settings.cpython-313.pyc",
                 "data/packages/secret-1.0.tar.gz", "auth/htpasswd.bak", "auth/tokens",
                 "auth/roles", "auth/netrc"):
        (repo / junk).parent.mkdir(parents=True, exist_ok=True)
        (repo / junk).write_text("must not reach the engine\n")
    assert (repo / "tests" / "conftest.py").exists()
    bases = base_images()

    server = _context_files(engine, repo, bases["PYTHON_BASE"])
    package = {p.relative_to(repo).as_posix() for p in (repo / "pypibox").glob("*.py")}
    assert server - {"pypibox"} == {"requirements.lock"} | package
    for path in server:
        assert not path.startswith(("auth", ".git", "tests", ".venv", "data")), path
        assert "__pycache__" not in path and not path.endswith(".pyc"), path

    auth = _context_files(engine, repo / "auth", bases["ALPINE_BASE"])
    assert auth == {"htpasswd-bcrypt.sh", "check-htpasswd.sh", "install-htpasswd.sh",
                    "check-teams.sh", "install-file.sh"}


def test_server_image_app_holds_only_the_package(engine):
    files = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "find", IMAGE,
                          "/app", "-type", "f").stdout.split()
    names = {f.removeprefix("/app/") for f in files}
    assert {"pypibox/__init__.py", "pypibox/__main__.py", "pypibox/settings.py"} <= names
    assert all(n.startswith("pypibox/") and n.endswith(".py") for n in names), names
    top = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "ls", IMAGE,
                        "-a", "/app").stdout.split()
    assert set(top) - {".", ".."} == {"pypibox"}
