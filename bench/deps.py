"""What the benchmark needs on the machine: nginx and wrk (apt), stock pypiserver (a venv)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .servers import BENCH, clean_env, nginx_bin


def ensure_tools() -> None:
    """apt-get install nginx and wrk when missing (apt-get update first)."""
    missing = []
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        missing.append("nginx-light")
    if not shutil.which("wrk"):
        missing.append("wrk")
    if not missing:
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        sys.exit(f"bench: missing {', '.join(missing)}: install them (apt-get, as root) and retry")
    print(f"bench: installing {' '.join(missing)} with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # The benchmark runs its own nginx in the foreground: keep the package's postinst from
    # starting a system service (Debian's policy-rc.d convention), unless one is in place.
    policy = Path("/usr/sbin/policy-rc.d")
    ours = not policy.exists()
    if ours:
        policy.write_text("#!/bin/sh\n# written by pypibox bench/deps.py during apt-get install\n"
                          "exit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
        res = subprocess.run(install + missing, env=env)
        if res.returncode != 0 and "nginx-light" in missing:  # Debian 13 has no nginx-light
            missing[missing.index("nginx-light")] = "nginx"
            res = subprocess.run(install + missing, env=env)
        if res.returncode != 0:
            sys.exit("bench: apt-get install failed")
    finally:
        if ours:
            policy.unlink()
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"


def ensure_stock_venv() -> Path:
    """bench/.venv-stock with requirements-stock.txt (stock pypiserver)."""
    return ensure_venv("stock")


def ensure_venv(name: str) -> Path:
    """bench/.venv-<name> with bench/requirements-<name>.txt (stock, devpi, proxpi), from PyPI
    with pip's config ignored; made again only when the requirements change."""
    venv = BENCH / f".venv-{name}"
    requirements = BENCH / f"requirements-{name}.txt"
    stamp = venv / ".installed"
    want = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want:
        return venv
    print(f"bench: installing {name} into {venv}", flush=True)
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                    "-r", str(requirements)], check=True, env=clean_env())
    stamp.write_text(want + "\n")
    return venv


def freeze_line(venv: Path, *names: str) -> str:
    """``name==version`` of the named packages installed in ``venv`` (for the record)."""
    out = subprocess.run([str(venv / "bin" / "pip"), "freeze", "--disable-pip-version-check"],
                         capture_output=True, text=True, env=clean_env(), check=False
                         ).stdout.split()
    wanted = {n.lower() for n in names} | {"devpi-server", "proxpi", "gunicorn"}
    return " ".join(p for p in out if p.split("==")[0].lower() in wanted)


def versions(stock_venv: Path) -> dict[str, str]:
    """Versions of what is measured, for the record."""
    def first_line(cmd: list[str]) -> str:
        out = subprocess.run(cmd, capture_output=True, text=True)
        return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]

    pip = str(stock_venv / "bin" / "pip")
    freeze = subprocess.run([pip, "freeze", "--disable-pip-version-check"],
                            capture_output=True, text=True, env=clean_env()).stdout.split()
    return {
        "nginx": first_line([nginx_bin(), "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "stock": " ".join(p for p in freeze if p.split("==")[0].lower() in
                          ("pypiserver", "gunicorn", "gevent", "passlib", "bcrypt", "watchdog")),
    }
