"""Upload validation on real archives built here: what a file holds, the name rule, the bounds.

In-process: ``check_file`` is a pure function of a file on disk (the HTTP refusals are in
test_hostile.py).
"""

from __future__ import annotations

import gzip
import io
import tarfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from pkgfactory import make_sdist, make_wheel, metadata

from pypibox import validate
from pypibox.validate import InvalidUpload, Limits, check_file, check_name


def refused(path: Path, name: str | None = None, limits: Limits = validate.DEFAULT_LIMITS) -> str:
    with pytest.raises(InvalidUpload) as info:
        check_file(path, name or path.name, limits)
    return str(info.value)


def tar_gz(dest: Path, members: dict[str, bytes], fmt: int = tarfile.PAX_FORMAT) -> Path:
    with tarfile.open(dest, "w:gz", format=fmt) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return dest


def pkg_info(name: str, version: str) -> bytes:
    return metadata(name, version).encode()


# -- what an upload holds ----------------------------------------------------------------------
def test_wheel_says_what_its_metadata_says(tmp_path):
    wheel = make_wheel(tmp_path, "Tree.Mid.B", "02.0", requires_python=">=3.9",
                       summary="Middle  of\tthe tree")
    dist = check_file(wheel, wheel.name)
    assert (dist.kind, dist.project, dist.name, dist.version) == \
        ("wheel", "tree-mid-b", "Tree.Mid.B", "2.0")
    with zipfile.ZipFile(wheel) as zf:
        assert dist.metadata == zf.read("tree_mid_b-02.0.dist-info/METADATA")
    assert dist.requires_python == ">=3.9" and dist.summary == "Middle of the tree"


def test_sdist_tar_and_zip(tmp_path):
    for fmt in ("tar.gz", "zip"):
        sdist = make_sdist(tmp_path / fmt, "My_Pkg", "1.0rc1", fmt=fmt)
        dist = check_file(sdist, sdist.name)
        assert (dist.kind, dist.project, dist.name, dist.version) == \
            ("sdist", "my-pkg", "My_Pkg", "1.0rc1")
        assert dist.metadata is not None and b"Name: My_Pkg" in dist.metadata


def test_build_tagged_wheel_has_the_version_of_its_metadata(tmp_path):
    wheel = make_wheel(tmp_path, "matplotlib", "2.0.0",
                       filename="matplotlib-2.0.0-1-cp36-cp36m-manylinux1_x86_64.whl")
    dist = check_file(wheel, wheel.name)
    assert (dist.project, dist.version) == ("matplotlib", "2.0.0")


@pytest.mark.parametrize(("filename", "name", "version", "project", "normal"), [
    ("docutils-0.15.1-post1.tar.gz", "docutils", "0.15.1.post1", "docutils", "0.15.1.post1"),
    ("connected-components-3d-1.9.0.tar.gz", "connected-components-3d", "1.9.0",
     "connected-components-3d", "1.9.0"),
    ("python-3parclient-4.2.12.tar.gz", "python-3parclient", "4.2.12", "python-3parclient",
     "4.2.12"),
    ("Django-3.2.tar.gz", "Django", "3.2", "django", "3.2"),
    ("zope.interface-5.4.0.zip", "zope.interface", "5.4.0", "zope-interface", "5.4.0"),
    # Two readings of one name (foo 1.0.post1, or foo-1.0 version 1): PKG-INFO decides.
    ("foo-1.0-1.tar.gz", "foo", "1.0-1", "foo", "1.0.post1"),
    ("foo-1.0-1.tar.gz", "foo-1.0", "1", "foo-1-0", "1"),
])
def test_legacy_sdist_names_are_accepted_by_their_pkg_info(tmp_path, filename, name, version,
                                                            project, normal):
    fmt = "zip" if filename.endswith(".zip") else "tar.gz"
    sdist = make_sdist(tmp_path, name, version, filename=filename, fmt=fmt)
    dist = check_file(sdist, sdist.name)
    assert (dist.kind, dist.project, dist.name, dist.version) == ("sdist", project, name, normal)


def test_a_legacy_sdist_name_needs_a_sound_pkg_info(tmp_path):
    bare = make_sdist(tmp_path / "a", "docutils", "0.15.1.post1",
                      filename="docutils-0.15.1-post1.tar.gz", pkg_info=False)
    assert "needs one to say its project and version" in refused(bare)
    broken = tar_gz(tmp_path / "connected-components-3d-1.9.0.tar.gz", {
        "connected-components-3d-1.9.0/PKG-INFO": b"Metadata-Version: 2.1\nName: x\n\n"})
    assert "has no Name or Version" in refused(broken)
    bad_version = tar_gz(tmp_path / "python-3parclient-4.2.12.tar.gz", {
        "python-3parclient-4.2.12/PKG-INFO": pkg_info("python-3parclient", "four")})
    assert "invalid Version" in refused(bad_version)


def test_a_standard_sdist_name_without_pkg_info_is_taken_at_its_word(tmp_path):
    sdist = make_sdist(tmp_path, "plain", "1.0", pkg_info=False)
    dist = check_file(sdist, sdist.name)
    assert (dist.project, dist.version, dist.metadata) == ("plain", "1.0", None)


