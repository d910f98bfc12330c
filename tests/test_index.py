"""The package index on real trees of real archives: what is listed where, and how it keeps up.

In-process PackageIndex objects, and real second processes (``python -c``) for what other
workers and servers do; files are changed on disk the way a user or another server would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import ROOT
from pkgfactory import make_sdist, make_wheel
from support import wait_for

from pypibox import indexdb, validate
from pypibox.index import PackageIndex

MODES = ["auto", "poll"]


@pytest.fixture
def root(tmp_path) -> Path:
    """The packages directory (other files of a test go next to it, in tmp_path)."""
    path = tmp_path / "packages"
    path.mkdir()
    return path


@pytest.fixture
def opened():
    """Open PackageIndex objects; all are closed at the end."""
    made: list[PackageIndex] = []

    def make(root: Path, **kw) -> PackageIndex:
        index = PackageIndex(root, **kw)
        made.append(index)
        return index

    yield make
    for index in made:
        index.close()


def listed(index: PackageIndex, project: str) -> list[str]:
    index.refresh()
    return [e.relpath for e in index.project(project) or ()]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def child(code: str, *args: str, wait: bool = True, timeout: float = 60
          ) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run ``code`` in another Python process with pypibox and the test helpers importable."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    cmd = [sys.executable, "-c", textwrap.dedent(code), *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


MISFILED = {
    # file name -> (project its metadata names, version)
    "connected-components-3d-1.9.0.tar.gz": ("connected-components-3d", "1.9.0"),
    "python-3parclient-4.2.12.tar.gz": ("python-3parclient", "4.2.12"),
    "docutils-0.15.1-post1.tar.gz": ("docutils", "0.15.1.post1"),
    "matplotlib-2.0.0-1-cp36-cp36m-manylinux1_x86_64.whl": ("matplotlib", "2.0.0"),
}


def misfiled_tree(root: Path) -> None:
    for filename, (project, version) in MISFILED.items():
        if filename.endswith(".whl"):
            make_wheel(root, project, version, filename=filename)
        else:
            make_sdist(root, project, version.replace(".post1", "-post1"), filename=filename)


# -- what is listed where ----------------------------------------------------------------------
def test_every_file_is_listed_under_the_project_its_metadata_names(root, tmp_path, opened):
    misfiled_tree(root)
    index = opened(root)
    for filename, (project, version) in MISFILED.items():
        (entry,) = index.project(project)
        assert (entry.filename, entry.version, entry.project) == (filename, version, project)
        assert entry.sha256 == sha(root / filename)
    for wrong in ("connected-components", "python", "docutils-0-15-1"):
        assert index.project(wrong) is None
    assert index.project_names() == sorted(p for p, _v in MISFILED.values())
    # The same through the write path's API, for uploads of such names.
    upload = make_wheel(tmp_path / "in", "python-3parclient", "4.3.0")
    (root / upload.name).write_bytes(upload.read_bytes())
    dist = validate.check_file(root / upload.name, upload.name)
    index.add(upload.name, sha(upload), dist)
    assert [e.version for e in index.project("python-3parclient")] == ["4.2.12", "4.3.0"]


def test_unreadable_archive_falls_back_to_its_file_name_and_says_so(root, opened, caplog):
    (root / "broken_pkg-1.0-py3-none-any.whl").write_bytes(b"this is not a zip")
    (root / "old-sdist-2.0.tar.gz").write_bytes(b"\x1f\x8b not gzip either")
    (root / "nothing.tar.gz").write_bytes(b"junk")  # neither metadata nor a name
    with caplog.at_level(logging.WARNING, logger="pypibox"):
        index = opened(root)
        (entry,) = index.project("broken-pkg")
        assert (entry.version, entry.metadata_sha256) == ("1.0", None)
        assert index.metadata(entry) is None
        assert [e.version for e in index.project("old-sdist")] == ["2.0"]
        assert index.file("nothing.tar.gz") is None
    text = caplog.text
    assert "broken_pkg-1.0-py3-none-any.whl is listed as broken-pkg 1.0 by its file name" in text
    assert "not a valid zip archive" in text
    assert "nothing.tar.gz is not listed" in text
    assert index.project_names() == ["broken-pkg", "old-sdist"]


def test_subdirectories_dot_entries_and_signatures(root, tmp_path, opened):
    make_wheel(root / "a" / "b", "deep", "1.0")
    make_wheel(root / ".hidden", "hidden", "1.0")
    make_wheel(root, "dotted", "1.0").rename(root / ".dotted-1.0-py3-none-any.whl")
    sdist = make_sdist(root, "signed", "1.0")
    (root / (sdist.name + ".asc")).write_bytes(b"-----BEGIN PGP SIGNATURE-----\nx\n")
    index = opened(root)
    assert index.project_names() == ["deep", "signed"]
    assert [e.relpath for e in index.project("deep")] == ["a/b/deep-1.0-py3-none-any.whl"]
    assert [e.filename for e in index.project("signed")] == [sdist.name]  # not the .asc
    sig = index.file(sdist.name + ".asc")
    assert sig is not None and not sig.listed and sig.project == "signed"
    assert index.file(".dotted-1.0-py3-none-any.whl") is None
    assert index.file(".hidden/hidden-1.0-py3-none-any.whl") is None


def test_file_names_that_are_not_utf8_are_skipped_with_one_warning(root, tmp_path, opened,
                                                                   caplog):
    make_wheel(root, "fine", "1.0")
    bad = make_wheel(tmp_path / "x", "odd", "1.0")
    os.rename(bad, os.path.join(os.fsencode(root), b"odd-1.0-py3-none-any\xff.whl"))
    with caplog.at_level(logging.WARNING, logger="pypibox"):
        index = opened(root)
        assert index.project_names() == ["fine"]
        # Seen again (an event, another walk): no second warning for the same name.
        make_wheel(root, "fine", "2.0")
        wait_for(lambda: len(listed(index, "fine")) == 2)
    warnings = [r for r in caplog.records if "not valid UTF-8" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert index.files_page(0, 10)[1] == 2


def test_versions_sort_by_pep_440_and_metadata_is_served_exactly(root, tmp_path, opened):
    for version in ("1.10", "1.9", "1.0rc1", "2.0.dev1"):
        make_wheel(root, "sorted", version, requires_python=">=3.8")
    index = opened(root)
    entries = index.project("sorted")
    assert [e.version for e in entries] == ["1.0rc1", "1.9", "1.10", "2.0.dev1"]
    (summary,), total = index.projects("SORT")
    assert total == 1 and summary.latest_version == "1.10" and summary.files == 4
    for entry in entries:
        data = index.metadata(entry)
        assert data is not None and hashlib.sha256(data).hexdigest() == entry.metadata_sha256
        assert b"Requires-Python: >=3.8" in data and entry.requires_python == ">=3.8"
    # The stored copy lost: taken from the wheel again, still exactly what was announced.
    with index.db.write() as cur:
        cur.execute("DELETE FROM metadata")
    assert hashlib.sha256(index.metadata(entries[0])).hexdigest() == entries[0].metadata_sha256


def test_search_pages_and_totals(root, tmp_path, opened):
    make_wheel(root, "alpha-tool", "1.0", summary="Parses YAML quickly")
    make_wheel(root, "beta_tool", "1.0", summary="Other things")
    make_sdist(root, "gamma", "2.0", summary="Nothing here")
    index = opened(root)
    assert [p.project for p in index.projects("yaml")[0]] == ["alpha-tool"]
    assert [p.project for p in index.projects("beta_tool")[0]] == ["beta-tool"]
    assert [p.project for p in index.projects("-tool")[0]] == ["alpha-tool", "beta-tool"]
    assert index.projects("100%")[1] == 0  # LIKE wildcards are text
    page, total = index.projects(None, offset=1, limit=1)
    assert total == 3 and [p.project for p in page] == ["beta-tool"]
    stored = sorted((p for p in root.iterdir() if p.is_file()), key=lambda p: p.name)
    files, count = index.files_page(0, 2)
    assert count == 3 and [f.filename for f in files] == [p.name for p in stored[:2]]
    assert index.stats() == (3, sum(p.stat().st_size for p in stored))


# -- keeping up --------------------------------------------------------------------------------
def test_add_and_remove_through_the_api_update_every_instance_without_a_walk(root, tmp_path,
                                                                             opened):
    make_wheel(root, "steady", "1.0")
    one, two = opened(root), opened(root)
    maintainer = one if one.maintainer.holding else two
    walks = maintainer.maintainer.walks
    for i in range(20):
        wheel = make_wheel(tmp_path / "spool", "steady", f"2.{i}")
        os.link(wheel, root / wheel.name)
        one.add(wheel.name, sha(wheel), validate.check_file(wheel, wheel.name))
        two.refresh()  # the other worker's next request: no wait, no timer
        assert two.project("steady")[-1].version == f"2.{i}"
        assert two.file(wheel.name).sha256 == sha(wheel)
    for i in range(20):
        name = f"steady-2.{i}-py3-none-any.whl"
        (root / name).unlink()
        two.remove(name)
        one.refresh()
        assert name not in [e.filename for e in one.project("steady")]
    assert [e.version for e in one.project("steady")] == ["1.0"]
    assert maintainer.maintainer.walks == walks, "a change through the API walked the tree"


@pytest.mark.parametrize("mode", MODES)
def test_files_copied_in_rewritten_and_deleted_by_hand(root, tmp_path, opened, mode):
    make_wheel(root, "handmade", "1.0")
    index = opened(root, watch=mode)
    other = opened(root, watch=mode)
    built = make_wheel(tmp_path / "elsewhere", "handmade", "2.0", requires_python=">=3.9")
    (root / "sub" / "deeper").mkdir(parents=True)
    dropped = root / "sub" / "deeper" / built.name
    dropped.write_bytes(built.read_bytes())
    for idx in (index, other):
        wait_for(lambda idx=idx: len(listed(idx, "handmade")) == 2)
    # Rewritten in place: same inode, no directory mtime moves.
    replacement = make_wheel(tmp_path / "r", "handmade", "2.0", requires_python=">=3.11",
                             payload=b"x" * 5000)
    with open(dropped, "r+b") as handle:
        handle.write(replacement.read_bytes())
        handle.truncate()

    def current(idx: PackageIndex) -> bool:
        idx.refresh()
        entry = idx.file(f"sub/deeper/{built.name}")
        return (entry is not None and entry.sha256 == sha(replacement)
                and entry.requires_python == ">=3.11")

    for idx in (index, other):
        wait_for(lambda idx=idx: current(idx), what="the rewrite")
    dropped.unlink()
    for idx in (index, other):
        wait_for(lambda idx=idx: listed(idx, "handmade") == ["handmade-1.0-py3-none-any.whl"])
    (root / "handmade-1.0-py3-none-any.whl").unlink()
    for idx in (index, other):
        wait_for(lambda idx=idx: idx.project("handmade") is None and not idx.project_names())


@pytest.mark.parametrize("mode", MODES)
def test_sync_finds_a_file_copied_in_a_moment_ago(root, tmp_path, opened, mode):
    index = opened(root, watch=mode)
    opened(root, watch=mode)  # one of the two maintains
    for i in range(10):
        make_wheel(root, f"instant-{i}", "1.0")
        assert index.sync(timeout=5)   # 0.5 s by default: slack for a loaded machine
        assert index.project(f"instant-{i}") is not None
        assert index.file(f"instant_{i}-1.0-py3-none-any.whl") is not None


def test_a_file_not_indexed_yet_is_found_by_its_path(root, tmp_path, opened):
    index = opened(root)
    wheel = make_wheel(root, "direct", "1.0")
    entry = index.file(wheel.name)  # at once: no sync, no wait
    assert entry is not None and entry.sha256 == sha(wheel)
    assert index.file("../etc/passwd") is None and index.file(".pypibox/x.whl") is None


def test_another_process_adds_and_drops_files(root, tmp_path, opened):
    index = opened(root)
    assert index.maintainer.holding
    child("""
        import sys
        from pathlib import Path
        from pkgfactory import make_wheel
        from pypibox import validate
        from pypibox.index import PackageIndex
        root = Path(sys.argv[1])
        index = PackageIndex(root)
        wheel = make_wheel(root, "from-api", "1.0")
        index.add(wheel.name, "0" * 64, validate.check_file(wheel, wheel.name))
        make_wheel(root, "by-hand", "1.0")
        index.close()
    """, str(root))
    index.refresh()
    assert [e.filename for e in index.project("from-api")] == ["from_api-1.0-py3-none-any.whl"]
    wait_for(lambda: listed(index, "by-hand") != [])


def test_two_processes_agree_and_a_killed_maintainer_is_replaced(root, tmp_path, opened):
    misfiled_tree(root)
    other = child("""
        import sys, time
        from pathlib import Path
        from pypibox.index import PackageIndex
        index = PackageIndex(Path(sys.argv[1]))
        print("holding" if index.maintainer.holding else "reading", flush=True)
        time.sleep(120)
    """, str(root), wait=False)
    try:
        assert other.stdout.readline().strip() == "holding"  # it came first
        index = opened(root)
        assert not index.maintainer.holding
        report = child("""
            import sys, json
            from pathlib import Path
            from pypibox.index import PackageIndex
            index = PackageIndex(Path(sys.argv[1]))
            print(json.dumps({p: [e.relpath for e in index.project(p)]
                              for p in index.project_names()}))
        """, str(root)).stdout
        mine = {p: [e.relpath for e in index.project(p)] for p in index.project_names()}
        assert json.loads(report) == mine and len(mine) == len(MISFILED)
        make_wheel(root, "while-alive", "1.0")
        wait_for(lambda: listed(index, "while-alive") != [])
        other.send_signal(signal.SIGKILL)
        other.wait()
        wait_for(lambda: index.maintainer.holding, timeout=5, what="the takeover")
        make_wheel(root, "after-kill", "1.0")
        wait_for(lambda: listed(index, "after-kill") != [])
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_sigkill_in_the_middle_of_updates_leaves_a_usable_index(root, tmp_path, opened):
    """A process writing the index (uploads through the API, a first walk of 3,000 files) is
    killed at random moments; every next opener gets a consistent index of what is there."""
    for i in range(3000):
        make_wheel(root / "bulk", f"bulk-{i % 300}", f"1.{i // 300}")
    writer = """
        import sys, os
        from pathlib import Path
        from pkgfactory import make_wheel
        from pypibox import validate
        from pypibox.index import PackageIndex
        root = Path(sys.argv[1])
        index = PackageIndex(root, wait=0)
        print("open", flush=True)
        for i in range(100000):
            wheel = make_wheel(root.parent / "spool", "killed", f"{os.getpid()}.{i}")
            os.link(wheel, root / wheel.name)
            index.add(wheel.name, "0" * 64, validate.check_file(wheel, wheel.name))
    """
    for round_ in range(4):
        proc = child(writer, str(root), wait=False)
        assert proc.stdout.readline().strip() == "open"
        time.sleep(0.3 + 0.4 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        index = PackageIndex(root)
        try:
            on_disk = {p.name for p in root.glob("killed-*.whl")}
            assert on_disk, "the writer stored nothing before it was killed"
            wait_for(lambda idx=index, want=on_disk:
                     {e.filename for e in idx.project("killed") or ()} == want,
                     timeout=20, what="the killed writer's files")
            assert len(index.project("bulk-7")) == 10
        finally:
            index.close()


@pytest.mark.parametrize("damage", ["delete-db", "delete-dir", "truncate-0", "truncate-half",
                                    "garbage", "garbage-header"])
def test_state_is_rebuilt_after_deletion_or_corruption(root, tmp_path, opened, damage):
    misfiled_tree(root)
    for i in range(300):
        make_wheel(root, f"many-{i}", "1.0")
    index = opened(root)
    assert index.maintainer.holding
    state = root / ".pypibox"
    db = state / index.db.instance
    index.db.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the file
    if damage == "delete-db":
        db.unlink()
    elif damage == "delete-dir":
        import shutil
        shutil.rmtree(state)
    elif damage == "truncate-0":
        os.truncate(db, 0)
    elif damage == "truncate-half":
        os.truncate(db, db.stat().st_size // 2)
    elif damage == "garbage":
        with open(db, "r+b") as handle:
            handle.seek(db.stat().st_size // 3)
            handle.write(os.urandom(db.stat().st_size // 3))
    else:
        with open(db, "r+b") as handle:
            handle.write(os.urandom(100))

    def whole(idx: PackageIndex, count: int = 304) -> bool:
        idx.refresh()
        try:
            names = idx.project_names()
            return (len(names) == count and idx.ready
                    and [e.version for e in idx.project("docutils") or ()] == ["0.15.1.post1"])
        except sqlite3.DatabaseError:
            return False

    damaged = index.db.instance
    if damage != "garbage":  # random bytes inside may hit pages no query reads for a while
        wait_for(lambda: index.refresh() or index.db.instance != damaged, timeout=10,
                 what="the rebuild")
    wait_for(lambda: whole(index), timeout=10, what="the rebuilt index")
    make_wheel(root, "after-damage", "1.0")
    wait_for(lambda: listed(index, "after-damage") != [])
    # A new process (a restart) opens the rebuilt state as it is.
    fresh = opened(root)
    assert whole(fresh, 305) and fresh.project("after-damage") is not None
    assert fresh.db.conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_warm_start_trusts_nothing_it_cannot_check(root, tmp_path, opened):
    """Changes made while no server ran are found at the next start."""
    make_wheel(root, "kept", "1.0")
    gone = make_wheel(root, "gone", "1.0")
    rewritten = make_wheel(root, "rewritten", "1.0")
    index = opened(root)
    assert index.project("gone") is not None
    index.close()
    gone.unlink()
    make_wheel(root, "new-while-down", "1.0")
    replacement = make_wheel(tmp_path / "r", "rewritten", "1.0", payload=b"y" * 3000)
    rewritten.write_bytes(replacement.read_bytes())
    index = opened(root)
    wait_for(lambda: index.project("gone") is None and listed(index, "new-while-down") != [])
    wait_for(lambda: (e := index.file(rewritten.name)) is not None
             and e.sha256 == sha(replacement))


def test_a_cold_tree_is_listed_first_and_read_in_the_background(root, tmp_path, opened):
    for i in range(2000):
        make_wheel(root, f"cold-{i // 4}", f"1.{i % 4}")
    make_sdist(root, "connected-components-3d", "1.9.0",
               filename="connected-components-3d-1.9.0.tar.gz")
    index = opened(root, wait=10)
    assert index.ready and len(index.project_names()) >= 500
    # Asked for before the background reading reached it: read on demand, complete.
    entries = index.project("cold-499")
    assert [e.version for e in entries] == ["1.0", "1.1", "1.2", "1.3"]
    assert all(len(e.sha256) == 64 and e.metadata_sha256 for e in entries)
    wait_for(lambda: index.stats()[0] == 2001, timeout=60, what="the background reading")
    assert [e.version for e in index.project("connected-components-3d")] == ["1.9.0"]
    assert index.project("connected-components") is None


def test_memory_is_bounded_for_many_projects_and_unknown_names(root, tmp_path, opened):
    for i in range(3000):
        make_wheel(root, f"p{i}", "1.0")
    index = opened(root, cache_files=1000, cache_names=500, wait=30)
    wait_for(lambda: index.stats()[0] == 3000, timeout=60)
    tracemalloc.start()
    try:
        for round_ in range(2):
            for i in range(3000):
                assert index.project(f"p{i}") is not None
            for i in range(40_000):
                assert index.project(f"unknown-{round_}-{i}") is None
            if round_ == 0:
                first = tracemalloc.get_traced_memory()[0]
        grown = tracemalloc.get_traced_memory()[0] - first
    finally:
        tracemalloc.stop()
    assert index._cached_files <= 1000 and len(index._missing) <= 500
    assert grown < 2 << 20, f"memory grew by {grown} bytes for 43,000 more names"


def test_the_state_lives_in_the_hidden_directory(root, tmp_path, opened):
    make_wheel(root, "where", "1.0")
    index = opened(root)
    state = root / ".pypibox"
    assert (state / indexdb.POINTER).read_text().strip() == index.db.instance
    assert [p.name for p in root.iterdir() if p.name != ".pypibox"] == \
        ["where-1.0-py3-none-any.whl"]


@pytest.mark.parametrize("mode", MODES)
def test_an_idle_index_uses_almost_no_cpu(root, opened, mode):
    """The maintainer sleeps while nothing happens (it once spun a core with inotify)."""
    for i in range(50):
        make_wheel(root, f"idle-{i}", "1.0")
    index = opened(root, watch=mode)
    opened(root, watch=mode)
    wait_for(lambda: index.stats()[0] == 50, timeout=20)
    time.sleep(0.5)
    before = time.process_time()
    time.sleep(3)
    used = time.process_time() - before
    assert used < 0.3, f"{used:.2f} s of CPU in 3 idle seconds"
