"""Base images for the builds: the real ones named in the Dockerfiles when a registry answers,
otherwise one Debian stand-in (debootstrap) tagged with each name and cached as a tarball."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .engine import Engine, mounts_under

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = (ROOT / "Dockerfile", ROOT / "auth" / "Dockerfile")
SUITE = "trixie"
# Debian packages of the stand-in: the Python the server image expects, BusyBox for the
# Alpine commands, and apache2-utils preinstalled so the apk shim finds it already there.
PACKAGES = ("python3", "python3-venv", "busybox", "ca-certificates", "apache2-utils")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_IMAGE = "/etc/ssl/certs/ca-certificates.crt"
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PIP_CERT": CA_IN_IMAGE,
    "SSL_CERT_FILE": CA_IN_IMAGE,
}

# BusyBox's addgroup/adduser (Alpine) on top of Debian's groupadd/useradd.
ADDGROUP = r"""#!/bin/sh
# BusyBox addgroup [-S] [-g GID] NAME, mapped onto groupadd (pypibox test stand-in).
set -eu
args=""
while getopts Sg: opt; do
    case $opt in
        S) args="$args -r" ;;
        g) args="$args -g $OPTARG" ;;
        *) echo "addgroup shim: unsupported option" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
# shellcheck disable=SC2086
exec groupadd $args "$1"
"""
ADDUSER = r"""#!/bin/sh
# BusyBox adduser [-S] [-D] [-H] [-h HOME] [-s SHELL] [-u UID] [-G GROUP] NAME,
# mapped onto useradd (pypibox test stand-in).
set -eu
args=""
home=no
while getopts SDHh:s:u:G:g: opt; do
    case $opt in
        S) args="$args -r" ;;
        D) ;;
        H) home=skip ;;
        h) args="$args -d $OPTARG" ;;
        s) args="$args -s $OPTARG" ;;
        u) args="$args -u $OPTARG" ;;
        G) args="$args -g $OPTARG" ;;
        g) ;;
        *) echo "adduser shim: unsupported option" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ "$home" = skip ]; then args="$args -M"; else args="$args -m"; fi
