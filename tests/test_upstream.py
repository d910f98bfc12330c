"""The cache of the public index (pypibox.upstream) against real upstream servers on 127.0.0.1.

Upstreams: another pypibox (JSON pages, started by server_factory) and a static PEP 503 tree
served by http.server (tests/upstreams.py), both holding real wheels and sdists; hostile
answers are crafted by hooks of the static server. Each test drives the module in-process,
as the server's route for /simple/<name>/ and /cache/... will.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, clean_env
from pkgfactory import make_wheel
from support import settled
from upstreams import StaticUpstream, fill, sha256, snapshot, write_pages

from pypibox import upstream as upstream_mod
from pypibox.index import PackageIndex
from pypibox.settings import Settings
from pypibox.simple_api import JSON, TEXT_HTML, V1_HTML
from pypibox.upstream import CachedFile, FileStream, Upstream, UpstreamError

DAY = 86400


@pytest.fixture
def area(tmp_path: Path) -> Path:
    """The packages directory of 'our' server (the cache goes under .pypibox/cache)."""
    path = tmp_path / "ours" / "packages"
    path.mkdir(parents=True)
    (tmp_path / "ours" / "auth").mkdir()
    return path


def cache_root(area: Path) -> Path:
    return area / ".pypibox" / "cache"


def make(area: Path, url: str, **env: str) -> Upstream:
    values = {"PYPI_PACKAGES_DIR": str(area), "PYPI_FALLBACK": "cache",
              "PYPI_HTPASSWD": str(area.parent / "auth" / "htpasswd"),
              "PYPI_UPSTREAM": url, "PYPI_UPSTREAM_TIMEOUT": "5s", "HOME": str(area.parent)}
    values.update(env)
    return Upstream(Settings.from_env(values))


@pytest.fixture
def static(tmp_path: Path):
    """A static HTML upstream with demo 1.0 and 2.0 (wheel + sdist each) and 'other' 1.0."""
    root = tmp_path / "static"
    (root / "packages").mkdir(parents=True)
    fill(root / "packages", {"demo": ["1.0", "2.0"], "other": ["1.0"]})
    write_pages(root, {"demo-2.0-py3-none-any.whl": ">=3.8"})
    up = StaticUpstream(root).start()
    yield up
    up.stop()


def read(result: CachedFile | FileStream) -> bytes:
    if isinstance(result, CachedFile):
        return Path(result.path).read_bytes()
    try:
        return b"".join(result)
    finally:
        result.close()


def cached_files(area: Path) -> list[str]:
    top = cache_root(area) / "files"
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file()) \
        if top.exists() else []


# --- pages in both upstream forms ----------------------------------------------------------

def test_html_upstream_page_files_and_both_forms_rendered(static, area):
    up = make(area, static.url + "/simple/")
    project = up.project("Demo")
    assert project is not None and project.name == "demo" and not project.stale
    names = [f.filename for f in project.files]
    assert names == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz",
                     "demo-2.0-py3-none-any.whl", "demo-2.0.tar.gz"]
    assert project.versions == ("1.0", "2.0")
    wheel = project.file("demo-2.0-py3-none-any.whl")
    assert wheel is not None
    assert wheel.url == "/cache/demo/demo-2.0-py3-none-any.whl"
    assert wheel.sha256 == sha256(static.root / "packages" / wheel.filename)
    assert wheel.requires_python == ">=3.8" and wheel.yanked is False

    page = json.loads(up.render(project, JSON).body)
    item = next(f for f in page["files"] if f["filename"] == wheel.filename)
    assert item["url"] == "../../cache/demo/demo-2.0-py3-none-any.whl"
    assert item["hashes"] == {"sha256": wheel.sha256} and item["requires-python"] == ">=3.8"
    assert page["versions"] == ["1.0", "2.0"] and page["name"] == "demo"
    for kind in (V1_HTML, TEXT_HTML):
        body = up.render(project, kind).body.decode()
        assert f'href="../../cache/demo/{wheel.filename}#sha256={wheel.sha256}"' in body
        assert 'data-requires-python="&gt;=3.8"' in body
    assert static.url not in up.render(project, JSON).body.decode()  # links point here

    info = up.file_info("demo", wheel.filename)   # for a HEAD: no download
    assert info == wheel and static.count(f"/packages/{wheel.filename}") == 0
    with pytest.raises(UpstreamError):
        up.file_info("demo", wheel.filename + ".metadata")   # HTML gave no metadata hash
    got = up.open_file("demo", wheel.filename)
    assert isinstance(got, FileStream)
    assert read(got) == (static.root / "packages" / wheel.filename).read_bytes()
    again = up.open_file("demo", wheel.filename)
    assert isinstance(again, CachedFile)
    assert Path(again.path).read_bytes() == (static.root / "packages" / wheel.filename).read_bytes()
    assert Path(again.path).is_relative_to(cache_root(area))
    assert static.count(f"/packages/{wheel.filename}") == 1
    # The private index never lists what the cache holds.
    index = PackageIndex(area)
    try:
        index.refresh(force=True)
        assert index.project_names() == [] and index.stats() == (0, 0)
    finally:
        index.close()


def test_json_upstream_keeps_size_upload_time_and_metadata(server_factory, area):
    pub = server_factory(PYPI_FALLBACK="off")
    old = time.time() - 10 * DAY
    fill(pub.packages, {"demo": ["1.0"]}, mtime={"1.0": old})
    make_wheel(pub.packages, "demo", "1.1", requires_python=">=3.9")
    settled(pub, "demo")
    up = make(area, pub.url + "/simple/")
    project = up.project("demo")
    assert project is not None
    wheel = project.file("demo-1.1-py3-none-any.whl")
    assert wheel is not None and wheel.size == (pub.packages / wheel.filename).stat().st_size
    assert wheel.requires_python == ">=3.9" and wheel.core_metadata
    sdist = project.file("demo-1.0.tar.gz")
    assert sdist is not None and sdist.upload_time is not None
    assert sdist.upload_time.startswith(time.strftime("%Y-%m-%d", time.gmtime(old)))
    assert project.versions == ("1.0", "1.1")
    page = json.loads(up.render(project, JSON).body)
    item = next(f for f in page["files"] if f["filename"] == wheel.filename)
    assert item["size"] == wheel.size and item["core-metadata"] == {"sha256": wheel.core_metadata}
    assert "upload-time" in item
    assert 'data-core-metadata="sha256=' in up.render(project, V1_HTML).body.decode()

    meta = up.open_file("demo", wheel.filename + ".metadata")
    assert isinstance(meta, CachedFile)
    data = Path(meta.path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == wheel.core_metadata
    with zipfile.ZipFile(pub.packages / wheel.filename) as zf:
        assert data == zf.read("demo-1.1.dist-info/METADATA")
    assert read(up.open_file("demo", wheel.filename)) == (pub.packages / wheel.filename).read_bytes()
    assert up.project("no-such-project") is None


def test_private_names_are_never_asked_upstream_nor_served_from_the_cache(static, area):
    up = make(area, static.url + "/simple/")
    read(up.open_file("demo", "demo-1.0.tar.gz"))
    before = len(static.log)
    guarded = Upstream(Settings.from_env({
        "PYPI_PACKAGES_DIR": str(area), "PYPI_UPSTREAM": static.url + "/simple/",
        "PYPI_HTPASSWD": str(area.parent / "auth" / "htpasswd")}),
        private=lambda name: name == "demo")
    for call in (lambda: guarded.project("Demo"),
                 lambda: guarded.open_file("demo", "demo-1.0.tar.gz")):
        with pytest.raises(UpstreamError) as err:
            call()
        assert err.value.status == 404 and "private" in err.value.reason
    assert guarded.project("other") is not None
    assert len(static.log) == before + 1


# --- TTL, revalidation, stale, offline -----------------------------------------------------

def test_ttl_then_etag_revalidation_then_a_changed_page(static, area):
    up = make(area, static.url + "/simple/", PYPI_UPSTREAM_TTL="2s")
    assert up.project("demo") is not None
    assert up.project("demo") is not None
    assert static.count("/simple/demo/") == 1          # within the TTL: no request
    time.sleep(2.2)
    project = up.project("demo")
    assert project is not None and len(project.files) == 4
    revalidation = static.log[-1]
    assert revalidation.status == 304 and revalidation.headers.get("if-none-match")
    assert up.project("demo") is not None
    assert static.count("/simple/demo/") == 2          # the TTL runs again from the 304
    fill(static.root / "packages", {"demo": ["3.0"]})
    write_pages(static.root)
    time.sleep(2.2)
    fresh = up.project("demo")
    assert fresh is not None and "3.0" in fresh.versions and fresh.etag != project.etag
    assert static.count("/simple/demo/", 200) == 2


def test_stale_page_and_cached_files_when_the_upstream_is_down(static, area):
    up = make(area, static.url + "/simple/", PYPI_UPSTREAM_TTL="off")
    wheel = "demo-1.0-py3-none-any.whl"
    read(up.open_file("demo", wheel))
    static.stop()
    project = up.project("demo")
    assert project is not None and project.stale and len(project.files) == 4
    assert isinstance(up.open_file("demo", wheel), CachedFile)
    t0 = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        up.project("other")
    assert err.value.status == 502 and "connection refused" in err.value.reason
    assert time.monotonic() - t0 < 5
    with pytest.raises(UpstreamError) as err:   # listed, never fetched: nothing to serve
        read(up.open_file("demo", "demo-1.0.tar.gz"))
    assert err.value.status == 502


def test_a_project_removed_upstream_is_no_longer_served(static, area):
    up = make(area, static.url + "/simple/", PYPI_UPSTREAM_TTL="off")
    assert up.project("other") is not None
    (static.root / "simple" / "other" / "index.html").unlink()
    assert up.project("other") is None
    assert not (cache_root(area) / "pages" / "other.json").exists()


def test_a_slow_upstream_gets_504_within_the_timeout(static, area):
    def never(handler) -> bool:
        time.sleep(6)
        return False

    static.hooks["/simple/slow/"] = never
    up = make(area, static.url + "/simple/", PYPI_UPSTREAM_TIMEOUT="1s")
    t0 = time.monotonic()
    with pytest.raises(UpstreamError) as err:
        up.project("slow")
    assert err.value.status == 504 and "1 s" in err.value.reason
    assert time.monotonic() - t0 < 4


def test_offline_serves_only_the_cache_and_never_calls_out(static, area):
    up = make(area, static.url + "/simple/")
    read(up.open_file("demo", "demo-1.0-py3-none-any.whl"))
    before = len(static.log)
    off = make(area, static.url + "/simple/", PYPI_UPSTREAM_OFFLINE="on", PYPI_UPSTREAM_TTL="off")
    project = off.project("demo")
    assert project is not None and len(project.files) == 4
    assert isinstance(off.open_file("demo", "demo-1.0-py3-none-any.whl"), CachedFile)
    for call in (lambda: off.project("other"), lambda: off.open_file("demo", "demo-1.0.tar.gz")):
        with pytest.raises(UpstreamError) as err:
            call()
        assert err.value.status == 404 and "PYPI_UPSTREAM_OFFLINE" in err.value.reason
    assert len(static.log) == before


# --- cooldown -------------------------------------------------------------------------------

def test_cooldown_hides_a_fresh_release_and_the_exemption_file_lifts_it(server_factory, area):
    pub = server_factory(PYPI_FALLBACK="off")
    fill(pub.packages, {"demo": ["1.0"]}, mtime={"1.0": time.time() - 10 * DAY})
    fill(pub.packages, {"demo": ["2.0"]})   # uploaded just now
    settled(pub, "demo")
    exempt = area.parent / "auth" / "min-age-exempt"
    up = make(area, pub.url + "/simple/", PYPI_UPSTREAM_MIN_AGE="3d")
    project = up.project("demo")
    assert project is not None
    assert project.versions == ("1.0",) and project.hidden == 2
    assert [f.filename for f in project.files] == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"]
    assert "2.0" not in up.render(project, JSON).body.decode()
    with pytest.raises(UpstreamError) as err:
        up.open_file("demo", "demo-2.0-py3-none-any.whl")
    assert err.value.status == 404

    exempt.write_text("# a security fix we need today\nDemo\n")
    time.sleep(1.1)   # the file is looked at no more than once a second
    lifted = up.project("demo")
    assert lifted is not None and lifted.versions == ("1.0", "2.0") and lifted.hidden == 0
    assert lifted.etag != project.etag
    assert read(up.open_file("demo", "demo-2.0-py3-none-any.whl")) == \
        (pub.packages / "demo-2.0-py3-none-any.whl").read_bytes()
    exempt.write_bytes(b"\xff\xfe broken")   # unreadable: the last good list stays
    time.sleep(1.1)
    assert up.project("demo").versions == ("1.0", "2.0")


def test_cooldown_on_an_html_upstream_counts_from_first_sight(static, area):
    up = make(area, static.url + "/simple/", PYPI_UPSTREAM_MIN_AGE="3s")
    project = up.project("demo")
    assert project is not None and project.files == () and project.hidden == 4
    time.sleep(3.2)
    assert len(up.project("demo").files) == 4


# --- integrity ----------------------------------------------------------------------------

def test_a_file_changed_upstream_is_refused_and_never_kept(static, area):
    up = make(area, static.url + "/simple/")
    name = "demo-2.0-py3-none-any.whl"
    assert up.project("demo") is not None
    path = static.root / "packages" / name
    good = path.read_bytes()
    path.write_bytes(bytes(b ^ 0x5A for b in good))   # same length, other bytes
    stream = up.open_file("demo", name)
    assert isinstance(stream, FileStream) and stream.size == len(good)  # its Content-Length
    got = []
    with pytest.raises(UpstreamError) as err:
        for chunk in stream:
            got.append(chunk)  # noqa: PERF402 - what arrived before the error
    assert err.value.status == 502 and "sha256" in err.value.reason
    assert len(b"".join(got)) < len(good)          # the last byte was never sent
    assert cached_files(area) == []
    assert not list((cache_root(area) / "tmp").rglob("*.whl"))
    path.write_bytes(good)
    assert read(up.open_file("demo", name)) == good
    assert cached_files(area) == [f"demo/{name}"]


def test_concurrent_requests_share_one_fetch(tmp_path, area):
    root = tmp_path / "slow"
    (root / "packages").mkdir(parents=True)
    make_wheel(root / "packages", "big", "1.0", payload=os.urandom(400_000))
    write_pages(root)
    up_srv = StaticUpstream(root, delay=0.02).start()
    try:
        up = make(area, up_srv.url + "/simple/")
        name = "big-1.0-py3-none-any.whl"
        up.project("big")
        barrier = threading.Barrier(6)
        results: list[bytes] = []
        errors: list[BaseException] = []

        def client() -> None:
            barrier.wait()
            try:
                results.append(read(up.open_file("big", name)))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert not errors
        want = (root / "packages" / name).read_bytes()
        assert len(results) == 6 and all(r == want for r in results)
        assert up_srv.count(f"/packages/{name}") == 1
    finally:
        up_srv.stop()


FETCH_SCRIPT = """
import sys, time
from pathlib import Path
from pypibox.settings import Settings
from pypibox.upstream import Upstream, CachedFile
up = Upstream(Settings.from_env({"PYPI_PACKAGES_DIR": sys.argv[1], "PYPI_UPSTREAM": sys.argv[2],
                                 "PYPI_HTPASSWD": sys.argv[1] + "/../auth/htpasswd"}))
