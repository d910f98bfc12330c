"""Fetching upstream files into the cache while streaming them to every client that asks.

One download per file, whatever the number of clients and processes: the process holding
the file's flock writes ``tmp/<project>/<filename>``; every client, of any process, reads
that file as it grows. The last byte is held back until the sha256 and the length are
checked, so a client never gets a complete response of a file that turns out wrong: its
stream ends in an UpstreamError instead, and nothing is kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .upstream_http import HttpClient, Reply, UpstreamError, safe_url
from .upstream_store import FileLock, Store

log = logging.getLogger("pypibox.upstream")

BLOCK = 1 << 16
#: Downloads one process runs at once (each a thread and a connection).
MAX_DOWNLOADS = 32
#: A follower in another process looks at the growing file this often.
POLL = 0.02


@dataclass(frozen=True)
class CachedFile:
    """A verified file on disk: hand ``path`` to files.send_file (ranges, HEAD, 304)."""

    path: str
    size: int
    etag: str


class FileStream:
    """The bytes of a file being fetched, as an iterator of chunks; ``size`` may be None.

    Iterating may block (it waits for the upstream): run it in a thread, not an event loop.
    An UpstreamError raised while iterating means the file was bad or cut: the response
    must end without completing (close the connection).
    """

    def __init__(self, size: int | None, chunks: t.Iterator[bytes],
                 on_close: t.Callable[[], None]) -> None:
        self.size = size
        self._chunks = chunks
        self._on_close = on_close

    def __iter__(self) -> t.Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        """Stop reading (the download itself goes on for the other readers and the cache)."""
        self._on_close()


class _Download:
    """A download this process runs: written by a thread, read by any number of streams."""

    def __init__(self, key: tuple[str, str], tmp: str, fd: int, final: str,
                 expected: int | None, sha256: str) -> None:
        self.key, self.tmp, self.fd, self.final = key, tmp, fd, final
        self.expected = expected
        self.sha256 = sha256
        self.written = 0
        self.done = False
        self.error: UpstreamError | None = None
        self.cond = threading.Condition()
        self.refs = 1   # the writing thread, plus one per open stream: the last closes fd


class Fetcher:
    """Starts, shares and follows downloads of upstream files into a Store."""

    def __init__(self, store: Store, client: HttpClient, timeout: float) -> None:
        self.store = store
        self.client = client
        self.timeout = timeout
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], _Download] = {}
        self._slots = threading.BoundedSemaphore(MAX_DOWNLOADS)
        # Threads kept for the next download: starting one per file costs more than the file.
        self._pool = ThreadPoolExecutor(MAX_DOWNLOADS, thread_name_prefix="pypibox-fetch")
        self.fetches = 0   # upstream downloads started by this process (for tests and stats)

    def open(self, project: str, filename: str, url: str, sha256: str,
             size: int | None) -> CachedFile | FileStream:
        """The file from the cache, or a stream of it while it is fetched and checked.

        A file of unknown length is not streamed: without a Content-Length a client could
        not tell a cut-off body from a complete one. It is fetched whole first.
        """
        got = self._open(project, filename, url, sha256, size)
        if isinstance(got, CachedFile) or got.size is not None:
            return got
        try:
            for _ in got:   # wait for the download, checked (or its UpstreamError)
                pass
        finally:
            got.close()
        found = self._cached(project, filename, None, sha256)
        if found is None:
            raise UpstreamError(502, f"{filename}: the download did not keep the file")
        return found

    def _open(self, project: str, filename: str, url: str, sha256: str,
              size: int | None) -> CachedFile | FileStream:
        for _ in range(3):
            found = self._cached(project, filename, size, sha256)
            if found is not None:
                return found
            with self._lock:
                dl = self._active.get((project, filename))
                if dl is not None:
                    stream = self._follow(dl)
                    if stream is not None:
                        return stream
                    continue
            lock = FileLock(self.store.lock_path("file", project, filename))
            if lock.acquire():
                try:
                    found = self._cached(project, filename, size, sha256)
                    if found is not None:
                        lock.release()
                        return found
                    return self._start(project, filename, url, sha256, size, lock)
                except BaseException:
                    lock.release()
                    raise
            other = self._follow_elsewhere(project, filename, size, sha256, lock)
            if other is not None:
                return other
        raise UpstreamError(503, f"{filename}: the download by another process did not "
                                 "settle; try again")

    def _cached(self, project: str, filename: str, size: int | None,
                sha256: str) -> CachedFile | None:
        path = self.store.cached(project, filename, size)
        if path is None:
            return None
        try:
            real = os.stat(path).st_size
        except OSError:
            return None
        return CachedFile(path, real, f'"{sha256[:32]}"')

    # -- this process downloads ----------------------------------------------------------
    def _start(self, project: str, filename: str, url: str, sha256: str, size: int | None,
               lock: FileLock) -> FileStream:
        if not self._slots.acquire(blocking=False):
            raise UpstreamError(503, f"more than {MAX_DOWNLOADS} upstream downloads at once; "
                                     "try again")
        try:
            reply = self.client.get(url, {"Accept": "*/*"})
            if reply.status != 200:
                reply.close()
                raise UpstreamError(502, f"{safe_url(reply.url)}: the upstream answered "
                                         f"{reply.status} {reply.reason}"[:300])
            announced = reply.headers.get("content-length", "")
            length = int(announced) if announced.isdigit() else None
            if size is not None and length is not None and size != length:
                reply.close()
                raise UpstreamError(502, f"{filename}: the upstream sends {length} bytes, "
                                         f"its page says {size}")
            expected = size if size is not None else length
            tmp = self.store.tmp_path(project, filename)
            os.makedirs(os.path.dirname(tmp), exist_ok=True)
            try:
                os.unlink(tmp)  # a dead writer's leftover: its followers must not see ours
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except BaseException:
            self._slots.release()
            raise
        final = self.store.file_path(project, filename)
        dl = _Download((project, filename), tmp, fd, final, expected, sha256)
        self.fetches += 1
        with self._lock:
            self._active[dl.key] = dl
            stream = self._follow(dl)
        assert stream is not None
        self._pool.submit(self._run, dl, reply, lock)
        return stream

    def _run(self, dl: _Download, reply: Reply, lock: FileLock) -> None:
        digest = hashlib.sha256()
        error: UpstreamError | None = None
        try:
            while True:
                data = reply.read(BLOCK)
                if not data:
                    break
                if dl.expected is not None and dl.written + len(data) > dl.expected:
                    raise UpstreamError(502, f"{dl.key[1]}: the upstream sent more than the "
                                             f"{dl.expected} bytes announced")
                digest.update(data)
                os.write(dl.fd, data)  # a regular file: short writes only on errors
                with dl.cond:
                    dl.written += len(data)
                    dl.cond.notify_all()
            if dl.expected is not None and dl.written != dl.expected:
                raise UpstreamError(502, f"{dl.key[1]}: the upstream sent {dl.written} of "
                                         f"the {dl.expected} bytes announced")
            if digest.hexdigest() != dl.sha256:
                raise UpstreamError(502, f"{dl.key[1]}: sha256 does not match the upstream's "
                                         "page; not kept")
            os.fsync(dl.fd)
            os.makedirs(os.path.dirname(dl.final), exist_ok=True)
            os.rename(dl.tmp, dl.final)
        except UpstreamError as exc:
            error = exc
        except OSError as exc:
            error = UpstreamError(507 if exc.errno == 28 else 502,
                                  f"{dl.key[1]}: cannot store the file ({exc.strerror})")
        except Exception as exc:  # a bug must still end the readers' wait
            log.exception("cache: download of %s failed", dl.key[1])
            error = UpstreamError(502, f"{dl.key[1]}: download failed ({type(exc).__name__})")
        finally:
            reply.close()
        if error is not None:
            log.warning("cache: %s", error.reason)
            try:
                os.unlink(dl.tmp)
            except OSError:
                pass
        else:
            log.info("cache: stored %s/%s (%d bytes)", dl.key[0], dl.key[1], dl.written)
            self.store.touch(dl.final)
            self.store.added(dl.written)   # may evict others: before any client sees the end
        with dl.cond:
            dl.error = error
            dl.done = True
            dl.cond.notify_all()
        with self._lock:
            self._active.pop(dl.key, None)
        self._unref(dl)
        lock.release()
        self._slots.release()

    def _follow(self, dl: _Download) -> FileStream | None:
        """A stream over ``dl`` (call with self._lock held); None if it already ended."""
        if dl.done:
            return None
        dl.refs += 1
        closed = [False]

        def close() -> None:
            if not closed[0]:
                closed[0] = True
                self._unref(dl)

        def chunks() -> t.Iterator[bytes]:
            offset = 0
            quiet_since = time.monotonic()
            try:
                while True:
                    with dl.cond:
                        while True:
                            done, error, written = dl.done, dl.error, dl.written
                            if error is not None:
                                raise error
                            limit = written if done else _holdback(written, dl.expected)
                            if offset < limit or done:
                                break
                            if time.monotonic() - quiet_since > self.timeout * 2:
                                raise UpstreamError(504, f"{dl.key[1]}: the download stalled")
                            dl.cond.wait(0.5)
                    if offset >= limit:
                        return
                    data = os.pread(dl.fd, min(BLOCK, limit - offset), offset)
                    if not data:
                        raise UpstreamError(502, f"{dl.key[1]}: the download vanished")
                    offset += len(data)
                    quiet_since = time.monotonic()
                    yield data
            finally:
                close()

        return FileStream(dl.expected, chunks(), close)

    def _unref(self, dl: _Download) -> None:
        with self._lock:
            dl.refs -= 1
            last = dl.refs == 0
        if last:
            os.close(dl.fd)

    # -- another process downloads ------------------------------------------------------
    def _follow_elsewhere(self, project: str, filename: str, size: int | None, sha256: str,
                          lock: FileLock) -> FileStream | CachedFile | None:
        """Read the growing file another process writes; None if there is nothing to follow."""
        tmp = self.store.tmp_path(project, filename)
        final = self.store.file_path(project, filename)
        fd = -1
        deadline = time.monotonic() + self.timeout
        while fd < 0:
            found = self._cached(project, filename, size, sha256)
            if found is not None:
                return found
            try:
                fd = os.open(tmp, os.O_RDONLY)
            except FileNotFoundError:
                if not lock.held_elsewhere() or time.monotonic() > deadline:
                    return None  # the writer ended (or never started): try again from the top
                time.sleep(POLL)
        ino = os.fstat(fd).st_ino
        closed = [False]

        def close() -> None:
            if not closed[0]:
                closed[0] = True
                os.close(fd)

        def finished() -> bool:
            try:
                return os.stat(final).st_ino == ino
            except OSError:
                return False

        def chunks() -> t.Iterator[bytes]:
            offset = 0
            quiet_since = time.monotonic()
            try:
                while True:
                    free = not lock.held_elsewhere()
                    done = finished()
                    written = os.fstat(fd).st_size
                    if not done and free:
                        raise UpstreamError(502, f"{filename}: the download failed in another "
                                                 "process; not kept")
                    limit = written if done else _holdback(written, size)
                    if offset < limit:
                        data = os.pread(fd, min(BLOCK, limit - offset), offset)
                        if data:
                            offset += len(data)
                            quiet_since = time.monotonic()
                            yield data
                            continue
                    if done and offset >= written:
                        return
                    if time.monotonic() - quiet_since > self.timeout * 2:
                        raise UpstreamError(504, f"{filename}: the download stalled")
                    time.sleep(POLL)
            finally:
                close()

        return FileStream(size, chunks(), close)


def _holdback(written: int, expected: int | None) -> int:
    """How much of an unchecked download may be sent: never its last byte."""
    limit = written - 1
    if expected is not None:
        limit = min(limit, expected - 1)
    return max(0, limit)
