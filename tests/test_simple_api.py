"""The simple API as pip and uv use it: JSON and HTML pages, metadata files, upload times."""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PASSWORD, basic, clean_env, http, run, venv_bin
from pkgfactory import make_sdist, make_wheel
from support import content_type, form, settled, wait_for

JSON = "application/vnd.pypi.simple.v1+json"
V1_HTML = "application/vnd.pypi.simple.v1+html"
PIP_ACCEPT = f"{JSON}, {V1_HTML}; q=0.1, text/html; q=0.01"


def tree(dest: Path, payload: bytes = b"") -> dict[str, Path]:
    """A small dependency tree: top -> mid-a, mid-b -> leaf (plus an older leaf)."""
    return {
        "top": make_wheel(dest, "tree-top", "1.0", requires=["tree-mid-a>=1", "tree-mid-b"],
                          payload=payload),
        "mid-a": make_wheel(dest, "tree_mid_a", "1.0", requires=["tree-leaf>=2"], payload=payload),
        "mid-b": make_wheel(dest, "Tree.Mid.B", "2.0", requires=["tree-leaf"], payload=payload),
        "leaf1": make_wheel(dest, "tree-leaf", "1.0", payload=payload),
        "leaf2": make_wheel(dest, "tree-leaf", "2.0", payload=payload),
    }


def access(server) -> list[tuple[str, str, int]]:
    """(method, path, status) of every request in the server's access log.

    gunicorn writes a line just after the response, so a client can finish before its last
    lines are written: a marker request is sent and waited for first (with one worker, whose
    lines are written in order, every earlier line is then in the log).
    """
    marker = f"/health?log-marker={time.monotonic_ns()}"
    server.get(marker)
    deadline = time.monotonic() + 5
    while f"GET {marker} " not in server.logtext():
        assert time.monotonic() < deadline, "the access log does not show the marker request"
        time.sleep(0.05)
    time.sleep(0.2)  # requests of other threads finished before the marker was sent
    return [(m, p, int(s)) for m, p, s in
            re.findall(r'^\S+ "(\w+) (\S+) HTTP/[\d.]+" (\d{3}) ', server.logtext(), re.M)]


def get_json(server, path: str, **headers: str):
    resp = server.get(path, headers={"Accept": JSON, **headers})
    assert resp.status == 200, resp.text
    assert resp.headers["content-type"] == JSON
    return json.loads(resp.body)


def check_project_schema(data: dict) -> None:
    """Every key PEP 691 / 700 / 714 requires, with its type."""
    assert set(data) >= {"meta", "name", "files", "versions"}
    assert isinstance(data["meta"]["api-version"], str)
    major, minor = map(int, data["meta"]["api-version"].split("."))
    assert (major, minor) >= (1, 1)
    assert isinstance(data["name"], str) and isinstance(data["versions"], list)
    assert all(isinstance(v, str) for v in data["versions"])
    for item in data["files"]:
        assert isinstance(item["filename"], str) and isinstance(item["url"], str)
        assert isinstance(item["hashes"], dict)
        assert re.fullmatch(r"[0-9a-f]{64}", item["hashes"]["sha256"])
        assert isinstance(item["size"], int) and item["size"] > 0
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", item["upload-time"])
        if "requires-python" in item:
            assert isinstance(item["requires-python"], str)
        for key in ("core-metadata", "dist-info-metadata"):
            if key in item:
                assert item[key] is False or re.fullmatch(r"[0-9a-f]{64}", item[key]["sha256"])
        assert item.get("yanked", False) is False