up.project("big")
while time.time() < float(sys.argv[3]):
    time.sleep(0.005)
got = up.open_file("big", "big-1.0-py3-none-any.whl")
data = Path(got.path).read_bytes() if isinstance(got, CachedFile) else b"".join(got)
sys.stdout.write(f"{type(got).__name__} {len(data)}")
"""


def test_two_processes_on_one_volume_share_one_fetch(tmp_path, area):
    root = tmp_path / "slow"
    (root / "packages").mkdir(parents=True)
    wheel = make_wheel(root / "packages", "big", "1.0", payload=os.urandom(400_000))
    write_pages(root)
    up_srv = StaticUpstream(root, delay=0.02).start()
    try:
        start_at = str(time.time() + 2.5)
        procs = [subprocess.Popen([sys.executable, "-c", FETCH_SCRIPT, str(area),
                                   up_srv.url + "/simple/", start_at],
                                  env=clean_env(PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=60) for p in procs]
        for (out, err), p in zip(outs, procs, strict=True):
            assert p.returncode == 0, err
            assert out.endswith(f" {wheel.stat().st_size}")
        assert up_srv.count("/packages/big-1.0-py3-none-any.whl") == 1
        assert cached_files(area) == ["big/big-1.0-py3-none-any.whl"]
    finally:
        up_srv.stop()


def test_eviction_holds_the_size_limit_and_keeps_recent_files(tmp_path, area):
    root = tmp_path / "many"
    (root / "packages").mkdir(parents=True)
    wheels = [make_wheel(root / "packages", f"p{i}", "1.0", payload=os.urandom(50_000))
              for i in range(8)]
    write_pages(root)
    srv = StaticUpstream(root).start()
    try:
        size = max(w.stat().st_size for w in wheels)
        limit = int(size * 3.5)
        up = make(area, srv.url + "/simple/", PYPI_CACHE_MAX_SIZE=str(limit))
        for w in wheels:
            assert read(up.open_file(w.name.split("-")[0], w.name)) == w.read_bytes()
            total = sum(p.stat().st_size for p in (cache_root(area) / "files").rglob("*")
                        if p.is_file())
            assert total <= limit
        kept = cached_files(area)
        assert f"p7/{wheels[-1].name}" in kept and f"p0/{wheels[0].name}" not in kept
        assert 1 <= len(kept) <= 3
        stats = up.stats()
        assert stats.files == len(kept) and stats.bytes <= limit and stats.max_bytes == limit
        # An evicted file is fetched again when asked.
        assert read(up.open_file("p0", wheels[0].name)) == wheels[0].read_bytes()
        assert srv.count(f"/packages/{wheels[0].name}") == 2
    finally:
        srv.stop()


# --- hostile or broken upstreams ------------------------------------------------------------

def send(handler, body: bytes, ctype: str, status: int = 200, length: int | None = None,
         extra: dict[str, str] | None = None) -> bool:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    else:
        handler.send_header("Connection", "close")
        handler.close_connection = True
    for k, v in (extra or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    try:
        handler.wfile.write(body)
    except OSError:
        pass
    return True


def json_page(name: str, files: list[dict]) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": name, "files": files}).encode()


@pytest.fixture
def hostile(static, area, tmp_path):
    """The static upstream, an Upstream on it, and a check that nothing outside the cache
    area changed (and no file named 'evil' exists anywhere under the test's directory)."""
    before = snapshot(tmp_path, cache_root(area))
    up = make(area, static.url + "/simple/")

    def untouched() -> None:
        after = snapshot(tmp_path, cache_root(area))
        assert after == before
        assert not [p for p in tmp_path.rglob("*evil*")]

    return static, up, untouched


def test_hostile_file_names_are_dropped(hostile, static):
    srv, up, untouched = hostile
    good = static.root / "packages" / "demo-1.0-py3-none-any.whl"
    digest = sha256(good)
    files = [{"filename": n, "url": "/packages/demo-1.0-py3-none-any.whl",
              "hashes": {"sha256": digest}}
             for n in ("../evil-1.0-py3-none-any.whl", "/tmp/evil-1.0.tar.gz",
                       ".evil-1.0.tar.gz", "sub/evil-1.0.tar.gz", "evil-1.0.tar.gz\x00.whl",
                       "..\\evil-1.0.tar.gz", "demo-1.0-py3-none-any.whl")]
    srv.hooks["/simple/bad/"] = lambda h: send(h, json_page("bad", files), JSON, length=None)
    html_rows = "".join(f'<a href="/packages/x.whl#sha256={digest}">{n}</a>'
                        for n in ("../../evil-1.0-py3-none-any.whl", "/etc/evil-1.0.tar.gz"))
    srv.hooks["/simple/bad-html/"] = lambda h: send(h, html_rows.encode(), "text/html")
    project = up.project("bad")
    assert project is not None and [f.filename for f in project.files] == \
        ["demo-1.0-py3-none-any.whl"]
    assert up.project("bad-html").files == ()
    for name in ("../evil-1.0-py3-none-any.whl", "..", "/etc/passwd", ".evil-1.0.tar.gz",
                 "evil-1.0.tar.gz"):
        with pytest.raises(UpstreamError) as err:
            up.open_file("bad", name)
        assert err.value.status == 404
    with pytest.raises(UpstreamError):
        up.open_file("../../x", "demo-1.0-py3-none-any.whl")
    assert read(up.open_file("bad", "demo-1.0-py3-none-any.whl")) == good.read_bytes()
    untouched()


# (what the upstream's page says of its PEP 792 status, what we pass on): unknown statuses
# and non-strings are no status; a reason is one line of at most 500 characters.
STATUS_CASES = [
    ({"status": "archived", "reason": "moved"}, ("archived", "moved")),
    ({"status": " Deprecated "}, ("deprecated", "")),
    ({"status": "active", "reason": "fine"}, ("", "")),
    ({"status": "gone-forever", "reason": "?"}, ("", "")),
    ({"status": ["archived"]}, ("", "")),
    ({"status": "archived", "reason": {"x": 1}}, ("archived", "")),
    ({"status": "archived", "reason": "a\r\nSet-Cookie: x=1\x00\x1b[31m"},
     ("archived", "a Set-Cookie: x=1 [31m")),
    ({"status": "archived", "reason": "w" * 100_000}, ("archived", "w" * 500)),
    ("archived", ("", "")),
]


@pytest.mark.parametrize("given,shown", STATUS_CASES)
def test_the_upstreams_project_status_is_checked_before_it_is_passed_on(hostile, given, shown):
    srv, up, untouched = hostile
    good = srv.root / "packages" / "demo-1.0-py3-none-any.whl"
    files = [{"filename": good.name, "url": "/packages/" + good.name,
              "hashes": {"sha256": sha256(good)}}]
    body = json.dumps({"meta": {"api-version": "1.4"}, "name": "st", "files": files,
                       "project-status": given}).encode()
    srv.hooks["/simple/st/"] = lambda h: send(h, body, JSON, length=len(body))
    project = up.project("st")
    assert project is not None and (project.status, project.reason) == shown
    page = json.loads(up.render(project, JSON).body)
    assert page.get("project-status") == (
        {"status": shown[0], "reason": shown[1]} if shown[0] else None)
    assert [f["filename"] for f in page["files"]] == [good.name]
    html = up.render(project, V1_HTML).body.decode()
    assert ("pypi:project-status" in html) == bool(shown[0])
    assert not any(c in html for c in "\r\x00\x1b")
    untouched()


def test_an_html_upstreams_quarantine_hides_its_files_and_a_forged_record_is_rechecked(
        hostile, area):
    srv, up, untouched = hostile
    good = srv.root / "packages" / "demo-1.0-py3-none-any.whl"
    row = f'<a href="/packages/{good.name}#sha256={sha256(good)}">{good.name}</a>'
    meta = ('<meta name="pypi:project-status" content="quarantined">'
            '<meta name="pypi:project-status-reason" content="malware &amp; worse">')
    srv.hooks["/simple/held/"] = lambda h: send(h, (meta + row).encode(), "text/html")
    project = up.project("held")
    assert project is not None and project.files == ()
    assert (project.status, project.reason) == ("quarantined", "malware & worse")
    with pytest.raises(UpstreamError) as err:
        up.open_file("held", good.name)
    assert err.value.status == 404
    # A record on the volume is never trusted blindly: a status written into it by hand
    # that the PEP does not name is no status.
    record = next(cache_root(area).rglob("held*.json"))
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "status": "<script>", "reason": 7}))
    fresh = make(area, srv.url + "/simple/", PYPI_UPSTREAM_TTL="1h")
    project = fresh.project("held")
    assert project is not None and (project.status, project.reason) == ("", "")
    assert [f.filename for f in project.files] == [good.name]
    untouched()