# shellcheck disable=SC2086
exec useradd $args "$1"
"""
# apk add [--no-cache] pkg[~version|=version] ...: the Debian package of the same name;
# already installed ones are left alone, others come from Debian's mirror.
APK = r"""#!/bin/sh
# apk add, mapped onto dpkg/apt-get (pypibox test stand-in).
set -eu
[ "${1:-}" = add ] || { echo "apk shim: only 'apk add' is supported" >&2; exit 2; }
shift
missing=""
for arg in "$@"; do
    case $arg in -*) continue ;; esac
    pkg=$(printf '%s' "$arg" | sed 's/[~=<>].*//')
    if dpkg -s "$pkg" >/dev/null 2>&1; then
        echo "apk shim: $pkg is installed ($(dpkg-query -W -f='${Version}' "$pkg"))"
    else
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    apt-get update -q
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
    rm -rf /var/lib/apt/lists/*
fi
"""
SHIMS = {"usr/local/sbin/addgroup": ADDGROUP, "usr/local/sbin/adduser": ADDUSER,
         "usr/local/sbin/apk": APK}


def base_images() -> dict[str, str]:
    """The ``ARG *_BASE=<image>`` defaults of the Dockerfiles: {arg name: image name}."""
    names = {}
    for dockerfile in DOCKERFILES:
        for arg, image in re.findall(r"^ARG\s+(\w+_BASE)=(\S+)", dockerfile.read_text(), re.M):
            names[arg] = image
    if not names:
        raise AssertionError(f"no ARG *_BASE=<image> in {', '.join(map(str, DOCKERFILES))}")
    return names


def cache_dir() -> Path:
    """Where stand-in tarballs are kept between runs (outside the repository)."""
    if os.environ.get("PYPIBOX_STANDIN_CACHE"):
        return Path(os.environ["PYPIBOX_STANDIN_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "pypibox-standin"
    if os.geteuid() == 0:
        return Path("/var/cache/pypibox-standin")
    return Path.home() / ".cache" / "pypibox-standin"


def cache_key() -> str:
    """A hash of what builds the stand-in: this module's text (script, shims, package list)
    and the CA bundle copied into it."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(" ".join(PACKAGES).encode())
    digest.update(HOST_CA.read_bytes() if HOST_CA.exists() else b"")
    return digest.hexdigest()[:20]


def _sh(cmd: list[str], timeout: float = 900) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n"
                             f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def build_rootfs(target: Path) -> None:
    """debootstrap Debian with Python laid out as in the official image, shims and CA."""
    if shutil.which("debootstrap") is None:
        raise AssertionError("debootstrap is missing (apt-get install debootstrap; .ci/run does)")
    _sh(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(target)])
    # /usr/local as a venv: /usr/local/bin/python and pip, as in python:*-alpine.
    _sh(["chroot", str(target), "python3", "-m", "venv", "/usr/local"])
    for rel, text in SHIMS.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    if HOST_CA.exists():
        shutil.copyfile(HOST_CA, target / CA_IN_IMAGE.lstrip("/"))
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (target / junk).glob("*"):
            if item.is_file():
                item.unlink()


def _prune(cache: Path, keep: Path, days: int = 7) -> None:
    """Remove stand-ins of other builder versions unused for ``days`` (another checkout may
    still use a recent one)."""
    for old in cache.glob(f"{SUITE}-*.tar"):
        if old != keep and time.time() - old.stat().st_mtime > days * 86400:
            old.unlink(missing_ok=True)


def standin_tarball(log: list[str]) -> Path:
    """The cached stand-in rootfs tarball, built first when missing."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"{SUITE}-{cache_key()}.tar"
    with open(cache / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; others then find it cached
        if tarball.exists():
            os.utime(tarball)  # in use: not pruned
            log.append(f"stand-in: cached {tarball}")
            return tarball
        return _build_tarball(cache, tarball, log)


def _build_tarball(cache: Path, tarball: Path, log: list[str]) -> Path:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pypibox-standin-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        try:
            build_rootfs(rootfs)
        finally:  # debootstrap mounts /proc and /sys in the target; a failed run may leave them
            for point in mounts_under(rootfs):
                subprocess.run(["umount", "-l", point], check=False)
        partial = cache / f".{tarball.name}.{os.getpid()}"
        _sh(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.rename(tarball)
    _prune(cache, keep=tarball)
    log.append(f"stand-in: built {tarball} in {time.monotonic() - started:.0f}s")
    return tarball


def want_real_bases() -> bool | None:
    """PYPIBOX_REAL_BASES=1: pull the real bases (must work); =0: stand-in; unset: try."""
    value = os.environ.get("PYPIBOX_REAL_BASES", "").strip().lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    return None


def provide_bases(engine: Engine, log: list[str]) -> str:
    """Make every base image of the Dockerfiles present in ``engine``; returns 'real' or
    'stand-in'."""
    names = sorted(set(base_images().values()))
    want = want_real_bases()
    if want is not False:
        for name in names:
            try:
                res = engine.docker("pull", "-q", name, check=False,
                                    timeout=20 if want is None else 600)
                ok = res.returncode == 0
                why = res.stderr.strip()
            except subprocess.TimeoutExpired:
                ok, why = False, "timed out"
            if not ok:
                if want:
                    raise AssertionError(
                        f"PYPIBOX_REAL_BASES=1 but docker pull {name} failed: {why}")
                log.append(f"bases: no registry answers ({name}: {why[:200]}); using a stand-in")
                break
        else:
            log.append(f"bases: pulled {', '.join(names)}")
            return "real"
    tarball = standin_tarball(log)
    changes = [f"ENV {k}={v}" for k, v in IMAGE_ENV.items()] + ['CMD ["sh"]']
    args = [a for change in changes for a in ("--change", change)]
    image_id = engine.docker("import", *args, str(tarball), timeout=600).stdout.strip()
    for name in names:
        engine.docker("tag", image_id, name)
    log.append(f"bases: Debian {SUITE} stand-in {image_id[:19]} tagged {', '.join(names)}")
    return "stand-in"
