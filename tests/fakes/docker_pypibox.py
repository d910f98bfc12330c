"""Part of the docker stand-in: runs `python -m pypibox ...` calls for real, volumes as folders.

Active when FAKE_DOCKER_VOLUMES is a JSON object {volume name: host folder}. A call that runs
pypibox in a container (``exec CONTAINER python -m pypibox ...``, or ``run ... --entrypoint
python IMAGE -m pypibox ...``) runs the test venv's Python (FAKE_DOCKER_PYTHON) on the host,
with the container's paths mapped onto the folders and bind mounts, and the image's
PYPI_* defaults. Everything else is left to the stand-in.
"""

import json
import os
import subprocess
import tempfile

VALUED = {"-v", "-e", "-w", "-p", "--user", "--network", "--entrypoint", "--name", "--label",
          "--restart", "--volume", "--env", "--workdir"}
IMAGE_ENV = {"PYPI_PACKAGES_DIR": "/data/packages", "PYPI_HTPASSWD": "/data/auth/htpasswd",
             "PYPI_ROLES": "/data/auth/roles", "PYPI_TOKENS": "/data/auth/tokens"}


def _options(opts):
    return {k: v for k, v in opts if v is not None}


def _split(args):
    """(options as (name, value) pairs, the rest after the first non-option)."""
    opts, i = [], 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in VALUED and i + 1 < len(args):
            opts.append((args[i], args[i + 1]))
            i += 2
        else:
            opts.append((args[i], None))
            i += 1
    return opts, args[i:]


def _mounts(opts, volumes):
    found = []
    for name, value in opts:
        if name in ("-v", "--volume"):
            source, target = value.split(":")[:2]
            host = source if source.startswith("/") else volumes.get(source)
            if host:
                found.append((target.rstrip("/"), host.rstrip("/")))
    return sorted(found, key=lambda m: -len(m[0]))


def _map(path, mounts):
    for target, host in mounts:
        if path == target or path.startswith(target + "/"):
            return host + path[len(target):]
    return None


def handle(args, state):
    """Run a pypibox call here and return its exit code; None for any other call."""
    volumes = json.loads(os.environ["FAKE_DOCKER_VOLUMES"])
    cmd, rest = (args[0], args[1:]) if args else ("", [])
    if cmd == "volume" and rest[:1] == ["inspect"]:
        return 0 if rest[1] in volumes or rest[1] in state["volumes"] else 1
    if cmd == "inspect" and "{{.State.Running}}" in args:
        box = state["containers"].get(args[-1])
        if box is None:
            return 1
        print(str(box["running"]).lower())
        return 0
    if cmd == "run" and "-d" in rest:
        opts, tail = _split(rest)
        name = _options(opts).get("--name")
        state.setdefault("mounts", {})[name] = _mounts(opts, volumes)
        state.setdefault("env", {})[name] = [v for k, v in opts if k in ("-e", "--env")]
        return None
    if cmd == "exec":
        opts, tail = _split(rest)
        if len(tail) < 4 or tail[1:4] != ["python", "-m", "pypibox"]:
            return None
        mounts = [tuple(m) for m in state.get("mounts", {}).get(tail[0], [])]
        env_opts = state.get("env", {}).get(tail[0], [])
        argv, workdir = tail[4:], "/data"
    elif cmd == "run":
        opts, tail = _split(rest)
        if _options(opts).get("--entrypoint") != "python" \
                or tail[1:3] != ["-m", "pypibox"]:
            return None
        mounts = _mounts(opts, volumes)
        env_opts = [v for k, v in opts if k in ("-e", "--env")]
        argv = tail[3:]
        workdir = _options(opts).get("-w", "/data")
    else:
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYPI_", "FAKE_"))}
    env["PYTHONPATH"] = os.environ["FAKE_DOCKER_PYTHONPATH"]
    for key, path in IMAGE_ENV.items():
        env[key] = _map(path, mounts) or path
    for item in env_opts:
        key, _, value = item.partition("=")
        env[key] = value
    argv = [(_map(a, mounts) or a) if a.startswith("/") else a for a in argv]
    cwd = _map(workdir, mounts) or tempfile.gettempdir()
    return subprocess.call([os.environ["FAKE_DOCKER_PYTHON"], "-m", "pypibox", *argv],
                           env=env, cwd=cwd)
