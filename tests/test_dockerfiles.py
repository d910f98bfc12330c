"""Static checks of the images' recipes: linters, COPY sources, lock, user, health, ignores."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, venv_bin

DOCKERFILES = {"server": ROOT / "Dockerfile", "auth": ROOT / "auth" / "Dockerfile"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name):
    result = subprocess.run([venv_bin("hadolint"), str(DOCKERFILES[name])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_ignored_lint_rule_is_explained(name):
    lines = DOCKERFILES[name].read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], \
                f"line {i + 1}: an ignored rule needs a comment saying why, on the line before"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copy_source_exists_and_survives_dockerignore(name):
    path = DOCKERFILES[name]
    context = path.parent
    ignore = dockerignore(context)
    for kind, args in instructions(path):
        if kind != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for src in sources:
            assert (context / src).exists(), f"{path}: COPY source {src} missing"
            assert not ignore(src.rstrip("/")), f"{path}: COPY source {src} is excluded by .dockerignore"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_image_is_a_pinned_alpine_build_argument(name):
    steps = instructions(DOCKERFILES[name])
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    bases = [a.split()[0] for k, a in steps if k == "FROM"]
    for base in bases:
        match = re.fullmatch(r"\$\{(\w+)\}", base)
        assert match, f"FROM {base} should come from a build argument"
        default = args[match.group(1)]
        assert "alpine" in default and re.search(r":\d", default), default
        assert "latest" not in default


def test_server_final_stage_is_lean_non_root_and_healthy():
    steps = final_stage(DOCKERFILES["server"])
    kinds = [k for k, _ in steps]
    user = [a for k, a in steps if k == "USER"]
    assert user and not re.match(r"^(root|0)(:|$)", user[-1])
    assert "HEALTHCHECK" in kinds and any("healthcheck" in a for k, a in steps if k == "HEALTHCHECK")
    assert ("EXPOSE", "8080") in steps
    assert any(k == "VOLUME" and "/data/packages" in a for k, a in steps)
    assert any(k == "ENTRYPOINT" and '"-m", "pypibox"' in a for k, a in steps)
    assert any(k == "LABEL" and "org.opencontainers.image.title" in a for k, a in steps)
    runs = " ".join(a for k, a in steps if k == "RUN")
    assert "pip install" not in runs and "apk add" not in runs, "build tools belong to the deps stage"
    assert any(k == "COPY" and a.startswith("--from=deps /opt/venv") for k, a in steps)


def test_image_installs_the_same_lock_as_the_tests_and_make_dev():
    steps = instructions(DOCKERFILES["server"])
    copies = [a for k, a in steps if k == "COPY"]
    assert any(a.split()[0] == "requirements.lock" for a in copies)
    runs = " ".join(a for k, a in steps if k == "RUN")
    assert "--require-hashes" in runs and "--only-binary=:all:" in runs
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements.lock" in makefile
    assert "$(VENV)/.test-installed" in makefile and "-r requirements.lock -r requirements-test.lock" in makefile


def test_lock_pins_every_package_with_hashes():
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"(?m)^(?=[A-Za-z0-9_.-]+==)", text)[1:]
    assert blocks
    for block in blocks:
        assert re.match(r"[A-Za-z0-9_.-]+==[\w.]+", block)
        assert "--hash=sha256:" in block, block.splitlines()[0]
    names = {b.split("==")[0].lower() for b in blocks}
    assert {"pypiserver", "libpass", "bcrypt", "gunicorn"} <= names


def dockerignore(context: Path):
    """A matcher for Docker's .dockerignore rules (last matching pattern wins, ! re-includes)."""
    rules = []
    for line in (context / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        rules.append((negate, pattern.strip("/")))

    def matches(pattern: str, path: str) -> bool:
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*") \
            .replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        return re.fullmatch(regex, path) is not None

    def ignored(path: str) -> bool:
        parts = path.split("/")
        result = False
        for negate, pattern in rules:
            # A pattern matching a parent directory applies to everything below it.
            if any(matches(pattern, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
                result = not negate
        return result

    return ignored


@pytest.mark.parametrize("context, secrets", [
    (ROOT, ["auth/htpasswd", ".git/config", "data/packages/x.whl", ".venv/bin/python",
            "tests/conftest.py", "bench/run.py", "pypibox/__pycache__/x.pyc"]),
    (ROOT / "auth", ["htpasswd", "htpasswd.bak", "Makefile"]),
])
def test_dockerignore_keeps_secrets_and_clutter_out(context, secrets):
    ignored = dockerignore(context)
    for path in secrets:
        assert ignored(path), f"{path} would be sent to the engine"


def test_gitignore_keeps_htpasswd_out_of_commits(tmp_path):
    for name in ("auth/htpasswd", "auth/htpasswd.bak"):
        result = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT)
        assert result.returncode == 0, f"{name} is not git-ignored"


def test_shellcheck_passes_on_every_shell_script():
    scripts = sorted({*ROOT.glob("auth/*.sh"), *ROOT.glob("scripts/*.sh"), ROOT / ".ci" / "run"})
    assert len(scripts) >= 5
    result = subprocess.run([venv_bin("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
