"""The request path: route, authenticate, receive the form, run the handler where it belongs.

A request whose route can answer at once (a cached page, a file, ``/health``) is answered
in the event loop. Anything slow runs in a thread pool of its own kind, so that one kind
cannot starve another: bcrypt checks (``auth``), uploads (``upload``) and the rest (``pool``,
``PYPI_THREADS``). Upload bodies are received by the event loop, never by a thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import functools
import logging
import os
import time
import typing as t
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor

from . import logs, multipart
from .accounts import Accounts
from .httpserver import BodyTimeout, ClientGone, Connection, Incoming
from .messages import Identity, Refusal, Request, Response, plain
from .ratelimit import LoginLimiter
from .routes import LOOP, UPLOAD, Route, RouteTable
from .settings import Settings
from .storage import storage_refusal

log = logging.getLogger("pypibox.app")

CHALLENGE = [("WWW-Authenticate", 'Basic realm="pypi"')]
UNAUTHORIZED = "Unauthorized: this index needs a user name and password"
FORBIDDEN = "Forbidden: wrong user name or password"
#: The user name with which clients send an API token as the password, as on PyPI.
TOKEN_USER = "__token__"
#: Threads for completed uploads (validation, fsync): few, the disk is the limit.
UPLOAD_THREADS = 2
#: Password checks waiting for a bcrypt thread, per worker; more get 503.
MAX_CHECKS_WAITING = 64
#: Of those, from one client address; more get 429.
MAX_CHECKS_PER_ADDRESS = 8


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """User and password of a Basic Authorization header; None if absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