def test_links_to_other_schemes_are_dropped_and_other_hosts_work(hostile, tmp_path_factory):
    srv, up, untouched = hostile
    other_root = tmp_path_factory.mktemp("files-host")
    (other_root / "packages").mkdir(parents=True)
    wheel = make_wheel(other_root / "packages", "spread", "1.0")
    files_host = StaticUpstream(other_root).start()
    try:
        digest = sha256(wheel)
        files = [
            {"filename": "spread-0.1.tar.gz", "url": "file:///etc/passwd",
             "hashes": {"sha256": digest}},
            {"filename": "spread-0.2.tar.gz", "url": "ftp://127.0.0.1/x.tar.gz",
             "hashes": {"sha256": digest}},
            {"filename": "spread-0.3.tar.gz", "url": "javascript:alert(1)",
             "hashes": {"sha256": digest}},
            {"filename": wheel.name, "url": f"{files_host.url}/packages/{wheel.name}",
             "hashes": {"sha256": digest}},
        ]
        srv.hooks["/simple/spread/"] = lambda h: send(h, json_page("spread", files), JSON)
        project = up.project("spread")
        assert project is not None and [f.filename for f in project.files] == [wheel.name]
        assert read(up.open_file("spread", wheel.name)) == wheel.read_bytes()
        assert files_host.count(f"/packages/{wheel.name}") == 1
        for name in ("spread-0.1.tar.gz", "spread-0.2.tar.gz"):
            with pytest.raises(UpstreamError):
                up.open_file("spread", name)
    finally:
        files_host.stop()
    untouched()