@pytest.mark.parametrize(("filename", "members", "needle"), [
    ("victim-1.0.tar.gz", {"victim-1.0/PKG-INFO": pkg_info("other", "1.0")}, "holds project"),
    ("victim-1.0.tar.gz", {"victim-1.0/PKG-INFO": pkg_info("victim", "9.9")}, "holds version"),
    ("connected-components-3d-1.9.0.tar.gz",
     {"x/PKG-INFO": pkg_info("connected-components", "3d-1.9.0")}, "invalid Version"),
    ("connected-components-3d-1.9.0.tar.gz",
     {"x/PKG-INFO": pkg_info("connected-components", "1.9.0")}, "holds project"),
    ("docutils-0.15.1-post1.tar.gz", {"x/PKG-INFO": pkg_info("docutils", "0.15.1")},
     "holds version"),
])
def test_metadata_that_the_name_does_not_say_is_refused(tmp_path, filename, members, needle):
    assert needle in refused(tar_gz(tmp_path / filename, members))


def test_wheel_of_another_project_or_version_is_refused(tmp_path):
    other = make_wheel(tmp_path / "o", "other", "1.0")
    assert "holds project" in refused(other, "victim-1.0-py3-none-any.whl")
    newer = make_wheel(tmp_path / "n", "victim", "2.0")
    assert "holds version" in refused(newer, "victim-1.0-py3-none-any.whl")


def test_signature(tmp_path):
    sig = tmp_path / "victim-1.0.tar.gz.asc"
    sig.write_bytes(b"-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n")
    dist = check_file(sig, sig.name)
    assert (dist.kind, dist.project, dist.version, dist.metadata) == \
        ("signature", "victim", "1.0", None)
    sig.write_bytes(b"not armored")
    assert "ASCII-armored" in refused(sig)


# -- names -------------------------------------------------------------------------------------
def test_check_name_is_one_rule():
    assert check_name("docutils-0.15.1-post1.tar.gz").readings[0][0] == "docutils"
    legacy = check_name("connected-components-3d-1.9.0.tar.gz")
    assert not legacy.standard and legacy.project == "connected-components-3d"
    assert check_name("victim-1.0.tar.gz").standard
    assert check_name("matplotlib-2.0.0-1-cp36-cp36m-manylinux1_x86_64.whl").standard
    assert {r[0] for r in check_name("foo-1.0-1.tar.gz").readings} == {"foo", "foo-1-0"}
    for bad, needle in [("victim.tar.gz", "not a valid sdist name"),
                        ("victim-one.tar.gz", "not a valid sdist name"),
                        ("victim-1.0.whl", "not a valid wheel name"),
                        ("victim-1.0.egg", "legacy formats"), ("../x-1.0.tar.gz", "path parts"),
                        (".x-1.0.tar.gz", "starts with a dot"), ("x" * 201, "longer than"),
                        ("x-1.0.tar.gz.asc.asc", "signature of a signature"),
                        ("caf\u00e9-1.0.tar.gz", "may only use")]:
        with pytest.raises(InvalidUpload, match=needle):
            check_name(bad)


# -- bounds ------------------------------------------------------------------------------------
def many_members_tar_gz(dest: Path, count: int) -> Path:
    """A small .tar.gz of ``count`` empty files (300,000 headers gzip to under 2 MiB)."""
    with open(dest, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.GNU_FORMAT) as tf:
        data = pkg_info("victim", "1.0")
        info = tarfile.TarInfo("victim-1.0/PKG-INFO")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        for i in range(count):
            tf.addfile(tarfile.TarInfo(f"victim-1.0/f{i}"))
    return dest


