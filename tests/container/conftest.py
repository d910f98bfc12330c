"""One private Docker engine for the whole run, shared by the xdist workers: started by the
first test that needs it (with the base images and both images built from the Dockerfiles),
stopped by the last worker to finish, leaving no process, container, volume or mount."""

from __future__ import annotations

import fcntl
import grp
import json
import os
import pwd
import shutil
import tempfile
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORD, add_user, free_port

from .engine import Engine, EngineUnavailable
from .harness import AUTH_IMAGE, IMAGE, ROOT, Deployment, copy_repo, make, out, unique
from .standin import provide_bases

_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
SHARED = Path(tempfile.gettempdir()) / f"pypibox-engine-{_RUN[:12]}"
_REPORT: list[str] = []


@contextmanager
def _locked():
    SHARED.mkdir(mode=0o711, exist_ok=True)
    with open(SHARED / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _state() -> dict | None:
    path = SHARED / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def _engine() -> Engine:
    return Engine(SHARED / "engine", _RUN[:12])


def pytest_configure(config):
    """Count this process among the users of the shared engine (every worker collects first)."""
    with _locked():
        (SHARED / "alive").mkdir(exist_ok=True)
        (SHARED / "alive" / f"{_WORKER}-{os.getpid()}").touch()


def pytest_sessionfinish(session):
    """The last process to leave stops the engine and removes everything it made (here, not
    in pytest_unconfigure: xdist may end a worker soon after its session finishes)."""
    if not SHARED.exists():
        return
    with _locked():
        (SHARED / "alive" / f"{_WORKER}-{os.getpid()}").unlink(missing_ok=True)
        if any((SHARED / "alive").iterdir()):
            return
        _REPORT.extend((_state() or {}).get("report", []))
        if (SHARED / "engine").exists():
            forced = _engine().stop()
            if forced:
                print("\npypibox container tests: engine cleanup had to force:", *forced,
                      sep="\n  ")
        shutil.rmtree(SHARED, ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    """Sizes and build times, when this process ran the engine (without xdist; with it, the
    first container test prints them and ``-rA`` shows them)."""
    if _REPORT:
        terminalreporter.write_sep("-", "container images")
        for line in _REPORT:
            terminalreporter.write_line(line)


def _unused_id(start: int = 4242) -> int:
    """A uid/gid that no account of this machine has, for the non-root make runs."""
    n = start
    while True:
        try:
            pwd.getpwuid(n)
        except KeyError:
            try:
                grp.getgrgid(n)
            except KeyError:
                return n
        n += 1


def _timed_make(engine: Engine, report: list[str], image: str, *args: str) -> None:
    started = time.monotonic()
    res = make(engine, *args, cwd=ROOT, timeout=900)
    took = time.monotonic() - started
    assert res.returncode == 0, f"make {' '.join(args)}:\n{out(res)}"
    size = int(engine.docker("image", "inspect", "--format", "{{.Size}}", image).stdout)
    report.append(f"{image}: {size / 1e6:.1f} MB, built in {took:.0f}s by make {args[0]} {args[1]}"
                  if args[0] == "-C" else
                  f"{image}: {size / 1e6:.1f} MB, built in {took:.0f}s by make {args[0]}")


def _bring_up() -> dict:
    """Start the engine, provide the bases, build both images; the state the workers share."""
    engine = _engine()
    nonroot = _unused_id()
    try:
        engine.start()
    except EngineUnavailable as err:
        return {"skip": f"no Docker engine for the container tests: {err}"}
    report: list[str] = []
    try:
        # The socket's group is an unused id, the non-root make runs' uid and gid.
        os.chown(engine.sock, 0, nonroot)
        os.chmod(engine.sock, 0o660)
        SHARED.chmod(0o711)
        engine.base.chmod(0o711)
        started = time.monotonic()
        kind = provide_bases(engine, report)
        report.append(f"bases ({kind}) ready in {time.monotonic() - started:.0f}s")
        # auth first, alone, to time it; then `make build` (server, and auth again from cache).
        _timed_make(engine, report, AUTH_IMAGE, "-C", "auth", "build", f"AUTH_IMAGE={AUTH_IMAGE}")
        _timed_make(engine, report, IMAGE, "build", f"IMAGE={IMAGE}", f"AUTH_IMAGE={AUTH_IMAGE}")
    except Exception:  # noqa: BLE001 - every worker must see the same failure
        return {"error": traceback.format_exc(), "report": report}
    return {"report": report, "bases": kind, "nonroot": nonroot}


@dataclass
class Session:
    """The shared engine and what was built in it."""

    engine: Engine
    report: list[str]
    bases: str
    nonroot: int


@pytest.fixture(scope="session")
def session() -> Session:
    with _locked():
        state = _state()
        if state is None:
            state = _bring_up()
            (SHARED / "state.json").write_text(json.dumps(state))
    if "skip" in state:
        if os.environ.get("PYPIBOX_REAL_BASES") == "1":
            # The GitHub workflow has an engine: there, no engine is a failure, not a skip.
            pytest.fail(state["skip"] + " (PYPIBOX_REAL_BASES=1: an engine is expected)")
        pytest.skip(state["skip"])
    if "error" in state:
        pytest.fail("building the images failed:\n" + state["error"])
    return Session(_engine(), state["report"], state["bases"], state["nonroot"])


@pytest.fixture(scope="session")
def engine(session) -> Engine:
    return session.engine


@pytest.fixture
def deploy(engine, tmp_path):
    """Deployments from fresh copies of the repository, each with its own names and port;
    ``deploy()`` runs ``make run``. Containers and volumes are removed at the end."""
    made: list[Deployment] = []

    def factory(users: dict[str, str] | None = None, start: bool = True) -> Deployment:
        repo = copy_repo(tmp_path / unique("repo"))
        for user, password in (users if users is not None else {"alice": PASSWORD}).items():
            add_user(repo / "auth" / "htpasswd", user, password)
        dep = Deployment(engine, repo, unique("pypi"), unique("pkgs"), unique("auth"), free_port())
        made.append(dep)
        if start:
            dep.run()
        return dep

    yield factory
    for dep in made:
        dep.remove()
