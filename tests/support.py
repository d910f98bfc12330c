"""Shared test support: upload forms, raw HTTP over sockets, twine, a terminal driver, the
fake docker's log, and what a server's processes hold.

Fixtures stay in ``conftest.py``; this module has plain functions and classes that tests
import (the container tests too).
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BOUNDARY = "pypibox-test-boundary"


# -- multipart forms ---------------------------------------------------------------------------
def wait_for(predicate: Any, timeout: float = 2.0, what: str = "the change") -> float:
    """Poll until ``predicate()`` is true; the seconds it took. Fails after ``timeout`` (the
    documented bound of the change waited for, two seconds unless told)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"{what} not seen within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def settled(srv: Any, project: str, timeout: float = 5.0) -> None:
    """Wait until a server lists every file of ``project`` copied into its packages
    directory, each with the upload time of its mtime (README: within two seconds; a
    server already knowing the project does not wait for its indexer, a new one does)."""
    def upload_times() -> dict[str, str]:
        resp = srv.get(f"/simple/{project}/",
                       headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        if resp.status != 200:
            return {}
        return {f["filename"]: f.get("upload-time", "")[:19]
                for f in json.loads(resp.body)["files"]}

    def expected() -> dict[str, str]:
        return {p.name: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(p.stat().st_mtime))
                for p in srv.packages.iterdir()
                if re.sub(r"[-_.]+", "-", p.name).lower().startswith(project + "-")}

    deadline = time.monotonic() + timeout
    while (seen := upload_times()) != (want := expected()):
        assert time.monotonic() < deadline, f"{srv.url} lists {seen}, not {want}"
        time.sleep(0.05)


def _b(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def form_field(name: str | bytes, value: str | bytes, boundary: str | bytes = BOUNDARY,
               eol: bytes = b"\r\n") -> bytes:
    """One non-file part of a multipart/form-data body (``eol``: LF as distutils sends)."""
    return (b"--" + _b(boundary) + eol + b'Content-Disposition: form-data; name="' + _b(name)
            + b'"' + eol + eol + _b(value) + eol)


def file_field(filename: str | bytes, content: bytes, name: str | bytes = "content",
               boundary: str | bytes = BOUNDARY, eol: bytes = b"\r\n",
               ctype: str | None = "application/octet-stream") -> bytes:
    """One file part of a multipart/form-data body; without a Content-Type if ``ctype`` is
    None (as distutils' upload sends it)."""
    head = (b"--" + _b(boundary) + eol + b'Content-Disposition: form-data; name="' + _b(name)
            + b'"; filename="' + _b(filename) + b'"' + eol)
    if ctype is not None:
        head += b"Content-Type: " + ctype.encode() + eol
    return head + eol + content + eol


def form_end(boundary: str | bytes = BOUNDARY, eol: bytes = b"\r\n") -> bytes:
    """The closing boundary of a multipart/form-data body."""
    return b"--" + _b(boundary) + b"--" + eol


def content_type(boundary: str | bytes = BOUNDARY) -> str:
    """The Content-Type header value of a form with ``boundary``."""
    return "multipart/form-data; boundary=" + _b(boundary).decode()


def join_form(*parts: bytes, boundary: str | bytes = BOUNDARY, close: bool = True) -> bytes:
    """Parts made by form_field/file_field as one body, closed unless ``close`` is false."""
    return b"".join(parts) + (form_end(boundary) if close else b"")


def form(fields: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] = (),
         files: Iterable[tuple[str, str | bytes, bytes]] = (),
         boundary: str | bytes = BOUNDARY, close: bool = True) -> bytes:
    """A multipart/form-data body: ``fields`` as (name, value), then ``files`` as
    (field name, file name, content); without the closing boundary if not ``close``."""
    items = fields.items() if isinstance(fields, Mapping) else fields
    parts = [form_field(k, v, boundary) for k, v in items]
    parts += [file_field(filename, content, name, boundary) for name, filename, content in files]
    return join_form(*parts, boundary=boundary, close=close)


def upload_form(filename: str | bytes, content: bytes, action: str = "file_upload",
                fields: Mapping[str, str] | None = None,
                boundary: str | bytes = BOUNDARY) -> tuple[bytes, str]:
    """The body and Content-Type of a legacy upload (what twine sends, minus metadata)."""
    body = form({":action": action, **(fields or {})}, [("content", filename, content)],
                boundary)
    return body, content_type(boundary)


