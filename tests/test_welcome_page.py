"""The page at ``/`` seen in a real headless browser (tests/browser.py), followed to the letter.

The snippets a person reads there are taken from the browser's DOM and used as they are (with
the <username>/<password>/<package> placeholders filled in) to upload with twine, uv and hatch
and to install with pip and uv.
"""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from browser import headless
from conftest import PASSWORD, basic, clean_env, http
from pkgfactory import make_sdist, make_wheel

VENV_BIN = str(Path(sys.executable).parent)


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium (or the runner's Chrome) as root in CI would, with a new profile."""
    return headless(*args)


class Texts(HTMLParser):
    """The visible text of every element with an id, and of the whole body."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.open: list[tuple[str, str | None]] = []
        self.body: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "meta", "link", "img", "input"):
            return
        self.open.append((tag, dict(attrs).get("id")))

    def handle_endtag(self, tag):
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data):
        if any(tag in ("style", "script", "title") for tag, _ in self.open):
            return
        self.body.append(data)
        for _, ident in self.open:
            if ident:
                self.by_id[ident] = self.by_id.get(ident, "") + data


def page(url: str) -> Texts:
    result = chromium("--dump-dom", url)
    assert "<h1>" in result.stdout, result.stderr[-2000:]
    texts = Texts()
    texts.feed(result.stdout)
    return texts


def fill(snippet: str, package: str = "") -> str:
    return (snippet.replace("<username>", "alice").replace("<password>", PASSWORD)
            .replace("<package>", package))


def sh(command: str, cwd: Path, home: Path, **extra: str) -> subprocess.CompletedProcess:
    env = clean_env(HOME=str(home), PATH=f"{VENV_BIN}:{os.environ['PATH']}",
                    UV_CACHE_DIR=str(home / "uv-cache"), **extra)
    env.pop("VIRTUAL_ENV", None)  # uv installs into ./.venv, never into the test venv
    return subprocess.run(["sh", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300)


def test_page_shows_the_count_and_its_own_urls_and_its_snippets_work(server, tmp_path):
    empty = page(server.url + "/")
    assert "This index holds 0 package files." in " ".join("".join(empty.body).split())
    assert empty.by_id["index-url"] == f"{server.url}/simple/"
    assert empty.by_id["upload-url"] == f"{server.url}/"
    assert f"repository = {server.url}/" in empty.by_id["pypirc"]
    assert f"index-url = {server.url}/simple/" in empty.by_id["pipconf"]

    home = tmp_path / "home"
    home.mkdir()
    (home / ".pypirc").write_text(fill(empty.by_id["pypirc"]))
    uploads = {"twine": ("web-twine", True), "uv-publish": ("web-uv", False),
               "hatch-publish": ("web-hatch", False)}
    for ident, (name, with_sdist) in uploads.items():
        project = tmp_path / name
        make_wheel(project / "dist", name, "1.0")
        if with_sdist:
            make_sdist(project / "dist", name, "1.0")
        result = sh(fill(empty.by_id[ident]), project, home)
        assert result.returncode == 0, (ident, result.stdout + result.stderr)

    full = page(server.url + "/")
    assert full.by_id["numpkgs"] == "4"
    assert len(list(server.packages.glob("web*"))) == 4

    conf = tmp_path / "pip.conf"
    conf.write_text(full.by_id["pipconf"] + "\n")
    via_conf = sh("pip install --dry-run --no-cache-dir web-twine", tmp_path, home,
                  PIP_CONFIG_FILE=str(conf))
    assert via_conf.returncode == 0, via_conf.stdout + via_conf.stderr
    assert "Would install web-twine-1.0" in via_conf.stdout
    once = sh(fill(full.by_id["pip-once"], "web-uv") + " --dry-run --no-cache-dir", tmp_path, home)
    assert "Would install web-uv-1.0" in once.stdout, once.stdout + once.stderr

    assert sh("uv venv -q .venv", tmp_path, home).returncode == 0
    uv = sh(fill(full.by_id["uv-once"], "web-hatch"), tmp_path, home)
    assert uv.returncode == 0 and "+ web-hatch==1.0" in uv.stderr, uv.stdout + uv.stderr


def test_password_snippets_work_when_downloads_are_protected(server_factory, tmp_path):
    protected = server_factory(PYPI_AUTHENTICATE="update,download,list")
    project = tmp_path / "p"
    make_wheel(project / "dist", "web-secret", "1.0")
    home = tmp_path / "home"
    home.mkdir()
    pushed = sh(f"twine upload --repository-url {protected.url}/ -u alice -p {PASSWORD} dist/*",
                project, home)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr

    # A browser asks for the password on a protected index; the page is then the same.
    resp = http("GET", protected.url + "/", headers={"Authorization": basic("alice", PASSWORD)})
    texts = Texts()
    texts.feed(resp.text)
    with_url = sh(fill(texts.by_id["pip-auth"], "web-secret") + " --dry-run --no-cache-dir",
                  tmp_path, home)
    assert "Would install web-secret-1.0" in with_url.stdout, with_url.stdout + with_url.stderr

    netrc = home / ".netrc"
    netrc.write_text(fill(texts.by_id["netrc"]) + "\n")
    netrc.chmod(0o600)
    with_netrc = sh(fill(texts.by_id["pip-once"], "web-secret") + " --dry-run --no-cache-dir",
                    tmp_path, home)
    assert "Would install web-secret-1.0" in with_netrc.stdout, \
        with_netrc.stdout + with_netrc.stderr


def test_screenshot_renders_the_page(server, tmp_path):
    shot = tmp_path / "welcome.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1200,1000", server.url + "/")
    assert shot.exists(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1200  # width from the IHDR chunk
    assert len(data) > 20_000  # text and boxes drawn; a blank page compresses to a few KB
