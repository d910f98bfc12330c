"""A private Docker engine for the container tests: its own dockerd, socket, bridge and NAT."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 60


class EngineUnavailable(Exception):
    """The engine cannot run here (not root, no dockerd, the daemon fails): tests skip."""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def _free_subnet(seed: str) -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no route of this machine overlaps."""
    routes = _run(["ip", "-4", "route", "show", "table", "all"]).stdout.split()
    used = []
    for word in routes:
        try:
            used.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % 2048
    for i in range(2048):
        n = (start + i) % 2048
        net = ipaddress.ip_network(f"10.{200 + n // 256}.{n % 256}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise EngineUnavailable("no free /24 for the test bridge")


@dataclass
class Engine:
    """dockerd with data root, exec root and socket under ``base``, on bridge ``bridge``."""

    base: Path
    name: str

    @property
    def sock(self) -> Path:
        return self.base / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def bridge(self) -> str:
        return ("pbx" + self.name)[:15]

    @property
    def log(self) -> Path:
        return self.base / "dockerd.log"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment for docker/make: this engine, a private client config, no BuildKit."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DOCKER_", "PYPI_", "PIP_", "BUILDKIT"))}
        env.update(DOCKER_HOST=self.host, DOCKER_CONFIG=str(self.base / "client"))
        env.update(extra)
        return env

    def docker(self, *args: str, check: bool = True, timeout: float = 600,
               **kw) -> subprocess.CompletedProcess:
        """Run ``docker -H <this engine> args``; raise with its output if ``check`` and it fails."""
        kw.setdefault("env", self.env())
        res = _run(["docker", "-H", self.host, *args], timeout=timeout, **kw)
        if check and res.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({res.returncode}):\n"
                                 f"{res.stdout}\n{res.stderr}")
        return res

    # --- networking: a bridge of our own and NAT rules we add and remove ourselves ---

    def _nat_rules(self, subnet: str) -> list[tuple[str, list[str]]]:
        b = self.bridge
        return [
            ("nat", ["POSTROUTING", "-s", subnet, "!", "-o", b, "-j", "MASQUERADE"]),
            ("filter", ["FORWARD", "-i", b, "!", "-o", b, "-j", "ACCEPT"]),
            ("filter", ["FORWARD", "-o", b, "-m", "conntrack", "--ctstate",
                        "RELATED,ESTABLISHED", "-j", "ACCEPT"]),
        ]

    def _setup_network(self) -> None:
        for tool in ("ip", "iptables"):
            if shutil.which(tool) is None:
                raise EngineUnavailable(f"{tool} is not installed")
        net = _free_subnet(self.name)
        gateway = f"{next(net.hosts())}/{net.prefixlen}"
        (self.base / "subnet").write_text(str(net))
        steps = [["ip", "link", "add", "name", self.bridge, "type", "bridge"],
                 ["ip", "addr", "add", gateway, "dev", self.bridge],
                 ["ip", "link", "set", self.bridge, "up"]]
        for table, rule in self._nat_rules(str(net)):
            steps.append(["iptables", "-w", "-t", table, "-I", *rule])
        for cmd in steps:
            res = _run(cmd)
            if res.returncode != 0:
                raise EngineUnavailable(f"{' '.join(cmd)}: {res.stderr.strip()}")

    def _teardown_network(self) -> None:
        subnet_file = self.base / "subnet"
        if subnet_file.exists():
            for table, rule in self._nat_rules(subnet_file.read_text().strip()):
                while _run(["iptables", "-w", "-t", table, "-D", *rule]).returncode == 0:
                    pass
        if Path(f"/sys/class/net/{self.bridge}").exists():
            _run(["ip", "link", "delete", self.bridge])

    # --- the daemon ---

    def start(self, socket_gid: int | None = None) -> None:
        """Start dockerd and wait until ``docker info`` answers; EngineUnavailable if not."""
        if os.geteuid() != 0:
            raise EngineUnavailable("the container tests start their own dockerd and need root")
        dockerd = shutil.which("dockerd")
        if dockerd is None or shutil.which("docker") is None:
            raise EngineUnavailable("dockerd or docker is not installed "
                                    "(apt-get install docker.io)")
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "client").mkdir(exist_ok=True)
        try:
            self._setup_network()
        except EngineUnavailable:
            self.stop()
            raise
        ns = f"pypibox-{self.name}"
        # Our own (empty) daemon.json: the machine's /etc/docker/daemon.json belongs to its own
        # dockerd (a GitHub runner has one running) and may set what these flags set.
        config = self.base / "daemon.json"
        config.write_text("{}\n")
        cmd = [dockerd, "--config-file", str(config), "--data-root", str(self.base / "root"),
               "--exec-root", str(self.base / "exec"), "--pidfile", str(self.base / "dockerd.pid"),
               "--host", self.host, "--bridge", self.bridge,
               "--iptables=false", "--ip6tables=false",
               "--containerd-namespace", ns, "--containerd-plugins-namespace", ns + "-plugins"]
        if socket_gid is not None:
            cmd += ["--group", str(socket_gid)]
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        (self.base / "started.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if self.sock.exists() and self.docker("info", check=False, timeout=20).returncode == 0:
                return
            time.sleep(0.5)
        tail = self.log.read_text(errors="replace")[-3000:]
        why = f"exited with {proc.returncode}" if proc.poll() is not None else \
            f"did not answer within {START_TIMEOUT}s"
        self.stop()
        raise EngineUnavailable(f"dockerd {why}:\n{tail}")

    def _pid(self) -> int | None:
        try:
            return int((self.base / "started.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> list[str]:
        """Remove every container and volume, stop dockerd, unmount, delete the bridge and the
        directory. Returns what was left and had to be forced (empty when all went well)."""
        forced: list[str] = []
        pid = self._pid()
        if pid is not None and _alive(pid) and self.sock.exists():
            ids = self.docker("ps", "-aq", check=False, timeout=60).stdout.split()
            if ids:
                self.docker("rm", "-f", "-v", *ids, check=False, timeout=120)
            vols = self.docker("volume", "ls", "-q", check=False, timeout=60).stdout.split()
            if vols:
                self.docker("volume", "rm", "-f", *vols, check=False, timeout=120)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 30):
                forced.append(f"dockerd {pid} killed after 30s")
                os.killpg(pid, signal.SIGKILL)
                _wait_gone(pid, 10)
        forced += _kill_leftovers(self.base)
        forced += _unmount_under(self.base)
        self._teardown_network()
        shutil.rmtree(self.base, ignore_errors=True)
        return forced


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone once reaped
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and "zombie" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "zombie"
    return next((line for line in status.splitlines() if line.startswith("State:")), "").lower()


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.2)
    return not _alive(pid)


ENGINE_PROGRAMS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "runc",
                   "docker-proxy")


def _kill_leftovers(base: Path) -> list[str]:
    """Kill engine programs (containerd, shims) whose command line names ``base``; report them."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if os.path.basename(cmdline.split(" ", 1)[0]) in ENGINE_PROGRAMS and str(base) in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(f"killed leftover {proc.name}: {cmdline[:120]}")
            except ProcessLookupError:
                pass
    return killed


def mounts_under(base: Path) -> list[str]:
    """Mount points at or below ``base``, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(base) or point.startswith(str(base) + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _unmount_under(base: Path) -> list[str]:
    left = []
    for point in mounts_under(base):
        if _run(["umount", point]).returncode != 0:
            _run(["umount", "-l", point])
        left.append(f"unmounted {point}")
    return left
