"""The HTTP API: routes parse, call the library through the engine, and format."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._cpu import usable_cpus
from ..classifier import Classifier
from ..errors import InputError, KnnclassError
from ..settings import Settings
from ..store import Store
from ..store.base import validate_name
from ..store.remote import ADMIN_HEADER, STORE_ROUTE
from .engine import Engine
from .foreground import Foreground
from .indexer import IndexBuilder
from .jobs import JobRunner
from .routes import RouteContext, collection_router
from .schemas import ErrorBody
from .store_route import StoreRoute

__all__ = ["ServiceSettings", "create_app"]

log = logging.getLogger("knnclass.service")


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and keys. Keys are compared in constant time and never logged."""

    api_key: str | None = None
    read_key: str | None = None
    max_body_bytes: int = 1 << 20
    # Beyond this many /v1 requests in progress, answer 429: two per usable CPU keeps the
    # p99 of accepted requests within ~3x idle under a flood (benchmarks/reliability.py).
    max_in_flight: int = field(default_factory=lambda: 2 * usable_cpus())
    retry_after_s: int = 1
    body_timeout_s: float = 15.0  # longest wait for the next piece of a request body (408 after)
    max_batch: int = 64
    batch_wait_ms: float = 0.0
    snapshot_dir: str | None = None  # where POST /v1/admin/snapshot may write (None: the route is off)
    # The local admin token other knnclass processes on this machine use to reach the store
    # (written to the store's .service.json by `knnclass serve`); None: the store route is off.
    admin_token: str | None = None
    max_admin_body_bytes: int = 1 << 28
    index_check_s: float = 30.0  # how often live adds are checked for an index build (out of process)
    jobs_dir: str | None = None  # where admin jobs are recorded (None: the job routes are off)
    import_dir: str | None = None  # the server-side files admin jobs may read (None: uploads only)
    max_upload_bytes: int = 1 << 30
    # How long a thread may hold the GIL while another waits (Python's default: 5 ms). Store work
    # for other processes runs beside classify; at 0.5 ms a re-tune lifts classify p99 by 1.4x
    # instead of 4x (benchmarks/live.py).
    gil_switch_ms: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> ServiceSettings:
        """The service part of knnclass's settings (keys, limits, snapshot dir), plus `changes`."""
        limits: dict[str, Any] = {"max_in_flight": settings.max_in_flight} if settings.max_in_flight else {}
        return cls(
            api_key=settings.api_key,
            read_key=settings.read_key,
            batch_wait_ms=settings.batch_wait_ms,
            snapshot_dir=settings.snapshot_dir,
            import_dir=settings.import_dir,
            gil_switch_ms=settings.gil_switch_ms,
            **limits,
            **changes,
        )

    def __post_init__(self) -> None:
        if not 0 < self.gil_switch_ms <= 1000:
            raise InputError(f"KNNCLASS_GIL_SWITCH_MS={self.gil_switch_ms:g}: give milliseconds in (0, 1000]")
        if self.read_key is not None and self.api_key is None:
            raise InputError(
                "KNNCLASS_READ_KEY is set without KNNCLASS_API_KEY: classify would need a key while "
                "writes needed none; set KNNCLASS_API_KEY too"
            )


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status, headers=headers)


class _Refused(Exception):
    """Raised from `receive` to stop the app before it acts; the guard sends its own answer instead."""


