"""The three servers under test, each a foreground process tree on a free 127.0.0.1 port."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
SERVERS = ("nginx", "stock", "pypibox")
AUTH_ALL = "update,download,list"

# The official pypiserver image's docker/gunicorn.conf.py, which gunicorn reads from the
# working directory (/data in the image): one gevent worker, app preloaded, no access log.
STOCK_GUNICORN_CONF = """\
errorlog = "-"
preload_app = True
workers = 1
worker_class = "gevent"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the machine's PIP_*/PYPI_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYPI_", "PIP_", "UV_", "TWINE_", "GUNICORN_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    """Resident memory in bytes of a process and all its descendants, from /proc."""
    children = _children()
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += _rss_kb(p)
        todo.extend(children.get(p, []))
    return total * 1024


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its descendants, from /proc."""
    children = _children()
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(children.get(p, []))
    return total / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """Samples tree_rss(pid) every ``interval`` seconds in a thread; ``peak`` after exit."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))


@dataclass
class Running:
    """A started server: its process (group leader), base URL and log file."""

    name: str
    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the server's own process group, SIGKILL if it does not end."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def logtail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(name: str, cmd: list[str], workdir: Path, port: int, env: dict[str, str],
           probe: str, headers: dict[str, str], timeout: float = 60) -> Running:
    log = workdir / f"{name}.log"
    with open(log, "ab") as handle:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    srv = Running(name, proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{srv.logtail()}")
        try:
            req = urllib.request.Request(srv.url + probe, headers=headers)
            with urllib.request.urlopen(req, timeout=30) as resp:
                if resp.status == 200:
                    return srv
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    srv.stop()
    raise RuntimeError(f"{name} not ready after {timeout}s:\n{srv.logtail()}")


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _nginx_modules() -> str:
    out = subprocess.run([nginx_bin(), "-V"], capture_output=True, text=True)
    return out.stdout + out.stderr


def start_nginx(workdir: Path, packages: Path, static: Path, **_: object) -> Running:
    """nginx, one worker, in the foreground, with its own config, pid and log files."""
    port = free_port()
    built = _nginx_modules()
    temps = "".join(
        f"    {mod}_temp_path {workdir}/{mod}_temp;\n"
        for mod in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        if mod == "client_body" or f"--without-http_{mod}_module" not in built)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""\
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    types {{ text/html html; application/octet-stream whl gz; }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
{temps}    server {{
        listen 127.0.0.1:{port};
        location /simple/ {{ root {static}; index index.html; }}
        location /packages/ {{ alias {packages}/; }}
    }}
}}
""")
    cmd = [nginx_bin(), "-p", str(workdir), "-e", str(workdir / "nginx-error.log"), "-c", str(conf)]
    return _spawn("nginx", cmd, workdir, port, clean_env(), "/simple/", {})


def start_stock(workdir: Path, packages: Path, htpasswd: Path, auth: bool, stock_venv: Path,
                credentials: str, **_: object) -> Running:
    """pypiserver as its official image runs it: ``pypi-server run --server gunicorn``."""
    port = free_port()
    (workdir / "gunicorn.conf.py").write_text(STOCK_GUNICORN_CONF)
    cmd = [str(stock_venv / "bin" / "pypi-server"), "run", "-p", str(port), "-i", "127.0.0.1",
           "--server", "gunicorn", "--backend", "cached-dir",
           "-a", AUTH_ALL if auth else "update", "-P", str(htpasswd), str(packages)]
    headers = {"Authorization": credentials} if auth else {}
    return _spawn("stock", cmd, workdir, port, clean_env(PYTHONUNBUFFERED="t"), "/simple/", headers)


def start_pypibox(workdir: Path, packages: Path, htpasswd: Path, auth: bool, credentials: str,
                  extra_env: dict[str, str] | None = None, **_: object) -> Running:
    """This project's server by its entrypoint, default settings (PYPI_* for port and dirs)."""
    port = free_port()
    python = ROOT / ".venv" / "bin" / "python"
    env = clean_env(PYPI_HOST="127.0.0.1", PYPI_PORT=str(port), PYPI_PACKAGES_DIR=str(packages),
                    PYPI_HTPASSWD=str(htpasswd), PYTHONPATH=str(ROOT), **(extra_env or {}))
    if auth:
        env["PYPI_AUTHENTICATE"] = AUTH_ALL
    headers = {"Authorization": credentials} if auth else {}
    return _spawn("pypibox", [str(python), "-m", "pypibox"], workdir, port, env, "/simple/",
                  headers)


STARTERS = {"nginx": start_nginx, "stock": start_stock, "pypibox": start_pypibox}