# -- raw HTTP ----------------------------------------------------------------------------------
@dataclass
class Reply:
    """One HTTP response as read from a socket."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def raw_request(method: str, path: str | bytes, headers: Mapping[str, str | bytes] | None = None,
                body: bytes = b"", length: int | None = None, close: bool = True) -> bytes:
    """An HTTP/1.1 request as bytes; Content-Length is the body's unless ``length`` says
    (-1: none)."""
    lines = [_b(method) + b" " + _b(path) + b" HTTP/1.1", b"Host: 127.0.0.1"]
    if close:
        lines.append(b"Connection: close")
    hdrs = dict(headers or {})
    if length != -1 and (body or length is not None or method == "POST"):
        hdrs.setdefault("Content-Length", str(len(body) if length is None else length))
    for key, value in hdrs.items():
        lines.append(_b(key) + b": " + _b(value))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def connect(port: int, source: str | None = None, timeout: float = 15) -> socket.socket:
    """A TCP connection to 127.0.0.1:port, from the loopback address ``source`` if given."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source is not None:
        sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def open_silent(port: int, count: int, wait: float = 10) -> tuple[list[socket.socket], int]:
    """``count`` connections that send nothing, opened without waiting on each; with how
    many of them completed their handshake within ``wait`` seconds."""
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLOUT)
    pending = set(socks)
    deadline = time.monotonic() + wait
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(200):
            pending.discard(by_fd[fd])
            poller.unregister(fd)
    connected = sum(1 for s in socks if s not in pending
                    and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
    for sock in socks:
        sock.setblocking(True)
        sock.settimeout(15)
    return socks, connected


def parse_reply(raw: bytes) -> Reply:
    """A response from its raw bytes (head and whatever body came)."""
    if not raw.startswith(b"HTTP/1."):
        raise AssertionError(f"no HTTP reply: {raw[:200]!r}")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (a reset or a timeout ends it too)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def exchange(port: int, data: bytes, *, half_close: bool = False, timeout: float = 15,
             source: str | None = None) -> Reply:
    """Send ``data`` as is on a new connection and read the reply until the server closes."""
    with connect(port, source, timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        raw = read_all(sock)
    return parse_reply(raw)


def read_reply(sock: socket.socket, head_request: bool = False) -> Reply:
    """One response on a keep-alive connection: its head, then a Content-Length or chunked
    body (to the end of the stream if it has neither)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full reply: {buf[:200]!r}")
        buf += chunk
    reply = parse_reply(buf)
    rest = reply.body
    if head_request or reply.status in (204, 304) or 100 <= reply.status < 200:
        reply.body = b""
        return reply
    if "content-length" in reply.headers:
        size = int(reply.headers["content-length"])
        while len(rest) < size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        reply.body = rest[:size]
    elif "chunked" in reply.headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += sock.recv(65536)
            body, rest = body + rest[:size], rest[size + 2:]
            if size == 0:
                break
        reply.body = body
    else:
        reply.body = rest + read_all(sock)
    return reply


def closed_by_peer(sock: socket.socket, wait: float) -> bool | bytes:
    """Wait up to ``wait`` s: False if the connection is still open and silent, True if the
    server closed it with nothing sent, or the bytes it sent before closing."""
    sock.settimeout(wait)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    if not data:
        return True
    return data + read_all(sock)


# -- a server's processes ----------------------------------------------------------------------
def group_pids(pgid: int) -> list[int]:
    """Every live process in the process group ``pgid`` (the server's master and workers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != b"Z":
            pids.append(int(entry))
    return sorted(pids)


def _status_value(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pgid: int) -> float:
    """Resident memory of the whole process group, in MiB."""
    return sum(_status_value(pid, "VmRSS") for pid in group_pids(pgid)) / 1024


def cpu_seconds(pgid: int) -> float:
    """User plus system CPU time used so far by the live processes of the group."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def fd_targets(pid: int) -> list[str]:
    """What each open descriptor of ``pid`` points at (``socket:[...]``, a path, ...)."""
    out: list[str] = []
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return out
    for name in names:
        try:
            out.append(os.readlink(f"{base}/{name}"))
        except OSError:
            continue
    return out


def sockets_held(pgid: int) -> int:
    """The most sockets any one process of the group holds (a worker's connections)."""
    return max((sum(t.startswith("socket:") for t in fd_targets(pid))
                for pid in group_pids(pgid)), default=0)


def files_held(pgid: int) -> set[str]:
    """Regular files (deleted ones too) that the processes of the group hold open."""
    return {t for pid in group_pids(pgid) for t in fd_targets(pid) if t.startswith("/")}


def nofile_limits(pid: int) -> tuple[int, int]:
    """The soft and hard RLIMIT_NOFILE of a process."""
    with open(f"/proc/{pid}/limits") as handle:
        for line in handle:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError(f"no open file limit for {pid}")


def tree_names(*roots: Path) -> set[str]:
    """Every file and directory under ``roots``, as paths."""
    out: set[str] = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            out.update(os.path.join(dirpath, n) for n in dirnames + filenames)
    return out


def start_with_prefix(srv, prefix: list[str], **env: str):
    """Start ``srv`` like Server.start, but as ``prefix + [python -m pypibox]`` (a wrapper
    such as ``prlimit`` or ``unshare``); returns it once it answers /health."""
    from conftest import ROOT, clean_env

    full = clean_env(PYPI_HOST="127.0.0.1", PYPI_PORT=str(srv.port),
                     PYPI_PACKAGES_DIR=str(srv.packages), PYPI_HTPASSWD=str(srv.htpasswd),
                     PYTHONPATH=str(ROOT), **srv.env, **env)
    with open(srv.log, "ab") as handle:
        srv.proc = subprocess.Popen([*prefix, sys.executable, "-m", "pypibox"], env=full,
                                    cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    srv.wait_ready()
    return srv


def settle(pgid: int, seconds: float = 1.0) -> float:
    """Let the server finish what it was doing, then its resident memory in MiB."""
    time.sleep(seconds)
    return rss_mib(pgid)


# -- twine -------------------------------------------------------------------------------------
def twine_upload(target: Any, files: Sequence[Path | str], user: str = "alice",
                 password: str | None = None, *extra: str) -> subprocess.CompletedProcess:
    """``twine upload`` of ``files`` to a server (or its URL) with these credentials."""
    from conftest import PASSWORD, run, venv_bin

    url = target if isinstance(target, str) else target.url
    return run([venv_bin("twine"), "upload", "--non-interactive", "--disable-progress-bar",
                "--repository-url", url + "/", "-u", user, "-p",
                PASSWORD if password is None else password, *extra, *map(str, files)])


# -- a terminal --------------------------------------------------------------------------------
class Terminal:
    """A command under a pseudo-terminal, driven like a person at the keyboard."""

    def __init__(self, cmd: list[str], cwd: Path | str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=slave, stdout=slave,
                                     stderr=slave, start_new_session=True, close_fds=True)
        os.close(slave)
        self.text = ""
        self.pos = 0
        self._open = True

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the other side is closed
            return False
        if not data:
            return False
        self.text += data.decode("utf-8", "replace")
        return True

    def expect(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        """Wait for ``pattern`` in the output after the previous match."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.text, self.pos)
            if match:
                self.pos = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.5)):
                raise AssertionError(f"no {pattern!r} in the terminal; it showed:\n{self.text}")

    def write(self, text: str) -> None:
        """Type ``text`` exactly as given."""
        os.write(self.master, text.encode())

    def send(self, line: str) -> None:
        """Type ``line`` and Enter."""
        self.write(line + "\r")

    def wait(self, timeout: float = 120) -> int:
        """Read until the program ends; its exit status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(0.5):
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        try:
            return self.proc.wait(max(1.0, deadline - time.monotonic()))
        finally:
            self._close_master()

    def _close_master(self) -> None:
        if self._open:
            os.close(self.master)
            self._open = False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_master()


def run_in_pty(cmd: list[str], script: list[tuple[str, str]], env: dict[str, str] | None = None,
               cwd: str | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run ``cmd`` on a pty; for each (prompt, reply) wait for the prompt, then type the
    reply as given. The exit status and everything the terminal showed."""
    term = Terminal(cmd, cwd, env)
    deadline = time.monotonic() + timeout
    try:
        for prompt, reply in script:
            term.expect(re.escape(prompt), max(0.1, deadline - time.monotonic()))
            term.write(reply)
        code = term.wait(max(1.0, deadline - time.monotonic()))
    finally:
        term.close()
    return code, term.text


# -- the fake docker ---------------------------------------------------------------------------
FAKES = Path(__file__).resolve().parent / "fakes"  # holds ``docker``, the one fake engine


class FakeDocker:
    """What tests/fakes/docker recorded in its log (see its docstring for what it plays)."""

    def __init__(self, log: Path) -> None:
        self.log = log

    @property
    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def argv(self, *prefix: str) -> list[list[str]]:
        return [c["argv"] for c in self.calls if c["argv"][: len(prefix)] == list(prefix)]

    @property
    def stdin(self) -> Path:
        """Where the last ``run -i`` call's standard input is kept."""
        return Path(str(self.log) + ".stdin")

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)

    def env(self, *path_first: Path | str, **extra: str) -> dict[str, str]:
        """clean_env() with the fake first on PATH (after ``path_first``), logging here."""
        from conftest import clean_env

        path = ":".join([*map(str, path_first), str(FAKES), os.environ["PATH"]])
        return clean_env(PATH=path, FAKE_DOCKER_LOG=str(self.log), **extra)
