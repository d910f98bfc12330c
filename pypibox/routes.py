"""The route table: every URL this server answers, in one list.

A route names its methods, its path (``{name}`` captures one segment, ``{name:.+}`` the
rest), its handler, the ``PYPI_AUTHENTICATE`` action that guards it, and where it runs:
``LOOP`` (in the event loop: it never waits), ``THREAD`` (in the thread pool, unless its
``quick(request)`` says this request can be answered at once) or ``UPLOAD`` (the upload
pool, after the event loop received the form through ``receiver``). Adding a route is one
entry in ``build``.
"""

from __future__ import annotations

import re
import typing as t
from dataclasses import dataclass, field

from .messages import Refusal, Request, Response

if t.TYPE_CHECKING:
    from .accounts import Accounts
    from .index import PackageIndex
    from .settings import Settings
    from .storage import AtomicFileBackend
    from .teams import Teams

LOOP, THREAD, UPLOAD = "loop", "thread", "upload"
Handler = t.Callable[[Request], Response]


class Receiver(t.Protocol):
    """Takes an upload form's file part as the event loop receives it."""

    def open_file(self, filename: str) -> t.Any: ...

    def abort(self) -> None: ...


_CAPTURE = re.compile(r"\{([a-z_]+)(?::([^}]+))?\}")


def _compile(path: str) -> re.Pattern[str] | None:
    """The regular expression of a path with captures; None for a plain path."""
    if "{" not in path:
        return None
    out, last = [], 0
    for match in _CAPTURE.finditer(path):
        out.append(re.escape(path[last:match.start()]))
        out.append(f"(?P<{match.group(1)}>{match.group(2) or '[^/]+'})")
        last = match.end()
    out.append(re.escape(path[last:]))
    return re.compile("".join(out))


@dataclass(frozen=True)
class Route:
    """One entry of the table."""

    methods: frozenset[str]
    path: str
    handler: Handler
    action: str | None = None          # "list", "download", "update" or None
    where: str = LOOP
    quick: t.Callable[[Request], bool] | None = None
    receiver: t.Callable[[Request], Receiver] | None = None
    regex: re.Pattern[str] | None = field(default=None, compare=False)


def route(methods: str, path: str, handler: Handler, **options: t.Any) -> Route:
    """A Route; ``methods`` is space-separated, and GET implies HEAD."""
    names = set(methods.split())
    if "GET" in names:
        names.add("HEAD")
    return Route(frozenset(names), path, handler, regex=_compile(path), **options)


@dataclass
class Services:
    """What the handlers of one worker share."""

    settings: Settings
    accounts: Accounts
    index: PackageIndex
    backend: AtomicFileBackend
    teams: Teams


class RouteTable:
    """Finds the route of a request: plain paths by lookup, then patterns in order."""

    def __init__(self, routes: t.Sequence[Route], services: Services | None = None) -> None:
        self.routes = list(routes)
        self.services = services
        self.plain: dict[str, list[Route]] = {}
        self.patterns: list[Route] = []
        for entry in self.routes:
            if entry.regex is None:
                self.plain.setdefault(entry.path, []).append(entry)
            else:
                self.patterns.append(entry)

    def match(self, req: Request) -> Route:
        """The route for ``req`` (its captures put in ``req.params``); Refusal 404 or 405."""
        method, path = req.method, req.path
        allowed: set[str] = set()
        for entry in self.plain.get(path, ()):
            if method in entry.methods:
                return entry
            allowed |= entry.methods
        for entry in self.patterns:
            assert entry.regex is not None
            found = entry.regex.fullmatch(path)
            if found is None:
                continue
            if method in entry.methods:
                req.params = found.groupdict()
                return entry
            allowed |= entry.methods
        if allowed:
            raise Refusal(405, f"Method not allowed: {method[:20]} (allowed: "
                               f"{', '.join(sorted(allowed))})",
                          [("Allow", ", ".join(sorted(allowed)))])
        raise Refusal(404, "Not found")


def build(settings: Settings, accounts: Accounts) -> RouteTable:
    """Every route of the server, with the handlers of one worker process."""
    from . import listing, readpath, webpages, writepath
    from .index import PackageIndex
    from .storage import AtomicFileBackend
    from .teams import FileRef, IndexCatalog, Teams

    index = PackageIndex(settings.packages_dir)
    backend = AtomicFileBackend.from_settings(settings)

    def remove(ref: FileRef) -> None:
        backend.remove_file(ref.path, ref.project, ref.version)
        index.remove(ref.relpath)

    teams = Teams.from_settings(settings, catalog=IndexCatalog(index),
                                user_exists=accounts.has_user, on_change=lambda: None,
                                remover=remove)
    teams.watch_tokens()
    services = Services(settings, accounts, index, backend, teams)
    read = readpath.ReadPath(settings, index, teams.ledger)
    write = writepath.WritePath(settings, index, backend, teams)
    pages = listing.Listing(settings, index, teams.ledger)
    web = webpages.WebPages(settings, index, teams.ledger)
    cached = []
    if settings.caches:   # PYPI_FALLBACK=cache: other names from the upstream, cached here
        from .upstream_routes import CacheRoutes, private_names

        read.cache = cache = CacheRoutes(settings, private_names(index, teams))
        cached = [route("GET", "/cache/{project}/{filename}", cache.cache_file,
                        action="download", where=THREAD, quick=cache.file_ready)]
    return RouteTable(cached + [
        route("GET", "/health", listing.health),
        route("GET", "/", pages.front, action="list", where=THREAD, quick=pages.front_ready),
        route("GET", "/favicon.ico", listing.no_favicon),
        route("POST", "/", write.post, action="update", where=UPLOAD, receiver=write.receiver),
        route("POST", "/RPC2", listing.no_xmlrpc),
        route("GET", "/simple/", read.root_page, action="list", where=THREAD,
              quick=read.root_ready),
        route("GET", "/simple/{project}/", read.project_page, action="list", where=THREAD,
              quick=read.project_ready),
        # devpi's path of a project page: hatch publish looks there for files to skip.
        route("GET", "/+simple/{project}/", read.devpi_project_page, action="list",
              where=THREAD),
        route("GET", "/packages/", pages.packages, action="list", where=THREAD,
              quick=pages.packages_ready),
        route("GET", "/packages/{path:.+}", read.package_file, action="download"),
        route("GET", "/simple", listing.add_slash),
        route("GET", "/simple/{project}", listing.add_slash),
        route("GET", "/packages", listing.add_slash),
        route("GET", "/{project}/json", pages.project_json, action="list", where=THREAD),
        # Pages for people (the simple API above stays as tools need it).
        route("GET", "/projects/", web.projects, action="list", where=THREAD),
        route("GET", "/projects", listing.add_slash),
        route("GET", "/project/{project}/", web.project, action="list", where=THREAD),
        route("GET", "/project/{project}", listing.add_slash),
        # pypiserver's shortcut: /<project>/ goes to the project's simple page.
        route("GET", "/{project}", listing.to_simple),
        route("GET", "/{project}/", listing.to_simple),
    ], services)