def test_300000_members_are_refused_quickly_in_little_memory(tmp_path):
    bomb = many_members_tar_gz(tmp_path / "victim-1.0.tar.gz", 300_000)
    assert bomb.stat().st_size < 2 << 20
    cpu0, wall0 = time.thread_time(), time.monotonic()
    why = refused(bomb)
    cpu, wall = time.thread_time() - cpu0, time.monotonic() - wall0
    assert f"more than {validate.MAX_MEMBERS} members" in why
    # The old code took 7 s of CPU (and +127 MiB); this takes about 0.4 s. Generous bounds.
    assert cpu < 3 and wall < 15, (cpu, wall)
    tracemalloc.start()  # memory measured apart: tracemalloc slows the check several times
    try:
        refused(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_member_limit_counts_exactly_for_tar_and_zip(tmp_path):
    ok = many_members_tar_gz(tmp_path / "victim-1.0.tar.gz", 99)
    assert check_file(ok, ok.name, Limits(members=100)).project == "victim"
    assert "more than 99 members" in refused(ok, limits=Limits(members=99))
    wheel = tmp_path / "victim-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("victim-1.0.dist-info/METADATA", pkg_info("victim", "1.0"))
        for i in range(99):
            zf.writestr(f"victim/m{i}.py", b"")
    assert check_file(wheel, wheel.name, Limits(members=100)).version == "1.0"
    assert "more than 99 members" in refused(wheel, limits=Limits(members=99))


def test_zip64_directory_of_70000_members_is_counted(tmp_path):
    wheel = tmp_path / "victim-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("victim-1.0.dist-info/METADATA", pkg_info("victim", "1.0"))
        for i in range(70_000):
            zf.writestr(f"v/{i}", b"")
    assert check_file(wheel, wheel.name).project == "victim"  # zip64 end record, 70,001 < limit
    assert "more than 69999 members" in refused(wheel, limits=Limits(members=69_999))


def test_cpu_time_is_bounded(tmp_path):
    big = tmp_path / "victim-1.0.tar.gz"
    with tarfile.open(big, "w:gz") as tf:
        data = pkg_info("victim", "1.0")
        info = tarfile.TarInfo("victim-1.0/PKG-INFO")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("victim-1.0/zeros")
        info.size = 200 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    roomy = Limits(expansion=100_000)
    assert check_file(big, big.name, roomy).project == "victim"  # 200 MiB of zeros: fine
    why = refused(big, limits=Limits(expansion=100_000, cpu_seconds=0.01))
    assert "more than 0.01 s of CPU time" in why


@pytest.mark.parametrize("kind", [b"x", b"L"])
def test_huge_tar_extension_headers_are_not_read_into_memory(tmp_path, kind):
    """A pax header or GNU long name of 200 MiB (tarfile would read it whole) is refused."""
    path = tmp_path / "victim-1.0.tar.gz"
    header = tarfile.TarInfo("././@LongLink" if kind == b"L" else "pax")
    header.type = kind
    header.size = 200 << 20
    with gzip.open(path, "wb") as gz:
        gz.write(header.tobuf(tarfile.USTAR_FORMAT))
        zeros = bytes(1 << 20)
        for _ in range(200):
            gz.write(zeros)
    tracemalloc.start()
    try:
        why = refused(path, limits=Limits(expansion=100_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"has a tar header of {200 << 20} bytes" in why
    assert peak < 8 << 20


def test_long_names_by_pax_gnu_and_ustar_prefix_find_pkg_info(tmp_path):
    top = "victim-1.0-" + "x" * 120
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        path = tar_gz(_fresh(tmp_path / str(fmt)) / "victim-1.0.tar.gz",
                      {f"{top}/PKG-INFO": pkg_info("victim", "9.0")}, fmt)
        assert "holds version" in refused(path)  # PKG-INFO was found, and read


def _fresh(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(("name", "mangle", "needle"), [
    ("cut", lambda data: data[:-40], "gzip-compressed tar"),
    ("not-gzip", lambda data: b"\x1f\x8b but not gzip", "gzip-compressed tar"),
    ("gzip-of-text", lambda data: gzip.compress(b"plain text " * 500), "holds no tar archive"),
    ("empty-tar", lambda data: gzip.compress(bytes(10240)), "empty tar archive"),
])
def test_damaged_tar_gz_is_refused(tmp_path, name, mangle, needle):
    good = make_sdist(tmp_path, "victim", "1.0", payload=b"x" * 5000)
    path = tmp_path / name / good.name
    path.parent.mkdir()
    path.write_bytes(mangle(good.read_bytes()))
    assert needle in refused(path)


def test_a_damaged_second_header_is_refused_not_ignored(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name in ("victim-1.0/PKG-INFO", "victim-1.0/setup.py"):
            data = pkg_info("victim", "1.0")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    data = bytearray(raw.getvalue())
    data[1024 + 10] ^= 0xFF  # the second member's name: its checksum no longer fits
    path = tmp_path / "victim-1.0.tar.gz"
    path.write_bytes(gzip.compress(bytes(data)))
    assert "bad checksum" in refused(path)


def test_gzip_bomb_is_refused_by_expansion(tmp_path):
    path = tmp_path / "victim-1.0.tar.gz"
    info = tarfile.TarInfo("victim-1.0/big")
    info.size = 2 << 30
    with gzip.open(path, "wb", compresslevel=9) as gz:
        gz.write(info.tobuf())
        for _ in range(80):
            gz.write(bytes(1 << 20))
    assert "expands too much" in refused(path)


def test_zip_bombs_and_damage(tmp_path):
    wheel = tmp_path / "victim-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("victim-1.0.dist-info/METADATA", pkg_info("victim", "1.0"))
        zf.writestr("victim/zeros", bytes(100 << 20))
    assert "expands too much" in refused(wheel)
    assert check_file(wheel, wheel.name, Limits(expansion=100_000)).project == "victim"
    junk = tmp_path / "junk" / wheel.name
    junk.parent.mkdir()
    junk.write_bytes(b"PK\x03\x04 this is not a zip" * 100)
    assert "not a valid zip archive" in refused(junk)
    flipped = bytearray(make_wheel(tmp_path / "p", "victim", "1.0",
                                   payload=bytes(range(256)) * 400).read_bytes())
    flipped[flipped.index(b"payload.bin") + 300] ^= 0xFF
    junk.write_bytes(bytes(flipped))
    assert "damaged zip archive" in refused(junk)
