"""Checks of the measuring instrument itself, against real nginx, wrk and pypibox processes.

Run: PYTHONPATH=. .venv/bin/python -m pytest bench/test_bench.py
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from bench import clients, report, servers, trees, wrk
from bench.workloads import all_workloads, check

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()) or not shutil.which("wrk"),
    reason="needs nginx and wrk (make bench installs them)")


@pytest.fixture
def base():
    """A temporary directory nginx's unprivileged worker can read (pytest's is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="bench-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nginx(base: Path):
    tree = trees.scaling_tree(base / "tree", 30)
    static = trees.static_index(tree, base / "static")
    work = base / "nginx"
    work.mkdir()
    srv = servers.start_nginx(workdir=work, packages=tree.packages, static=static)
    yield srv, tree
    srv.stop()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def test_static_index_links_resolve_with_right_sha256(nginx):
    srv, tree = nginx
    page = _get(f"{srv.url}/simple/{trees.SCALE_PROJECT}/").decode()
    links = re.findall(r'href="\.\./\.\./packages/([^"#]+)#sha256=([0-9a-f]{64})"', page)
    assert len(links) == 10
    for name, digest in links:
        assert hashlib.sha256(_get(f"{srv.url}/packages/{name}")).hexdigest() == digest
    assert _get(f"{srv.url}/simple/").count(b"<a ") == tree.projects


def test_wrk_counts_requests_and_failures(nginx):
    srv, _ = nginx
    ok = wrk.run(f"{srv.url}/simple/", 1, connections=4)
    assert ok.requests > 0 and ok.rps > 0 and ok.errors == 0
    assert 0 < ok.p50_ms <= ok.p99_ms
    missing = wrk.run(f"{srv.url}/simple/no-such-project/", 1, connections=4)
    assert missing.requests > 0 and missing.non_2xx_3xx == missing.requests


def test_process_tree_memory_and_cpu_include_the_worker(nginx):
    srv, _ = nginx
    master_kb = servers._rss_kb(srv.proc.pid)
    assert servers.tree_rss(srv.proc.pid) > master_kb * 1024
    before = servers.tree_cpu(srv.proc.pid)
    with servers.PeakRss(srv.proc.pid) as mem:
        wrk.run(f"{srv.url}/simple/", 1, connections=4)
    assert mem.peak > 0
    assert servers.tree_cpu(srv.proc.pid) > before


def test_check_refuses_a_wrong_answer(nginx):
    srv, _ = nginx
    page = next(w for w in all_workloads() if w.key == "scale-100")  # expects 10 links
    assert check(f"{srv.url}/simple/{trees.SCALE_PROJECT}/", page, {}, {}) == ""
    big = next(w for w in all_workloads() if w.key == "simple")
    assert "links" in check(f"{srv.url}/simple/", big, {}, {})  # 3 projects, not 1,000
    assert check(f"{srv.url}/simple/nothing/", page, {}, {}) == "HTTP 404"


def test_uploads_reach_pypibox_and_bad_credentials_count_as_errors(base: Path):
    packages = base / "packages"
    packages.mkdir()
    htpasswd = base / "htpasswd"
    htpasswd.write_text("u:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    work = base / "srv"
    work.mkdir()
    srv = servers.start_pypibox(workdir=work, packages=packages, htpasswd=htpasswd, auth=False,
                                credentials="")
    try:
        files = trees.upload_files(base / "src", 3)
        good = clients.upload(srv.url, files, servers.basic("u", "pw"), connections=2)
        assert (good.count, good.errors) == (3, 0)
        assert sorted(p.name for p in packages.iterdir() if not p.name.startswith(".")) == \
            sorted(f.name for f in files)
        more = trees.upload_files(base / "src2", 2)
        more = [f.rename(f.with_name(f.name.replace("uploaded", "other"))) for f in more]
        bad = clients.upload(srv.url, more, servers.basic("u", "wrong"), connections=1)
        assert (bad.count, bad.errors) == (0, 2)
    finally:
        srv.stop()


def test_targets_pass_and_miss():
    wls = all_workloads()
    med = {
        "project": {"pypibox": {"rps": 1000.0}, "stock": {"rps": 50.0}, "nginx": {"rps": 8000.0}},
        "auth-project": {"pypibox": {"rps": 700.0}},
    }
    report.add_ratios(med, wls)
    got = {t["target"]: t["status"] for t in report.targets(med, wls)}
    assert got["project: req/s vs stock"] == "PASS"           # 20x >= 10x
    assert got["project: req/s vs nginx"] == "MISS"           # 0.125x < 0.25x
    assert got["auth-project: req/s vs nginx (project)"] == "MISS"
    assert got["auth-project: req/s vs own unauthenticated"] == "MISS"  # 0.7x < 0.8x
    assert got["simple: req/s vs stock"] == "n/a"


def test_scaling_section_measures_a_small_tree(tmp_path, monkeypatch):
    """The scaling section end to end on 50 files: every figure there, the tree cached."""
    from bench import scaling

    monkeypatch.setattr(scaling, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(scaling, "UPLOADS", 3)
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("bench:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n")
    results, table = scaling.run([50], tmp_path / "work", htpasswd,
                                 servers.basic("bench", "pw"), 1)
    (fig,) = results
    assert "note" not in fig, fig
    for _label, key, _fmt in scaling.ROWS:
        assert fig.get(key) is not None, key
    assert fig["project_warm_errors"] == fig["upload_errors"] == 0
    assert fig["other_sees_upload_max_ms"] < 10_000
    assert "| 50 files |" in table
    assert (tmp_path / "cache" / "tree-50" / "done").exists()
    assert not list((tmp_path / "cache" / "tree-50" / "packages").glob("uploaded*"))


def test_cache_section_installs_through_nginx_and_pypibox(base: Path):
    from bench import cache

    bench = cache.CacheBench(base, rounds=1, proxies=("direct", "pypibox"))
    bench.run()
    med = bench.medians()
    for client in cache.CLIENTS:
        for proxy in ("direct", "pypibox"):
            assert med[client][proxy]["cold"] and med[client][proxy]["warm"], bench.notes
    assert bench.tree.files == cache.PROJECTS * 6
    names = {t["target"] for t in bench.targets()}
    assert "cache uv: warm speed vs direct nginx" in names
    assert "| uv | direct |" in bench.table()


def test_cache_section_notes_an_index_that_does_not_list_the_project(nginx):
    from bench import cache

    srv, _ = nginx
    assert "HTTP 404" in cache.check_proxy(srv.url + "/simple/", "cachebench-01", 6)
    assert "links" in cache.check_proxy(srv.url + "/simple/", trees.SCALE_PROJECT, 11)