def test_an_enormous_page_is_cut_off(hostile, monkeypatch):
    srv, up, untouched = hostile
    monkeypatch.setattr(upstream_mod, "PAGE_LIMIT", 2 << 20)
    junk = b"<a href='x'>y</a>" * ((3 << 20) // 17)
    srv.hooks["/simple/huge/"] = lambda h: send(h, junk, "text/html")   # no length: to EOF
    srv.hooks["/simple/huge-told/"] = lambda h: send(h, b"", "text/html", length=50 << 20)
    for name in ("huge", "huge-told"):
        with pytest.raises(UpstreamError) as err:
            up.project(name)
        assert err.value.status == 502 and "larger than 2 MiB" in err.value.reason
    untouched()


def test_redirect_loops_and_redirects_to_other_schemes_are_refused(hostile):
    srv, up, untouched = hostile

    def loop(h) -> bool:
        return send(h, b"", "text/plain", status=302, length=0,
                    extra={"Location": "/simple/loop/?again"})

    srv.hooks["/simple/loop/"] = loop
    srv.hooks["/simple/to-file/"] = lambda h: send(h, b"", "text/plain", 301, 0,
                                                   {"Location": "file:///etc/passwd"})
    with pytest.raises(UpstreamError) as err:
        up.project("loop")
    assert err.value.status == 502 and "redirects" in err.value.reason
    assert srv.count("/simple/loop/") == 6
    with pytest.raises(UpstreamError) as err:
        up.project("to-file")
    assert err.value.status == 502 and "file:" in err.value.reason
    untouched()


def test_wrong_content_type_and_unparsable_json(hostile):
    srv, up, untouched = hostile
    srv.hooks["/simple/binary/"] = lambda h: send(h, b"\x00\x01", "application/octet-stream", 200, 2)
    srv.hooks["/simple/notjson/"] = lambda h: send(h, b"{nope", JSON, 200, 5)
    srv.hooks["/simple/wrongjson/"] = lambda h: send(h, b'{"files": 3}', JSON, 200, 12)
    for name, words in (("binary", "of type application/octet-stream"),
                        ("notjson", "does not parse"), ("wrongjson", "no list of files")):
        with pytest.raises(UpstreamError) as err:
            up.project(name)
        assert err.value.status == 502 and words in err.value.reason
    untouched()


def test_a_cached_page_is_served_stale_when_the_upstream_turns_to_garbage(static, area):
    up = make(area, static.url + "/simple/", PYPI_UPSTREAM_TTL="off")
    assert len(up.project("demo").files) == 4
    static.hooks["/simple/demo/"] = lambda h: send(h, b"{nope", JSON, 200, 5)
    project = up.project("demo")
    assert project is not None and project.stale and len(project.files) == 4


def test_files_longer_or_shorter_than_announced(hostile, static, area):
    srv, up, untouched = hostile
    good = static.root / "packages" / "demo-1.0-py3-none-any.whl"
    data = good.read_bytes()
    digest = sha256(good)

    def entry(name: str) -> dict:
        return {"filename": name, "url": f"/files/{name}", "hashes": {"sha256": digest},
                "size": len(data)}

    names = ["long_told-1.0.tar.gz", "long_untold-1.0.tar.gz", "short-1.0.tar.gz"]
    srv.hooks["/simple/sized/"] = lambda h: send(h, json_page("sized", [entry(n) for n in names]),
                                                 JSON)
    srv.hooks["/files/long_told-1.0.tar.gz"] = lambda h: send(
        h, data + b"x" * 100, "application/octet-stream", length=len(data) + 100)
    srv.hooks["/files/long_untold-1.0.tar.gz"] = lambda h: send(
        h, data + b"x" * 100_000, "application/octet-stream")
    srv.hooks["/files/short-1.0.tar.gz"] = lambda h: send(
        h, data[:-100], "application/octet-stream")
    assert up.project("sized") is not None
    with pytest.raises(UpstreamError) as err:
        up.open_file("sized", names[0])
    assert err.value.status == 502 and "page says" in err.value.reason
    for name, words in ((names[1], "more than"), (names[2], "of the")):
        stream = up.open_file("sized", name)
        assert isinstance(stream, FileStream) and stream.size == len(data)
        got = []
        with pytest.raises(UpstreamError) as err:
            for chunk in stream:
                got.append(chunk)  # noqa: PERF402 - what arrived before the error
        assert words in err.value.reason and len(b"".join(got)) < len(data)
    assert not list((cache_root(area) / "files").rglob("*.tar.gz"))
    untouched()


def test_a_file_of_unknown_length_is_fetched_whole_before_it_is_served(hostile, static, area):
    srv, up, untouched = hostile
    good = static.root / "packages" / "demo-1.0-py3-none-any.whl"
    data, digest = good.read_bytes(), sha256(good)
    rows = "".join(f'<a href="/files/{n}#sha256={digest}">{n}</a>'
                   for n in ("nolen-1.0.tar.gz", "nolen-2.0.tar.gz"))
    srv.hooks["/simple/nolen/"] = lambda h: send(h, rows.encode(), "text/html")
    srv.hooks["/files/nolen-1.0.tar.gz"] = lambda h: send(h, data, "application/octet-stream")
    srv.hooks["/files/nolen-2.0.tar.gz"] = lambda h: send(h, data[:-1] + b"!",
                                                          "application/octet-stream")
    got = up.open_file("nolen", "nolen-1.0.tar.gz")   # neither the page nor the answer has a size
    assert isinstance(got, CachedFile) and Path(got.path).read_bytes() == data
    with pytest.raises(UpstreamError) as err:          # nothing sent yet: the route says 502
        up.open_file("nolen", "nolen-2.0.tar.gz")
    assert err.value.status == 502 and "sha256" in err.value.reason
    assert cached_files(area) == ["nolen/nolen-1.0.tar.gz"]
    untouched()


# --- credentials ----------------------------------------------------------------------------

SECRET = "pa55-Wd-9f3c1"


def test_upstream_credentials_never_in_pages_logs_errors_or_files(tmp_path, area, caplog):
    root = tmp_path / "private-up"
    (root / "packages").mkdir(parents=True)
    fill(root / "packages", {"demo": ["1.0"]})
    write_pages(root)
    srv = StaticUpstream(root, auth=("robot", SECRET)).start()
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    try:
        url = srv.url.replace("http://", f"http://robot:{SECRET}@") + "/simple/"
        up = make(area, url, PYPI_UPSTREAM_TTL="off")
        project = up.project("demo")
        assert project is not None and len(project.files) == 2
        texts += [up.render(project, k).body.decode() for k in (JSON, V1_HTML)]
        texts.append(read(up.open_file("demo", "demo-1.0.tar.gz")).decode("latin-1"))
        wrong = make(area, url.replace(SECRET, "wrong-" + SECRET[::-1]))
        with pytest.raises(UpstreamError) as err:
            wrong.project("other")
        assert "401" in err.value.reason
        texts.append(err.value.reason)
        srv.stop()
        assert up.project("demo").stale
        with pytest.raises(UpstreamError) as err:
            up.project("other")
        texts += [err.value.reason, str(err.value), repr(err.value)]
        texts.append(repr(Settings.from_env({"PYPI_UPSTREAM": url})))
        for path in cache_root(area).rglob("*"):
            if path.is_file():
                texts.append(path.read_bytes().decode("latin-1"))
    finally:
        srv.stop()
    texts += [r.getMessage() for r in caplog.records]
    assert any("127.0.0.1" in t_ for t_ in texts)
    for text in texts:
        assert SECRET not in text and SECRET[::-1] not in text and "robot:" not in text
    assert srv.count("/packages/demo-1.0.tar.gz", 200) == 1


def test_upstream_credentials_from_a_netrc_file(tmp_path, area):
    root = tmp_path / "private-up"
    (root / "packages").mkdir(parents=True)
    fill(root / "packages", {"demo": ["1.0"]})
    write_pages(root)
    srv = StaticUpstream(root, auth=("robot", SECRET)).start()
    try:
        netrc = tmp_path / "netrc"
        netrc.write_text(f"machine 127.0.0.1\nlogin robot\npassword {SECRET}\n")
        netrc.chmod(0o600)
        up = make(area, srv.url + "/simple/", PYPI_UPSTREAM_NETRC=str(netrc))
        assert len(up.project("demo").files) == 2
        assert read(up.open_file("demo", "demo-1.0.tar.gz")) == \
            (root / "packages" / "demo-1.0.tar.gz").read_bytes()
        without = make(area, srv.url + "/simple/")
        with pytest.raises(UpstreamError) as err:
            without.project("other")
        assert "401" in err.value.reason
    finally:
        srv.stop()


# --- settings and the command line ----------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [
    ("PYPI_FALLBACK", "sometimes"), ("PYPI_UPSTREAM", "ftp://example.org/"),
    ("PYPI_UPSTREAM_TTL", "ten minutes"), ("PYPI_UPSTREAM_TIMEOUT", "0"),
    ("PYPI_UPSTREAM_MIN_AGE", "-3d"), ("PYPI_CACHE_MAX_SIZE", "lots"),
    ("PYPI_UPSTREAM_OFFLINE", "maybe"), ("PYPI_UPSTREAM_NETRC", "/no/such/netrc"),
])
def test_bad_settings_exit_2_naming_the_variable(area, name, value):
    env = clean_env(PYTHONPATH=str(ROOT), PYPI_PACKAGES_DIR=str(area), **{name: value})
    res = subprocess.run([sys.executable, "-m", "pypibox", "cache", "stats"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and name in res.stderr


def test_durations_and_choices():
    s = Settings.from_env({"PYPI_FALLBACK": "cache", "PYPI_UPSTREAM_TTL": "90s",
                           "PYPI_UPSTREAM_MIN_AGE": "3d", "PYPI_CACHE_MAX_SIZE": "10G",
                           "PYPI_UPSTREAM_TIMEOUT": "1.5m"})
    assert (s.fallback, s.caches, s.redirects) == ("cache", True, False)
    assert (s.upstream_ttl, s.upstream_min_age, s.upstream_timeout) == (90, 3 * DAY, 90)
    assert s.cache_max_size == 10 << 30
    d = Settings.from_env({})
    assert (d.fallback, d.redirects, d.upstream_ttl, d.upstream_min_age) == ("on", True, 600, 0)
    assert Settings.from_env({"PYPI_FALLBACK": "off"}).fallback == "off"


def cli(area: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = clean_env(PYTHONPATH=str(ROOT), PYPI_PACKAGES_DIR=str(area),
                     PYPI_HTPASSWD=str(area.parent / "auth" / "htpasswd"), **env)
    return subprocess.run([sys.executable, "-m", "pypibox", "cache", *args], env=full,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cache_command_line_stats_prune_forget(static, area):
    up = make(area, static.url + "/simple/")
    for name in ("demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"):
        read(up.open_file("demo", name))
    read(up.open_file("other", "other-1.0.tar.gz"))
    stats = cli(area, "stats")
    assert stats.returncode == 0, stats.stderr
    assert "3 files" in stats.stdout and "2 projects" in stats.stdout
    as_json = json.loads(cli(area, "stats", "--json").stdout)
    assert as_json["files"] == 3 and as_json["bytes"] == sum(
        (static.root / "packages" / n).stat().st_size
        for n in ("demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz", "other-1.0.tar.gz"))
    forget = cli(area, "forget", "Demo")
    assert forget.returncode == 0 and "2 files" in forget.stdout
    assert cached_files(area) == ["other/other-1.0.tar.gz"]
    assert not (cache_root(area) / "pages" / "demo.json").exists()
    prune = cli(area, "prune", "--max-size", "1")
    assert prune.returncode == 0 and "1 files" in prune.stdout
    assert cached_files(area) == []
    bad = cli(area, "forget", "../etc")
    assert bad.returncode == 1 and "not a project name" in bad.stderr


def test_a_corrupt_record_is_ignored_and_fetched_again(static, area, caplog):
    up = make(area, static.url + "/simple/")
    assert up.project("demo") is not None
    record = cache_root(area) / "pages" / "demo.json"
    for junk in (b"{not json", b'{"v": 1, "name": "demo", "files": []}', b"\xff" * 10):
        record.write_bytes(junk)
        fresh = make(area, static.url + "/simple/")
        project = fresh.project("demo")
        assert project is not None and len(project.files) == 4
        assert json.loads(record.read_bytes())["name"] == "demo"   # rewritten
    assert "ignoring" in caplog.text
