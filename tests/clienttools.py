"""Package tools run as a newcomer would: a fresh HOME, and no way out of 127.0.0.1.

Every tool gets its own HOME, configuration and cache folders in a temporary directory, keyring
switched off, self-update and version checks off, and HTTP(S)_PROXY pointing at a ``Trap``: a
listener on 127.0.0.1 that records and refuses any request for a host other than 127.0.0.1.
``sh`` fails a test whose command tried to reach one. The public index is a second pypibox on
127.0.0.1 (``Indexes.public``) that also holds the build backends the tools fetch (repacked from
the test venv, see repack.py), and a higher version of the private project's name.

A pytest plugin too (conftest loads it): the fixtures ``trap`` and ``indexes`` (per module; a
module's ``BUILD_BACKENDS`` list says which backends its public stand-in needs, all of
``BACKENDS`` unless told) and ``user`` (a fresh HOME per test: run one command line).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import typing as t
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORD, Server, make_server
from pkgfactory import make_wheel
from repack import repack_all
from support import twine_upload

VENV_BIN = str(Path(sys.executable).parent)  # poetry, pdm, pipenv, flit, twine, uv, hatch

# The build backends a project in these tests names, with what they need.
BACKENDS = ["hatchling", "flit_core", "poetry-core", "setuptools"]


class Trap:
    """A proxy on 127.0.0.1 that refuses every request and remembers its first line."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                    self.hits.append(line or "(connection without a request)")
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                except OSError as err:
                    self.hits.append(f"(connection: {err})")

    def close(self) -> None:
        self._sock.close()

    def env(self) -> dict[str, str]:
        proxy = f"http://127.0.0.1:{self.port}"
        local = "127.0.0.1,localhost"
        return {"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "ALL_PROXY": proxy,
                "http_proxy": proxy, "https_proxy": proxy, "all_proxy": proxy,
                "NO_PROXY": local, "no_proxy": local}


def tool_env(home: Path, trap: Trap, **extra: str) -> dict[str, str]:
    """A fresh user's environment: HOME and every tool's folders under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    keep = ("PATH", "LANG", "LC_ALL", "TERM", "TMPDIR", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    cache = home / ".cache"
    env.update(trap.env())
    env.update({
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(cache),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "PYTHONDONTWRITEBYTECODE": "1",
        # No keyring: a test (and a script) must not depend on a desktop's secret store.
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
        "UV_PYTHON_DOWNLOADS": "never", "UV_CACHE_DIR": str(cache / "uv"),
        # virtualenv (poetry, pipenv, hatch) would refresh its seed wheels from PyPI.
        "VIRTUALENV_NO_PERIODIC_UPDATE": "1",
        "VIRTUALENV_OVERRIDE_APP_DATA": str(cache / "virtualenv"),
        "POETRY_KEYRING_ENABLED": "false", "POETRY_NO_INTERACTION": "1",
        "POETRY_VIRTUALENVS_IN_PROJECT": "true",
        "PDM_CHECK_UPDATE": "false", "PDM_NON_INTERACTIVE": "1",
        "PDM_USE_VENV": "1",
        "PIPENV_VENV_IN_PROJECT": "1", "PIPENV_IGNORE_VIRTUALENVS": "1", "PIPENV_YES": "1",
        "PIPENV_NOSPIN": "1", "PIPENV_VERBOSITY": "-1",
    })
    if "PYTHONPATH" in os.environ:  # the suite's own (make test sets it): the tools run in it
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra)
    return env


def sh(command: str, cwd: Path, env: dict[str, str], trap: Trap,
       timeout: float = 300) -> subprocess.CompletedProcess:
    """Run one command line as a user would; fail if it tried to leave 127.0.0.1."""
    before = len(trap.hits)
    result = subprocess.run(["sh", "-c", command], check=False, cwd=cwd, env=env, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    tried = trap.hits[before:]
    assert not tried, f"{command!r} tried to reach the internet: {tried}\n{out(result)}"
    return result


def out(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def upload(server: Server, files: list[Path]) -> None:
    result = twine_upload(server, files)
    assert result.returncode == 0, out(result)


@dataclass
class Indexes:
    """The public index's stand-in, an open private index and a closed one, both falling back
    to the stand-in. ``pbx-internal`` is 1.0 on both private ones and 9.0 on the public one."""

    public: Server
    private: Server
    closed: Server

    def stop(self) -> None:
        for server in (self.private, self.closed, self.public):
            server.stop()


def start_indexes(base: Path, backends: list[str] = BACKENDS) -> Indexes:
    public = make_server(base, {"alice": PASSWORD}, PYPI_FALLBACK="off").start()
    fallback = public.url + "/simple/"
    private = make_server(base, {"alice": PASSWORD}, PYPI_FALLBACK_URL=fallback).start()
    closed = make_server(base, {"alice": PASSWORD}, PYPI_FALLBACK_URL=fallback,
                         PYPI_AUTHENTICATE="update,download,list").start()
    upload(public, [make_wheel(base / "public", "pbx-internal", "9.0"),
                    make_wheel(base / "public", "pbx-public-only", "1.0"),
                    *repack_all(backends, base / "backends")])
    internal = make_wheel(base / "private", "pbx-internal", "1.0")
    upload(private, [internal])
    upload(closed, [internal])
    return Indexes(public, private, closed)


def installed_version(venv: Path, module: str) -> str:
    """``module.__version__`` as the venv's own Python imports it."""
    result = subprocess.run([str(venv / "bin" / "python"), "-c",
                             f"import {module}; print({module}.__version__)"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, out(result)
    return result.stdout.strip()


# -- the fixtures of the client tests ------------------------------------------------------------
@pytest.fixture(scope="module")
def trap() -> t.Iterator[Trap]:
    """The proxy every tool of a test module is pointed at."""
    found = Trap()
    yield found
    found.close()


@pytest.fixture(scope="module")
def indexes(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Indexes]:
    """The public stand-in, the private index and the closed one, for a test module."""
    backends = getattr(request.module, "BUILD_BACKENDS", BACKENDS)
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    found = start_indexes(tmp_path_factory.mktemp(name), backends)
    yield found
    found.stop()


Run = t.Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def user(tmp_path: Path, trap: Trap) -> Run:
    """A fresh HOME for one test: run one command line in a folder, as that user."""
    env = tool_env(tmp_path / "home", trap)

    def do(command: str, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
        return sh(command, cwd, {**env, **extra}, trap)
    return do