class _Guard:
    """Pure-ASGI middleware: body size and idle limits, bounded in-flight work, per-route metrics.

    A /v1 request takes an in-flight slot once its body has fully arrived (at once if it has
    none), so slow or stalled uploads cannot hold the slots that bound the work; while it holds
    one it counts as `foreground` work, which other processes' store calls wait for.
    """

    def __init__(self, app: ASGIApp, settings: ServiceSettings, metrics: _Metrics, foreground: Foreground):
        self.app = app
        self.s = settings
        self.m = metrics
        self.foreground = foreground
        self.in_flight = 0

    def _overloaded(self) -> JSONResponse:
        return _error(
            429, "overloaded", "too many requests in flight; retry later", {"Retry-After": str(self.s.retry_after_s)}
        )

    def _take_slot(self) -> bool:
        """One more request in flight, unless the bound is reached."""
        if self.in_flight >= self.s.max_in_flight:
            return False
        self.in_flight += 1
        self.foreground.enter()
        return True

    def _too_big(self, limit: int) -> JSONResponse:
        return _error(413, "payload_too_large", f"request body over {limit} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        admin = scope["path"] == STORE_ROUTE  # token-only, local: no request slot, a larger body limit
        limited = scope["path"].startswith("/v1/") and not admin
        max_body = self.s.max_admin_body_bytes if admin else self.s.max_body_bytes
        if scope["path"].endswith("/jobs/index/upload"):
            max_body = self.s.max_upload_bytes
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > max_body
            except ValueError:
                too_big = True
            if too_big:
                self.m.count(method, "oversize", 413)
                await self._too_big(max_body)(scope, receive, send)
                return
        has_body = b"transfer-encoding" in headers or (length is not None and length.strip() not in (b"", b"0"))
        acquired = False
        if limited and not has_body:
            acquired = self._take_slot()
            if not acquired:
                self.m.count(method, "overload", 429)
                await self._overloaded()(scope, receive, send)
                return

        seen = 0
        body_done = not has_body
        refused: JSONResponse | None = None

        def refuse(response: JSONResponse) -> _Refused:
            nonlocal refused
            refused = response
            return _Refused()

        async def guarded_receive() -> Message:
            nonlocal seen, body_done, acquired
            if body_done:
                return await receive()
            try:
                msg = await asyncio.wait_for(receive(), self.s.body_timeout_s)
            except TimeoutError:
                raise refuse(
                    _error(408, "request_timeout", f"no request body data for {self.s.body_timeout_s:g} s")
                ) from None
            if msg["type"] != "http.request":
                return msg
            seen += len(msg.get("body", b""))
            if seen > max_body:  # chunked: counted as it streams
                raise refuse(self._too_big(max_body))
            if not msg.get("more_body", False):
                body_done = True
                if limited and not acquired:
                    acquired = self._take_slot()
                    if not acquired:
                        raise refuse(self._overloaded())
            return msg

        status = 500
        replaced = False

        async def tracking_send(msg: Message) -> None:
            nonlocal status, replaced
            if refused is not None:  # the app answered the exception from receive: send ours instead
                if not replaced:
                    replaced = True
                    status = refused.status_code
                    await refused(scope, receive, send)
                return
            if msg["type"] == "http.response.start":
                status = msg["status"]
                dur = f"app;dur={(time.perf_counter() - t0) * 1e3:.2f}".encode()
                msg = {**msg, "headers": [*msg.get("headers", []), (b"server-timing", dur)]}
            await send(msg)

        t0 = time.perf_counter()
        try:
            await self.app(scope, guarded_receive, tracking_send)
        finally:
            if acquired:
                self.in_flight -= 1
                self.foreground.leave()
            # the route template: an included router's own route path lacks its prefix
            route = (scope.get("fastapi") or {}).get("effective_route_context") or scope.get("route")
            name = getattr(route, "path", "unmatched")
            self.m.observe(method, name, status, time.perf_counter() - t0)


class _Metrics:
    """Prometheus metrics on an app-private registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        buckets = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
        self.requests = Counter(
            "knnclass_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "knnclass_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=buckets,
            registry=self.registry,
        )
        self.encode = Histogram(
            "knnclass_encode_seconds", "Embedding time per batch", buckets=buckets, registry=self.registry
        )
        self.search = Histogram(
            "knnclass_search_seconds", "Search + vote time per batch", buckets=buckets, registry=self.registry
        )
        self.batch = Histogram(
            "knnclass_batch_texts",
            "Texts per encoder batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.index_size = Gauge("knnclass_index_size", "Examples in the served collection", registry=self.registry)

    def count(self, method: str, route: str, status: int) -> None:
        self.requests.labels(method, route, str(status)).inc()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.count(method, route, status)
        self.latency.labels(method, route).observe(seconds)

    def engine(self, encode_s: float, search_s: float, n: int) -> None:
        self.encode.observe(encode_s)
        self.search.observe(search_s)
        self.batch.observe(n)


def _key_from(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth and auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return (request.headers.get("x-api-key") or "").strip() or None


def _matches(given: str | None, expected: str | None) -> bool:
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


class _AuthError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def create_app(classifier: Classifier, settings: ServiceSettings | None = None) -> FastAPI:
    """The FastAPI app serving `classifier`; the store is closed on shutdown."""
    s = settings or ServiceSettings()
    metrics = _Metrics()
    foreground = Foreground()  # requests in progress: the store route's slices wait for none
    engine = Engine(classifier, max_batch=s.max_batch, wait_s=s.batch_wait_ms / 1000, foreground=foreground)
    engine.observe = metrics.engine
    indexer = IndexBuilder(classifier.store, engine.write)
    runner = JobRunner(Path(s.jobs_dir), _store_args(classifier.store)) if s.jobs_dir else None
    store_route = (
        StoreRoute(classifier.store, s.admin_token, engine.write, indexer, foreground.wait) if s.admin_token else None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        switch = sys.getswitchinterval()
        sys.setswitchinterval(s.gil_switch_ms / 1000)  # this process serves now; restored however it stops
        try:
            await engine.start()
            try:
                await engine.read(_warm, classifier)
            except KnnclassError as e:
                log.warning("not ready yet: %s", e)
            keeper = asyncio.create_task(indexer.keep_up(s.index_check_s)) if indexer.out_of_process else None
            if runner is not None:
                await runner.start()
            yield
            if runner is not None:
                await runner.stop()
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            await engine.stop()
            if store_route is not None:
                store_route.shutdown()
            classifier.store.close()
        finally:
            sys.setswitchinterval(switch)
        log.warning("knnclass: requests drained; store flushed and closed")

    # /docs and /redoc from assets fastapi-offline installs: they work with no internet
    app = FastAPIOffline(
        title="knnclass",
        summary="Nearest-neighbour ticket classification with evidence",
        version="0.1.0",
        lifespan=lifespan,
        responses={422: {"model": ErrorBody}, 429: {"model": ErrorBody}, 413: {"model": ErrorBody}},
    )
    app.state.engine = engine
    app.state.indexer = indexer
    app.state.metrics = metrics
    app.router.redirect_slashes = False  # "/v1/classify/" is a JSON 404, not a bodiless redirect
    app.add_middleware(_Guard, settings=s, metrics=metrics, foreground=foreground)

    # --- auth ------------------------------------------------------------------------------
    # (dependencies are coroutines: FastAPI runs plain functions on a thread pool, two thread
    # hops per request for a few microseconds of work)
    who = "api:write" if s.api_key else "api"  # the name the label history records for writes (one write key)

    async def require_write(request: Request) -> None:
        if s.api_key is None:
            return
        key = _key_from(request)
        if key is None:
            raise _AuthError(401, "missing API key (Authorization: Bearer <key> or X-API-Key)")
        if not _matches(key, s.api_key):
            raise _AuthError(403, "writes need the write key (KNNCLASS_API_KEY); this is not it")

    async def require_read(request: Request) -> None:
        if s.api_key is None and s.read_key is None:
            return
        key = _key_from(request)
        if key is None:
            raise _AuthError(401, "missing API key (Authorization: Bearer <key> or X-API-Key)")
        if not (_matches(key, s.api_key) | _matches(key, s.read_key)):
            raise _AuthError(403, "invalid API key")

    # --- errors ----------------------------------------------------------------------------
    @app.exception_handler(_AuthError)
    async def _auth(_: Request, e: _AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return _error(e.status, "unauthorized" if e.status == 401 else "forbidden", e.message, headers)

    @app.exception_handler(KnnclassError)
    async def _lib(_: Request, e: KnnclassError) -> JSONResponse:
        return _error(e.http_status, type(e).__name__, str(e))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg", ""))[:200]}
            for err in e.errors()[:20]
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        if e.errors() and e.errors()[0].get("type") == "json_invalid":  # loc is (body, character offset)
            msg = f"body: invalid JSON at character {first['loc'][-1]}"
        else:
            msg = f"{'.'.join(first['loc'][1:]) or 'body'}: {first['msg']}"
        return JSONResponse({"error": {"type": "validation_error", "message": msg, "details": details}}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 400:  # a body that is not even decodable: the same class as invalid JSON
            return _error(422, "validation_error", f"body: {e.detail}")
        kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return _error(e.status_code, kind, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception) -> JSONResponse:
        log.error("internal error: %s", type(e).__name__)
        return _error(500, "internal_error", "internal error")

    # --- health ------------------------------------------------------------------------------
    @app.get("/livez", tags=["health"])
    @app.head("/livez", include_in_schema=False)
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    @app.head("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        try:
            state = await engine.read(_readiness, classifier)
        except KnnclassError as e:
            return JSONResponse({"ready": False, "reason": str(e)}, status_code=503)
        metrics.index_size.set(state["count"])
        if state["count"] == 0:
            return JSONResponse({"ready": False, "reason": "the collection is empty", **state}, status_code=503)
        return JSONResponse({"ready": True, **state})

    @app.get("/metrics", tags=["health"])
    @app.head("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- collections -------------------------------------------------------------------------
    siblings: dict[str, Classifier] = {classifier.collection: classifier}

    async def default_collection() -> Classifier:
        return classifier

    async def named_collection(name: str) -> Classifier:
        clf = siblings.get(name)
        if clf is None:
            classifier.store.ref(name)  # a clear 422 / 404 for an invalid or missing collection
            clf = siblings.setdefault(name, classifier.sibling(name))
        return clf

    ctx = RouteContext(
        engine, require_read, require_write, lambda m: _AuthError(403, m), who, s.snapshot_dir, runner, s.import_dir
    )

    async def default_name() -> str:
        return classifier.collection

    async def valid_name(name: str) -> str:
        return validate_name(name)

    app.include_router(collection_router(ctx, default_collection, default_name), prefix="/v1")
    app.include_router(
        collection_router(ctx, named_collection, valid_name, tag="collection "), prefix="/v1/collections/{name}"
    )

    @app.get("/v1/jobs", tags=["admin"], dependencies=[Depends(require_write)])
    async def list_jobs() -> dict[str, Any]:
        """Every admin job, newest first, with its progress."""
        r = ctx.runner()
        jobs = sorted(r.jobs.values(), key=lambda j: j.created, reverse=True)
        return {"jobs": [j.to_dict(r.progress(j)) for j in jobs]}

    @app.get("/v1/jobs/{job_id}", tags=["admin"], dependencies=[Depends(require_write)])
    async def get_job(job_id: str) -> dict[str, Any]:
        """A job: state (queued, running, done, failed, cancelled), progress {done, total}, error, output tail."""
        r = ctx.runner()
        job = r.get(job_id)
        return job.to_dict(r.progress(job))

    @app.delete("/v1/jobs/{job_id}", tags=["admin"], dependencies=[Depends(require_write)])
    async def cancel_job(job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (an index job keeps what it stored; re-run it to resume)."""
        r = ctx.runner()
        job = await r.cancel(job_id)
        return job.to_dict(r.progress(job))

    @app.get("/v1/collections", tags=["collections"], dependencies=[Depends(require_read)])
    async def collections() -> dict[str, Any]:
        """Every collection of the store (current version, versions, count); `default` is /v1's."""
        return {"default": classifier.collection, "collections": await engine.read(_collections, classifier.store)}

    if store_route is not None:

        @app.post(STORE_ROUTE, include_in_schema=False)
        async def store_call(request: Request) -> Response:
            """One Store call from another knnclass process on this machine (admin token only)."""
            assert store_route is not None
            if not store_route.allowed(request.headers.get(ADMIN_HEADER)):
                return _error(403, "forbidden", "the store route needs this service's admin token")
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return _error(422, "validation_error", "body: invalid JSON")
            if not isinstance(body, dict):
                return _error(422, "validation_error", "body: expected an object")
            return Response(await store_route.call(body), media_type="application/json")

    return app


def _warm(clf: Classifier) -> None:
    """Load the encoder at start-up so the first request is fast."""
    clf.encoder_for(clf.meta())


def _readiness(clf: Classifier) -> dict[str, Any]:
    ref = clf.ref()
    meta = clf.meta(ref)
    enc = clf.encoder_for(meta)
    return {
        "collection": ref.name,
        "version": ref.version,
        "count": clf.store.count(ref),
        "encoder": enc.identity,
        "tuned": meta.rule is not None,
    }


def _collections(store: Store) -> list[dict[str, Any]]:
    out = []
    for name in store.list_collections():
        ref = store.ref(name)
        out.append({"name": name, "version": ref.version, "versions": store.versions(name), "count": store.count(ref)})
    return out


def _store_args(store: Store) -> list[str]:
    """How a job's child process names the store this service serves."""
    root = getattr(store, "root", None)
    if root is not None:
        return ["--store", str(root)]
    url = getattr(store, "url", None)
    return ["--qdrant-url", str(url)] if url else []