#: Disk errors a client is told about as such (full, read-only, not allowed), not as a 500.
DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def failure(req: Request, exc: Exception) -> Response:
    """The answer to a handler that raised: a full or read-only disk says so (507, 503)."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
        return storage_refusal(exc, "changed").response()
    log.exception("error in %s %s", req.method, req.path)
    return plain(500, "Internal server error (the server's log says more)")


class FairChecks:
    """Password checks in a few threads, taken in turn from each client address.

    A flood from one address then delays another address's check by at most one round of
    the checks already running, not by the whole queue the flood built.
    """

    def __init__(self, pool: ThreadPoolExecutor, threads: int,
                 per_address: int = MAX_CHECKS_PER_ADDRESS) -> None:
        self.pool = pool
        self.threads = threads
        self.per_address = per_address
        self.running = 0
        self.queues: OrderedDict[str, deque[tuple[t.Callable[[], bool],
                                                  asyncio.Future[bool]]]] = OrderedDict()

    def submit(self, address: str, job: t.Callable[[], bool]) -> asyncio.Future[bool]:
        """Queue ``job`` for ``address``; Refusal 429 if that address has too many waiting."""
        queue = self.queues.setdefault(address, deque())
        if len(queue) >= self.per_address:
            raise Refusal(429, "Too many password checks from your address: try again in 1 s",
                          [("Retry-After", "1")])
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        queue.append((job, future))
        self._pump()
        return future

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while self.running < self.threads and self.queues:
            address, queue = next(iter(self.queues.items()))
            job, future = queue.popleft()
            if queue:
                self.queues.move_to_end(address)  # the next check comes from another address
            else:
                del self.queues[address]
            self.running += 1
            done = loop.run_in_executor(self.pool, job)
            done.add_done_callback(functools.partial(self._finished, future))

    def _finished(self, future: asyncio.Future[bool], done: asyncio.Future[bool]) -> None:
        self.running -= 1
        if not future.done():
            if done.exception() is not None:
                future.set_exception(t.cast(BaseException, done.exception()))
            else:
                future.set_result(done.result())
        self._pump()


class _Pending:
    """Marker: the credentials need a slow check."""


PENDING = _Pending()


class App:
    """One worker's request path over a route table."""

    def __init__(self, settings: Settings, accounts: Accounts, routes: RouteTable,
                 on_upload: t.Callable[[Request], multipart.Sink] | None = None) -> None:
        self.settings = settings
        self.accounts = accounts
        self.routes = routes
        self.authenticate = frozenset(settings.authenticate)
        self.pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="pypibox")
        auth_threads = max(2, os.cpu_count() or 2)
        self.auth_pool = ThreadPoolExecutor(auth_threads, thread_name_prefix="pypibox-auth")
        self.checks = FairChecks(self.auth_pool, auth_threads)
        self.upload_pool = ThreadPoolExecutor(UPLOAD_THREADS, thread_name_prefix="pypibox-up")
        self.limiter = LoginLimiter(settings.auth_rate)
        self.checking: dict[bytes, asyncio.Future[bool]] = {}
        self.receiving = 0
        self.access = logs.AccessLog()

    # -- entry from the connection ----------------------------------------------------------
    def start(self, conn: Connection, incoming: Incoming) -> None:
        """Answer ``incoming``: at once when nothing is slow, else in a task."""
        req = incoming.request
        try:
            route = self.routes.match(req)
            if route.receiver is not None or incoming.has_body:
                self._spawn(conn, incoming, route)
                return
            identity = self._identity_now(route, req)
            if isinstance(identity, _Pending) or not (
                    route.where == LOOP or (route.quick is not None and route.quick(req))):
                self._spawn(conn, incoming, route)
                return
            req.identity = identity
            response = route.handler(req)
        except Refusal as refusal:
            response = refusal.response()
        except Exception as exc:
            response = failure(req, exc)
        conn.respond_now(incoming, response)

    def _spawn(self, conn: Connection, incoming: Incoming, route: Route) -> None:
        conn.loop.create_task(self.serve(conn, incoming, route))

    async def serve(self, conn: Connection, incoming: Incoming, route: Route) -> None:
        """The slow path: await the password check, the body, and the handler's thread."""
        req = incoming.request
        loop = conn.loop
        cleanup: t.Callable[[], None] | None = None
        try:
            req.identity = await self._identity(route, req)
            if route.receiver is not None:
                cleanup = await self._receive_form(conn, incoming, req, route)
            if route.where == LOOP or (route.quick is not None and route.quick(req)):
                response = route.handler(req)
            else:
                pool = self.upload_pool if route.where == UPLOAD else self.pool
                response = await loop.run_in_executor(pool, route.handler, req)
        except Refusal as refusal:
            response = refusal.response()
        except Exception as exc:
            response = failure(req, exc)
        finally:
            if cleanup is not None:
                cleanup()
        await conn.respond(incoming, response)

    # -- authentication ---------------------------------------------------------------------
    def needs_password(self, route: Route) -> bool:
        """Uploads always need a password; reads when PYPI_AUTHENTICATE says so."""
        return route.action == "update" or route.action in self.authenticate

    def _identity_now(self, route: Route, req: Request) -> Identity | _Pending | None:
        """Who it is, if that can be told without waiting; PENDING when bcrypt must run."""
        if not self.needs_password(route):
            return None
        creds = basic_credentials(req.headers.get("authorization"))
        if creds is None or creds[1] == "":
            # No password yet: the challenge makes pip ask its keyring, then the user.
            raise Refusal(401, UNAUTHORIZED, CHALLENGE)
        if creds[0] == TOKEN_USER:
            return self._token(req, creds[1])
        if self.accounts.is_cached(*creds):
            return Identity(creds[0])
        return PENDING

    def _token(self, req: Request, secret: str) -> Identity:
        """An API token (user ``__token__``): one sha256, so it is checked right here."""
        services = self.routes.services
        found = services.teams.tokens.check(secret) if services is not None else None
        if found is not None:
            return found
        wait = self.limiter.take(req.client, TOKEN_USER)
        if wait:
            raise Refusal(429, f"Too many password checks: try again in {wait} s",
                          [("Retry-After", str(wait))])
        raise Refusal(403, FORBIDDEN)

    async def _identity(self, route: Route, req: Request) -> Identity | None:
        found = self._identity_now(route, req)
        if not isinstance(found, _Pending):
            return found
        creds = basic_credentials(req.headers.get("authorization"))
        assert creds is not None
        user, password = creds
        key = self.accounts.key(user, password)
        running = self.checking.get(key)
        if running is not None:
            ok = await asyncio.shield(running)  # the same credentials: one bcrypt for all
        else:
            wait = self.limiter.take(req.client, user)
            if wait:
                raise Refusal(429, f"Too many password checks: try again in {wait} s",
                              [("Retry-After", str(wait))])
            if len(self.checking) >= MAX_CHECKS_WAITING:
                raise Refusal(503, "Busy: too many password checks waiting; try again shortly",
                              [("Retry-After", "2")])
            future = self.checks.submit(req.client,
                                        functools.partial(self.accounts.check, user, password))
            self.checking[key] = future
            try:
                ok = await asyncio.shield(future)
            finally:
                self.checking.pop(key, None)
            if ok:
                self.limiter.succeeded(req.client, user)
        if not ok:
            raise Refusal(403, FORBIDDEN)
        return Identity(user)

    # -- upload bodies ----------------------------------------------------------------------
    async def _receive_form(self, conn: Connection, incoming: Incoming, req: Request,
                            route: Route) -> t.Callable[[], None]:
        """Stream the multipart body into the form parser; returns the cleanup to run."""
        settings = self.settings
        if incoming.chunked:
            raise Refusal(411, "Upload refused: send a Content-Length (chunked bodies are not "
                               "supported)")
        if incoming.length > settings.max_upload_size:
            raise Refusal(413, "Upload refused: larger than the limit of "
                               f"{settings.max_upload_size} bytes (PYPI_MAX_UPLOAD_SIZE)")
        boundary = multipart.boundary_of(req.headers.get("content-type", ""))
        if self.receiving >= settings.max_uploads:
            raise Refusal(503, f"Busy: {self.receiving} uploads are arriving; try again shortly",
                          [("Retry-After", "5")])
        assert route.receiver is not None
        receiver = route.receiver(req)  # opens nothing until the file part begins
        self.receiving += 1
        try:
            if incoming.expect_continue:
                conn.write_continue()
            parser = multipart.FormParser(boundary, receiver.open_file)
            while True:
                try:
                    data = await incoming.read()
                except BodyTimeout:
                    raise Refusal(408, "Request timeout: the upload stopped arriving (less "
                                       f"than 16 KiB in {settings.body_timeout:g} s); nothing "
                                       "was stored") from None
                except ClientGone:
                    break
                if not data:
                    break
                parser.feed(data)
            if not incoming.complete:
                raise Refusal(400, "Upload incomplete: the request body ended after "
                                   f"{incoming.received} of {incoming.length} bytes; nothing "
                                   "was stored")
            req.form = parser.finish()
        except BaseException:
            receiver.abort()
            raise
        finally:
            self.receiving -= 1
        return receiver.abort

    # -- access log -------------------------------------------------------------------------
    def log_access(self, incoming: Incoming, response: Response, size: int) -> None:
        """One line per answered request."""
        req = incoming.request
        millis = (time.perf_counter() - incoming.started) * 1000
        self.access.line(req.client, req.method, req.path, req.query_string, req.version,
                         response.status, size, millis, req.headers.get("user-agent", "-"))