class Anchors(html.parser.HTMLParser):
    """The <a> tags of a page, attributes unescaped as a browser or pip sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []
        self.meta: dict[str, str | None] = {}

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.anchors.append(dict(attrs))
        if tag == "meta" and dict(attrs).get("name"):
            self.meta[dict(attrs)["name"]] = dict(attrs).get("content")


def anchors(text: str) -> Anchors:
    parser = Anchors()
    parser.feed(text)
    return parser


# -- pip ---------------------------------------------------------------------------------
def test_pip_resolves_and_installs_a_tree_from_the_json_form(server_factory, tmp_path):
    srv = server_factory(PYPI_FALLBACK="off", PYPI_WORKERS="1")  # access(): one log, in order
    tree(srv.packages)
    target = tmp_path / "target"
    pip = run([sys.executable, "-m", "pip", "install", "-vv", "--no-cache-dir",
               "--target", str(target), "--index-url", srv.url + "/simple/", "tree-top"])
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert f"as {JSON}" in pip.stdout  # pip's own log of the Content-Type it parsed
    for module, version in (("tree_top", "1.0"), ("tree_mid_a", "1.0"), ("tree_mid_b", "2.0"),
                            ("tree_leaf", "2.0")):
        imported = run([sys.executable, "-c", f"import {module}; print({module}.__version__)"],
                       env=clean_env(PYTHONPATH=str(target)))
        assert imported.stdout.strip() == version, imported.stderr


def dry_run_report(pip_cmd: list[str], srv, tmp_path: Path, **kw) -> dict:
    report = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    result = run([*pip_cmd, "install", "--dry-run", "--ignore-installed", "--no-cache-dir",
                  "--report", str(report), "--index-url", srv.url + "/simple/", "tree-top"], **kw)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(report.read_text())


def assert_metadata_only(srv, wheels: dict[str, Path]) -> None:
    fetched = {path for method, path, status in access(srv) if method == "GET" and status == 200}
    for key in ("top", "mid-a", "mid-b", "leaf2"):
        name = wheels[key].name
        assert f"/packages/{name}.metadata" in fetched, sorted(fetched)
        assert f"/packages/{name}" not in fetched, sorted(fetched)


def test_pip_dry_run_report_reads_metadata_files_and_no_wheel(server_factory, tmp_path):
    srv = server_factory(PYPI_FALLBACK="off")
    wheels = tree(srv.packages)
    report = dry_run_report([sys.executable, "-m", "pip"], srv, tmp_path)
    names = sorted(i["metadata"]["name"] for i in report["install"])
    assert names == ["Tree.Mid.B", "tree-leaf", "tree-top", "tree_mid_a"]
    assert_metadata_only(srv, wheels)


@pytest.fixture(scope="session")
def old_pips(tmp_path_factory) -> dict[str, Path]:
    """pip 23.0 from PyPI, unpacked: it knows only the old name dist-info-metadata."""
    import zipfile

    dest = tmp_path_factory.mktemp("oldpip")
    homes = {}
    for version in ("23.0",):
        got = run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                   "-d", str(dest), f"pip=={version}"])
        if got.returncode != 0:
            pytest.fail(f"cannot download pip {version} from PyPI:\n" + got.stdout + got.stderr)
        home = dest / f"pip-{version}"
        with zipfile.ZipFile(next(dest.glob(f"pip-{version}-*.whl"))) as zf:
            zf.extractall(home)
        homes[version] = home
    return homes


@pytest.mark.parametrize("version", ["23.0"])
def test_old_pip_that_chokes_on_json_dist_info_metadata_still_resolves(
        server_factory, tmp_path, old_pips, version):
    srv = server_factory(PYPI_FALLBACK="off", PYPI_WORKERS="1")  # access(): one log, in order
    wheels = tree(srv.packages)
    env = clean_env(PYTHONPATH=str(old_pips[version]))
    shown = run([sys.executable, "-m", "pip", "--version"], env=env).stdout
    assert shown.startswith(f"pip {version} ")
    report = dry_run_report([sys.executable, "-m", "pip"], srv, tmp_path, env=env)
    assert len(report["install"]) == 4
    # It asked for JSON, which names the metadata files only as core-metadata (unknown to
    # it), so it read the wheels themselves; what matters is that it did not crash.
    fetched = {path for method, path, status in access(srv) if method == "GET" and status == 200}
    assert f"/packages/{wheels['top'].name}" in fetched


# -- uv ----------------------------------------------------------------------------------
def uv(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run([venv_bin("uv"), *args], cwd=cwd)


def test_uv_compile_resolves_from_metadata_files_alone(server_factory, tmp_path):
    srv = server_factory(PYPI_FALLBACK="off", PYPI_WORKERS="1")  # access(): one log, in order
    wheels = tree(srv.packages, payload=os.urandom(50_000))
    req = tmp_path / "requirements.in"
    req.write_text("tree-top\n")
    result = uv("pip", "compile", str(req), "--index-url", srv.url + "/simple/",
                "--cache-dir", str(tmp_path / "uv-cache"), "--python", sys.executable,
                "--no-header", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    pins = sorted(re.findall(r"^([a-z0-9.-]+)==(\S+)", result.stdout, re.M))
    assert pins == [("tree-leaf", "2.0"), ("tree-mid-a", "1.0"), ("tree-mid-b", "2.0"),
                    ("tree-top", "1.0")]
    assert_metadata_only(srv, wheels)
    files = [p for m, p, s in access(srv) if p.startswith("/packages/")]
    assert files and all(p.endswith(".metadata") for p in files), files


def test_uv_install_exclude_newer_follows_upload_times(server_factory, tmp_path):
    srv = server_factory(PYPI_FALLBACK="off")
    old = make_wheel(srv.packages, "timed-pkg", "1.0")
    new = make_wheel(srv.packages, "timed-pkg", "2.0")
    sdist = make_sdist(srv.packages, "timed-pkg", "3.0")
    stamp = {old: "2021-03-01T12:00:00Z", new: "2024-03-01T12:00:00Z",
             sdist: "2025-01-01T00:00:00Z"}
    for path, when in stamp.items():
        moment = time.mktime(time.strptime(when, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        os.utime(path, (moment, moment))
    settled(srv, "timed-pkg")
    page = get_json(srv, "/simple/timed-pkg/")
    assert {f["filename"]: f["upload-time"][:19] + "Z" for f in page["files"]} == {
        p.name: w for p, w in stamp.items()}

    def install(cutoff: str) -> str:
        target = tmp_path / f"t-{cutoff[:4]}"
        result = uv("pip", "install", "--target", str(target), "--python", sys.executable,
                    "--index-url", srv.url + "/simple/", "--cache-dir", str(tmp_path / "c"),
                    "--only-binary", ":all:", "--exclude-newer", cutoff, "timed-pkg")
        assert result.returncode == 0, result.stdout + result.stderr
        return (target / "timed_pkg" / "__init__.py").read_text()

    assert '"1.0"' in install("2022-01-01T00:00:00Z")
    assert '"2.0"' in install("2024-06-01T00:00:00Z")


# -- the pages themselves ----------------------------------------------------------------
def test_json_schema_html_attributes_and_metadata_hash(server_factory):
    srv = server_factory(PYPI_FALLBACK="off")
    wheel = make_wheel(srv.packages, "Schema_Pkg", "1.0", requires_python=">=3.8,<4",
                       requires=["tree-leaf"])
    sdist = make_sdist(srv.packages, "Schema_Pkg", "1.0", requires_python=">=3.8,<4")
    old = make_wheel(srv.packages, "schema-pkg", "0.9")
    settled(srv, "schema-pkg")   # three files of one project, copied in by hand

    root = get_json(srv, "/simple/")
    assert root["meta"]["api-version"] == "1.4"  # PEP 792
    assert {"name": "schema-pkg"} in root["projects"]

    data = get_json(srv, "/simple/schema-pkg/")
    check_project_schema(data)
    assert data["name"] == "schema-pkg"
    assert data["versions"] == ["0.9", "1.0"]
    files = {f["filename"]: f for f in data["files"]}
    assert sorted(files) == sorted([wheel.name, sdist.name, old.name])
    for path in (wheel, sdist, old):
        item = files[path.name]
        assert item["hashes"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert item["size"] == path.stat().st_size
        assert item["url"] == f"../../packages/{path.name}"
    assert files[wheel.name]["requires-python"] == ">=3.8,<4"
    assert files[sdist.name]["requires-python"] == ">=3.8,<4"
    assert "requires-python" not in files[old.name]
    assert "core-metadata" not in files[sdist.name]

    announced = files[wheel.name]["core-metadata"]["sha256"]
    # PEP 714: the old name only in HTML; in JSON it makes pip 22.3 to 23.1 crash.
    assert "dist-info-metadata" not in files[wheel.name]
    meta = srv.get(f"/packages/{wheel.name}.metadata")
    assert meta.status == 200
    assert hashlib.sha256(meta.body).hexdigest() == announced
    assert b"Requires-Python: >=3.8,<4" in meta.body and b"Requires-Dist: tree-leaf" in meta.body
    assert srv.get(f"/packages/{sdist.name}.metadata").status == 404

    page = srv.get("/simple/schema-pkg/")
    assert page.headers["content-type"].startswith("text/html")
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in page.text
    assert ">=3.8,<4" not in page.text
    parsed = anchors(page.text)
    assert parsed.meta["pypi:repository-version"] == "1.4"
    by_name = {a["href"].split("#")[0].rsplit("/", 1)[-1]: a for a in parsed.anchors}
    link = by_name[wheel.name]
    digest = files[wheel.name]["hashes"]["sha256"]
    assert link["href"] == f"../../packages/{wheel.name}#sha256={digest}"
    assert link["data-requires-python"] == ">=3.8,<4"
    assert link["data-core-metadata"] == link["data-dist-info-metadata"] == f"sha256={announced}"
    assert "data-core-metadata" not in by_name[sdist.name]


def test_unreadable_wheel_is_listed_and_served_without_metadata(server_factory):
    srv = server_factory(PYPI_FALLBACK="off")
    broken = srv.packages / "broken_pkg-1.0-py3-none-any.whl"
    broken.write_bytes(b"this is not a zip file")
    data = get_json(srv, "/simple/broken-pkg/")
    (item,) = data["files"]
    assert item["filename"] == broken.name and "core-metadata" not in item
    assert srv.get(f"/packages/{broken.name}").body == broken.read_bytes()
    assert srv.get(f"/packages/{broken.name}.metadata").status == 404


NEGOTIATION = [
    (None, "text/html"),
    ("", "text/html"),
    (PIP_ACCEPT, JSON),
    (f"{JSON};q=0.2, {V1_HTML}", V1_HTML),
    ("text/html", "text/html"),
    ("text/html;q=0.5, application/vnd.pypi.simple.latest+json", JSON),
    ("*/*", "text/html"),
    ("application/*", JSON),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html"),
    (f"*/*, {JSON};q=0", "text/html"),
    (f"{JSON}; q=0.5, {V1_HTML}; q=0.9", V1_HTML),
]


def test_content_negotiation(server_factory):
    srv = server_factory(PYPI_FALLBACK="off")
    make_wheel(srv.packages, "nego", "1.0")
    settled(srv, "nego")
    for accept, expected in NEGOTIATION:
        headers = {} if accept is None else {"Accept": accept}
        for path in ("/simple/", "/simple/nego/"):
            resp = srv.get(path, headers=headers)
            assert resp.status == 200, (accept, path)
            assert resp.headers["content-type"].split(";")[0] == expected, (accept, path)
            assert resp.headers["vary"] == "Accept"
            if expected == JSON:
                json.loads(resp.body)
            else:
                assert resp.text.startswith("<!DOCTYPE html>")
    for accept in ("image/png", f"{JSON};q=0, text/html;q=0", "application/json"):
        for path in ("/simple/", "/simple/nego/"):
            resp = srv.get(path, headers={"Accept": accept})
            assert resp.status == 406, (accept, path)
            assert resp.headers["vary"] == "Accept"


def test_pages_answer_if_none_match_with_304(server_factory):
    srv = server_factory(PYPI_FALLBACK="off")
    make_wheel(srv.packages, "etag-pkg", "1.0")
    for accept in (JSON, "text/html"):
        first = srv.get("/simple/etag-pkg/", headers={"Accept": accept})
        etag = first.headers["etag"]
        again = srv.get("/simple/etag-pkg/", headers={"Accept": accept, "If-None-Match": etag})
        assert again.status == 304 and again.body == b"" and again.headers["etag"] == etag
    html_tag = srv.get("/simple/etag-pkg/").headers["etag"]
    json_tag = srv.get("/simple/etag-pkg/", headers={"Accept": JSON}).headers["etag"]
    assert html_tag != json_tag
    make_wheel(srv.packages, "etag-pkg", "2.0")
    deadline = time.monotonic() + 2
    while srv.get("/simple/etag-pkg/", headers={"If-None-Match": html_tag}).status == 304:
        assert time.monotonic() < deadline, "the page did not change after a new file"
        time.sleep(0.05)


def test_names_are_normalised_with_a_redirect(server_factory):
    srv = server_factory(PYPI_FALLBACK="off")
    wheel = make_wheel(srv.packages, "My_Package.Name", "1.0")
    for spelling in ("My_Package.Name", "MY.PACKAGE_NAME", "my--package__name", "my.package-name"):
        resp = srv.get(f"/simple/{spelling}/")
        assert resp.status == 301, spelling
        assert resp.headers["location"].endswith("/simple/my-package-name/")
    page = srv.get("/simple/my-package-name/")
    assert page.status == 200 and wheel.name in page.text
    assert srv.get("/simple/").text.count("my-package-name/") == 1
    assert srv.get("/simple/no%2fslash/").status == 404
    for path, where in (("/My_Package.Name/json", "/my-package-name/json"),
                        ("/simple", "/simple/"), ("/simple/my-package-name", "/simple/my-package-name/")):
        resp = srv.get(path)
        assert (resp.status, resp.headers["location"]) == (301, where), path
        assert resp.text.strip() == f"Moved permanently: see {where}", resp.text


def test_unknown_project_falls_back_or_is_404(server_factory):
    on = server_factory()
    resp = on.get("/simple/not-here/")
    assert resp.status in (302, 303)
    assert resp.headers["location"] == "https://pypi.org/simple/not-here/"
    off = server_factory(PYPI_FALLBACK="off")
    assert off.get("/simple/not-here/").status == 404


ROUTES = ["/simple/", "/simple/authy/", "/+simple/authy/",
          "/packages/authy-1.0-py3-none-any.whl",
          "/packages/authy-1.0-py3-none-any.whl.metadata"]


def test_auth_on_each_route(server_factory):
    srv = server_factory(PYPI_AUTHENTICATE="update,download,list", PYPI_FALLBACK="off")
    make_wheel(srv.packages, "authy", "1.0")
    for path in ROUTES:
        for method in ("GET", "HEAD"):
            none = http(method, srv.url + path)
            assert none.status == 401, path
            assert none.headers["www-authenticate"] == 'Basic realm="pypi"'
        assert srv.get(path, headers={"Authorization": basic("alice", "wrong")}).status == 403
        assert srv.get(path, headers={"Authorization": basic("mallory", PASSWORD)}).status == 403
        for bad in ("Basic", "Basic !!!notbase64", "Basic " + "YWxpY2U=", "Bearer abc",
                    "Basic " + "//79/Q==", "Basic YWxpY2U6cGFzcw== junk", "Basic ===="):
            resp = srv.get(path, headers={"Authorization": bad})
            assert resp.status in (401, 403), (path, bad)
        ok = srv.get(path, headers={"Authorization": basic("alice", PASSWORD)})
        assert ok.status == 200, path
    assert "Traceback" not in srv.logtext()


def test_only_downloads_protected(server_factory):
    srv = server_factory(PYPI_AUTHENTICATE="update,download", PYPI_FALLBACK="off")
    wheel = make_wheel(srv.packages, "halfopen", "1.0")
    assert srv.get("/simple/halfopen/").status == 200
    assert srv.get(f"/packages/{wheel.name}").status == 401
    assert srv.get(f"/packages/{wheel.name}.metadata").status == 401


# -- changes by others -------------------------------------------------------------------
def test_file_dropped_by_hand_appears_with_metadata_and_removal_disappears(server_factory,
                                                                           tmp_path):
    srv = server_factory(PYPI_FALLBACK="off")
    make_wheel(srv.packages, "handmade", "1.0")
    assert get_json(srv, "/simple/handmade/")["versions"] == ["1.0"]
    (srv.packages / "sub" / "deeper").mkdir(parents=True)
    built = make_wheel(tmp_path, "handmade", "2.0", requires_python=">=3.9")
    dropped = srv.packages / "sub" / "deeper" / built.name
    dropped.write_bytes(built.read_bytes())

    wait_for(lambda: "2.0" in get_json(srv, "/simple/handmade/")["versions"])
    (item,) = [f for f in get_json(srv, "/simple/handmade/")["files"]
               if f["filename"] == built.name]
    assert item["url"] == f"../../packages/sub/deeper/{built.name}"
    assert item["requires-python"] == ">=3.9"
    meta = srv.get(f"/packages/sub/deeper/{built.name}.metadata")
    assert hashlib.sha256(meta.body).hexdigest() == item["core-metadata"]["sha256"]
    assert srv.get(f"/packages/sub/deeper/{built.name}").body == built.read_bytes()

    dropped.unlink()
    wait_for(lambda: get_json(srv, "/simple/handmade/")["versions"] == ["1.0"])
    assert srv.get(f"/packages/sub/deeper/{built.name}").status == 404
    (srv.packages / "handmade-1.0-py3-none-any.whl").unlink()
    wait_for(lambda: srv.get("/simple/handmade/").status == 404)
    wait_for(lambda: "handmade" not in srv.get("/simple/").text)


def test_file_rewritten_in_place_is_seen_within_two_seconds(server_factory, tmp_path):
    srv = server_factory(PYPI_FALLBACK="off")
    first = make_wheel(srv.packages, "inplace", "1.0")
    item = get_json(srv, "/simple/inplace/")["files"][0]
    assert item["hashes"]["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    time.sleep(1.2)
    get_json(srv, "/simple/inplace/")  # the index has seen the quiet directory (and .pypibox)
    other = make_wheel(tmp_path, "inplace", "1.0", requires_python=">=3.10", payload=b"x" * 999)
    with open(first, "r+b") as handle:  # same inode, so the directory's mtime stays put
        handle.write(other.read_bytes())
        handle.truncate()
    moment = time.mktime((2021, 3, 1, 12, 0, 0, 0, 0, 0)) - time.timezone
    os.utime(first, (moment, moment))
    new_hash = hashlib.sha256(other.read_bytes()).hexdigest()

    def current() -> bool:
        """What one worker serves is the new file throughout (each worker checks alone)."""
        item = get_json(srv, "/simple/inplace/")["files"][0]
        meta = srv.get(f"/packages/{first.name}.metadata")
        return (item["hashes"]["sha256"] == new_hash
                and item["upload-time"].startswith("2021-03-01T12:00:00")
                and item["requires-python"] == ">=3.10" and item["size"] == len(other.read_bytes())
                and hashlib.sha256(meta.body).hexdigest() == item["core-metadata"]["sha256"]
                and b"Requires-Python: >=3.10" in meta.body)

    # Every worker (the default is two) must be current: several answers in a row.
    wait_for(lambda: all(current() for _ in range(6)))


def test_remove_pkg_and_upload_are_visible_at_once_on_every_worker(server_factory, tmp_path):
    # Files put in by hand have no recorded owner: an administrator removes them.
    roles = tmp_path / "roles"
    roles.write_text("admin alice\n")
    srv = server_factory(PYPI_WORKERS="3", PYPI_THREADS="2", PYPI_FALLBACK="off",
                         PYPI_ROLES=str(roles))
    auth = {"Authorization": basic("alice", PASSWORD)}
    keep = make_wheel(srv.packages / "nested", "gone-soon", "1.0")
    goes = make_wheel(srv.packages / "nested", "gone-soon", "2.0")
    # Copied in by hand: listed within two seconds (a removal through the API: at once).
    wait_for(lambda: goes.name in srv.get("/simple/gone-soon/").text)
    body = form({":action": "remove_pkg", "name": "gone_soon", "version": "2.0"})
    resp = http("POST", srv.url + "/", data=body, headers={"Content-Type": content_type(), **auth})
    assert resp.status == 200, resp.text
    assert not goes.exists()
    for _ in range(20):  # three workers: each must know at once, not after a timer
        page = srv.get("/simple/gone-soon/").text
        assert goes.name not in page and keep.name in page
        assert srv.get(f"/packages/nested/{goes.name}").status == 404


# -- what metadata files save ------------------------------------------------------------
class CountingProxy:
    """A TCP relay on 127.0.0.1 that counts the bytes the server sends back."""

    def __init__(self, port: int) -> None:
        import socket
        import threading

        self.target = port
        self.sent = 0
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src, dst, count: bool) -> None:
        import socket

        try:
            while data := src.recv(65536):
                if count:
                    with self._lock:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def resolve_bytes(port: int, tmp_path: Path, tag: str) -> tuple[int, int]:
    """Bytes sent for `uv pip compile` and for `pip install --dry-run` of tree-top."""
    sent = []
    for client in ("uv", "pip"):
        proxy = CountingProxy(port)
        index = f"http://127.0.0.1:{proxy.port}/simple/"
        try:
            if client == "uv":
                req = tmp_path / "requirements.in"
                req.write_text("tree-top\n")
                result = uv("pip", "compile", str(req), "--index-url", index, "--no-header",
                            "--cache-dir", str(tmp_path / f"uv-cache-{tag}"), "--quiet",
                            "--python", sys.executable)
            else:
                result = run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-cache-dir",
                              "--ignore-installed", "--index-url", index, "tree-top"])
            assert result.returncode == 0, result.stdout + result.stderr
            assert "tree-leaf" in result.stdout.replace("_", "-")
            sent.append(proxy.sent)
        finally:
            proxy.close()
    return sent[0], sent[1]


def test_metadata_files_spare_uv_the_wheels(server_factory, tmp_path):
    """The README's measurement: bytes sent to resolve a tree of 5 wheels of 500 KB."""
    from conftest import free_port

    srv = server_factory(PYPI_FALLBACK="off")
    tree(srv.packages, payload=os.urandom(500_000))
    ours, ours_pip = resolve_bytes(srv.port, tmp_path, "ours")

    # The same tree behind stock pypiserver, which announces no metadata files.
    stock_port = free_port()
    stock = subprocess.Popen(
        [sys.executable, "-m", "pypiserver", "run", "-p", str(stock_port), "-i", "127.0.0.1",
         "-a", ".", "-P", ".", "--disable-fallback", str(srv.packages)],
        env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if http("GET", f"http://127.0.0.1:{stock_port}/simple/", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "stock pypiserver did not start"
            time.sleep(0.2)
        without, without_pip = resolve_bytes(stock_port, tmp_path, "stock")
    finally:
        stock.terminate()
        stock.wait(10)
    wheel_bytes = sum(p.stat().st_size for p in srv.packages.glob("*.whl"))
    print(f"\n5 wheels of {wheel_bytes} bytes in all. uv pip compile: pypibox sent {ours} bytes,"
          f" stock pypiserver {without}; pip install --dry-run: pypibox {ours_pip},"
          f" stock pypiserver {without_pip}")
    assert ours < without and ours_pip < without_pip
    assert max(ours, ours_pip) < 100_000  # pages and metadata files only, never a 500 KB wheel
