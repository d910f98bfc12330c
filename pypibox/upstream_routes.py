"""Handlers for ``PYPI_FALLBACK=cache``: upstream project pages and ``/cache/<project>/<file>``.

ReadPath hands a name the private index does not hold to ``project_page``; the route table
sends ``/cache/{project}/{filename}`` to ``cache_file``. Names this index claims
(``private_names``) are refused by the Upstream itself as well. The ``*_ready`` methods say when a
request can be answered in the event loop (nothing to fetch, nothing to render).
"""

from __future__ import annotations

import email.utils
import typing as t

from . import files, simple_api
from .messages import Refusal, Request, Response
from .upstream import STALE_HEADER, CachedFile, Upstream, UpstreamError

if t.TYPE_CHECKING:
    from .index import PackageIndex
    from .settings import Settings
    from .teams import Teams

METADATA_TYPE = "text/plain; charset=utf-8"
FILE_TYPE = "application/octet-stream"


def private_names(index: PackageIndex, teams: Teams | None = None) -> t.Callable[[str], bool]:
    """Whether this index claims a name: it holds files of it, or (with teams) the trail
    knows it (owners, deleted files, a status) or a roles rule reserves it. Such a name is
    never served from the upstream: a squatter's upload there changes nothing here."""

    def claimed(name: str) -> bool:
        index.refresh()
        if index.project_stamp(name) is not None:
            return True
        if teams is None:
            return False
        return teams.ledger.known(name) or teams.roles.rules.reserved(name)

    return claimed


class CacheRoutes:
    """The cache of the upstream index as request handlers of one worker."""

    def __init__(self, settings: Settings, private: t.Callable[[str], bool]) -> None:
        self.upstream = Upstream(settings, private=private)
        scope = "private" if "download" in settings.authenticate else "public"
        self.file_cache_control = f"{scope}, {files.IMMUTABLE}"
        self.page_headers = [("Vary", "Accept"), ("Cache-Control", files.REVALIDATE)]

    # -- pages ---------------------------------------------------------------------------
    def page_ready(self, name: str, kind: str) -> bool:
        """True if the page is fresh and rendered: answered without any wait."""
        return self.upstream.page_ready(name, kind)

    def project_page(self, req: Request, name: str, kind: str) -> Response:
        """/simple/<name>/ of a project only the upstream has (``name`` normalised)."""
        try:
            project = self.upstream.project(name)
        except UpstreamError as exc:
            raise Refusal(exc.status, exc.reason) from None
        if project is None:
            raise Refusal(404, f"Not found: {name} does not exist here or upstream")
        page = self.upstream.render(project, kind)
        headers = list(self.page_headers)
        if project.stale:
            confirmed = email.utils.formatdate(project.fetched_at, usegmt=True)
            headers.append((STALE_HEADER, f"upstream unavailable; as of {confirmed}"))
        return files.send_bytes(req, page.body, page.etag, simple_api.CONTENT_TYPES[kind],
                                headers)

    # -- files ---------------------------------------------------------------------------
    def file_ready(self, req: Request) -> bool:
        """True if the file is on disk already (sent from the event loop)."""
        return self.upstream.cached_path(req.params["project"], req.params["filename"]) \
            is not None

    def cache_file(self, req: Request) -> Response:
        """/cache/<project>/<filename> (and ``<filename>.metadata``)."""
        project, filename = req.params["project"], req.params["filename"]
        kind = METADATA_TYPE if filename.endswith(".metadata") else FILE_TYPE
        try:
            if req.head and self.upstream.cached_path(project, filename) is None:
                # HEAD of a file not fetched yet: what the page says, without fetching it.
                info = self.upstream.file_info(project, filename)
                headers = [("Content-Type", kind), ("Cache-Control", self.file_cache_control)]
                if info.size is not None and not filename.endswith(".metadata"):
                    headers.append(("Content-Length", str(info.size)))
                return Response(200, iter(()), headers)
            got = self.upstream.open_file(project, filename)
        except UpstreamError as exc:
            raise Refusal(exc.status, exc.reason) from None
        if isinstance(got, CachedFile):
            sent = files.send_file(req, got.path, self.file_cache_control, kind)
            if sent is None:
                raise Refusal(404, f"Not found: {filename[:100]} left the cache; ask again")
            return sent
        headers = [("Content-Type", kind), ("Cache-Control", self.file_cache_control)]
        if got.size is not None:
            headers.append(("Content-Length", str(got.size)))
        if req.head:
            got.close()
            return Response(200, iter(()), headers)
        # Chunks come as the upstream sends them; an UpstreamError while they are sent
        # (a bad hash, a cut) closes the connection before the last byte.
        return Response(200, got, headers)
