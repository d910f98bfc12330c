"""Helpers of the container tests: make against the test engine, repository copies, a
terminal for interactive targets, uploads to a running container."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from conftest import PASSWORD, basic, clean_env, free_port, http, run
from pkgfactory import make_wheel
from support import Terminal, twine_upload, upload_form

from .engine import Engine

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "pypibox-test/server:session"
AUTH_IMAGE = "pypibox-test/auth:session"


def unique(prefix: str) -> str:
    """A name no other test uses: containers, volumes, image tags."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def copy_repo(dest: Path) -> Path:
    """The repository as a fresh clone would have it (tracked and new, not ignored files)."""
    listed = subprocess.run(["git", "-c", "safe.directory=*", "ls-files", "-z", "--cached",
                             "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def _home_env(home: Path | None) -> dict[str, str]:
    return {"HOME": str(home), "DOCKER_CONFIG": str(home / ".docker")} if home else {}


def make(engine: Engine, *args: str, cwd: Path, as_user: int | None = None,
         home: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``make args`` in ``cwd`` against the test engine; as uid/gid ``as_user`` when given."""
    env = engine.env(**_home_env(home))
    cmd = ["make", "--no-print-directory", *args]
    if as_user is not None:
        cmd = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", "--", *cmd]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def out(res: subprocess.CompletedProcess) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"


def make_terminal(engine: Engine, *args: str, cwd: Path, as_user: int | None = None,
                  home: Path | None = None) -> Terminal:
    env = engine.env(TERM="dumb", **_home_env(home))
    cmd = ["make", "--no-print-directory", *args]
    if as_user is not None:
        cmd = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", "--", *cmd]
    return Terminal(cmd, cwd, env)


def upload_status(url: str, path: Path, user: str, password: str = PASSWORD) -> int:
    body, ct = upload_form(path.name, path.read_bytes())
    return http("POST", url + "/", data=body,
                headers={"Content-Type": ct, "Authorization": basic(user, password)}).status


@dataclass
class Deployment:
    """What ``make run`` set up from a copy of the repository: names, port, the copy."""

    engine: Engine
    repo: Path
    container: str
    volume: str
    auth_volume: str
    port: int
    image: str = IMAGE
    auth_image: str = AUTH_IMAGE

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def vars(self) -> list[str]:
        return [f"PORT={self.port}", f"CONTAINER={self.container}", f"VOLUME={self.volume}",
                f"AUTH_VOLUME={self.auth_volume}", f"IMAGE={self.image}",
                f"AUTH_IMAGE={self.auth_image}"]

    def make(self, *args: str, **kw) -> subprocess.CompletedProcess:
        """``make args`` in the copy with this deployment's names; auth/ targets too."""
        names = self.vars if not args or args[:2] != ("-C", "auth") else \
            [f"AUTH_VOLUME={self.auth_volume}", f"AUTH_IMAGE={self.auth_image}"]
        return make(self.engine, *args, *names, cwd=self.repo, **kw)

    def run(self) -> str:
        res = self.make("run")
        assert res.returncode == 0, out(res)
        return res.stdout

    def inspect(self, fmt: str) -> str:
        return self.engine.docker("inspect", "--format", fmt, self.container).stdout.strip()

    def exec(self, *cmd: str, user: str | None = None, check: bool = False):
        return self.engine.docker("exec", *(["-u", user] if user else []), self.container, *cmd,
                                  check=check)

    def upload_new(self, tmp: Path, user: str = "alice", password: str = PASSWORD) -> Path:
        """Upload a fresh wheel with twine; its local path."""
        wheel = make_wheel(tmp / unique("dist"), unique("pkg"), "1.0")
        res = twine_upload(self.url, [wheel], user, password)
        assert res.returncode == 0, res.stdout + res.stderr
        return wheel

    def remove(self) -> None:
        self.engine.docker("rm", "-f", self.container, check=False)
        self.engine.docker("volume", "rm", "-f", self.volume, self.auth_volume, check=False)


def pip_install(url: str, venv: Path, requirement: str) -> subprocess.CompletedProcess:
    """pip into a fresh venv through --extra-index-url, the way the README tells users."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=clean_env())
    return run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps",
                "--extra-index-url", url + "/simple/", requirement])


__all__ = ["Deployment", "IMAGE", "AUTH_IMAGE", "Terminal", "copy_repo", "free_port", "make",
           "make_terminal", "out", "pip_install", "twine_upload", "unique", "upload_status"]
