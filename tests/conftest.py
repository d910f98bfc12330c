"""Shared fixtures: a real server process on a free 127.0.0.1 port, accounts, packages."""

from __future__ import annotations

import base64
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# The client tests' fixtures (trap, indexes, user): one plugin for every test module.
pytest_plugins = ["clienttools"]

TEST_COST = 5  # bcrypt cost for test accounts: fast; the server accepts any cost.
PASSWORD = "s3cret-Pa55"

# Under `make test` these say "a sub-make": every make a test runs would then print
# "Entering directory" lines and inherit our flags. A test sees what a user's shell sees.
for _var in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "MAKE_TERMOUT",
             "MAKE_TERMERR"):
    os.environ.pop(_var, None)


#: Ports for the servers a test starts: below the kernel's ephemeral range (32768 and up),
#: so that no outgoing connection takes a port between its pick and the server's bind; a
#: block of 4000 for each xdist worker, walked from a random start.
_PORT_BASE = 20000 + 4000 * (int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0) % 3)
_next_port = itertools.count(random.randrange(4000))


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, and that this process was not
    given in its last 4000 calls."""
    for _ in range(4000):
        port = _PORT_BASE + next(_next_port) % 4000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {_PORT_BASE}-{_PORT_BASE + 3999}")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any PYPI_* or PIP_* settings of the machine, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYPI_", "PIP_", "UV_", "TWINE_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1", UV_NO_CONFIG="1")
    env.update(extra)
    return env


def htpasswd_bin() -> str:
    path = shutil.which("htpasswd")
    if path is None:
        pytest.fail("Apache's htpasswd is missing: apt-get install apache2-utils (.ci/run does)")
    return path


def add_user(path: Path, user: str, password: str, cost: int = TEST_COST) -> None:
    """Add a user with Debian's real ``htpasswd -B``."""
    flags = "-bB" if path.exists() else "-cbB"
    subprocess.run([htpasswd_bin(), flags, "-C", str(cost), str(path), user, password],
                   check=True, capture_output=True)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 30) -> Response:
    """One HTTP exchange that returns error statuses instead of raising; no redirects followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # noqa: D102
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=timeout) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


@dataclass
class Server:
    """A running ``python -m pypibox`` with its own directories."""

    port: int
    packages: Path
    htpasswd: Path
    log: Path
    proc: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kw) -> Response:
        return http("GET", self.url + path, **kw)

    def logtext(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def start(self, wait: bool = True) -> Server:
        env = clean_env(
            PYPI_HOST="127.0.0.1", PYPI_PORT=str(self.port),
            PYPI_PACKAGES_DIR=str(self.packages), PYPI_HTPASSWD=str(self.htpasswd),
            PYTHONPATH=str(ROOT), **self.env)
        handle = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "pypibox"], env=env, cwd=ROOT,
                                     stdout=handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        handle.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.logtext()}")
            try:
                if self.get("/health", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.logtext()}")


def make_server(tmp_path: Path, users: dict[str, str] | None = None, **env: str) -> Server:
    """A configured but not yet started server with ``users`` in a real htpasswd file."""
    base = tmp_path / f"srv-{free_port()}"
    packages = base / "packages"
    packages.mkdir(parents=True)
    auth = base / "auth"
    auth.mkdir()
    htp = auth / "htpasswd"
    for user, password in (users if users is not None else {"alice": PASSWORD}).items():
        add_user(htp, user, password)
    return Server(port=free_port(), packages=packages, htpasswd=htp, log=base / "server.log", env=env)


@pytest.fixture
def server_factory(tmp_path):
    """Start servers with custom settings; all are stopped at the end of the test."""
    started: list[Server] = []

    def start(users: dict[str, str] | None = None, **env: str) -> Server:
        srv = make_server(tmp_path, users, **env)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        if srv.proc is not None:
            srv.stop()


@pytest.fixture
def server(server_factory) -> Server:
    """A server with the default settings and one user, alice."""
    return server_factory()


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; the environment is clean_env() unless given."""
    kw.setdefault("env", clean_env())
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def venv_bin(name: str) -> str:
    """A tool installed in the test environment (the same venv as sys.executable)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {path.parent}: run make test-env")
    return str(path)
