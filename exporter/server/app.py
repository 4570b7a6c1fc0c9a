"""HTTP app: ingest API, read API, health and /metrics, built by :func:`create_app`.

Every request-level failure maps to a 4xx that says what to fix (or 503 when the store cannot take
the write); per-event problems never fail the request (partial success). The fuzz tests hold the
line that nothing a client sends produces a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..core.aggregate import Aggregator
from ..config import Config
from ..core.events import decode_batch
from ..core.exposition import FastUsageWriter, UsageCollector
from ..core.pricing import PriceTable, load_price_table
from ..core.ratelimit import TenantRateLimits
from ..core.store import StateStore, StoreUnavailable
from ..core.telemetry import Telemetry

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
_OM_EOF = b"# EOF\n"
CUSTOMER_SORT_KEYS = ("cost_usd", "events", "input_tokens", "output_tokens", "errors", "latest_timestamp", "customer")


class HTTPProblem(Exception):
    """A request-level refusal: status, rejection reason for the self-metric, message for the client."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def _problem(exc: HTTPProblem) -> Response:
    return _json({"error": exc.message}, exc.status, exc.headers)


class TokenAuth:
    """Bearer tokens → tenant. Stored as SHA-256 digests and compared with ``hmac.compare_digest``
    against *every* known token, so timing reveals neither which token nor how much of it matched."""

    def __init__(self, config: Config) -> None:
        self.required = config.auth_required
        self.digests = [(hashlib.sha256(token.encode()).digest(), name)
                        for name, tenant in config.tenants.items() for token in tenant.tokens]

    def tenant_for(self, request: Request) -> str | None:
        """The caller's tenant, or None when auth is off; raises 401 for anything else."""
        if not self.required:
            return None
        if "access_token" in request.query_params or "token" in request.query_params:
            raise HTTPProblem(401, "unauthenticated", "tokens in the query string are refused (they end up in "
                                                      "logs); send Authorization: Bearer <token>")
        if not self.digests:
            raise HTTPProblem(401, "unauthenticated", "authentication is required (not listening on loopback) but "
                                                      "no tenant tokens are configured; configure tenants or set "
                                                      "--auth.mode=off on a trusted network")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPProblem(401, "unauthenticated", "missing or malformed Authorization: Bearer <token> header",
                              {"WWW-Authenticate": 'Bearer realm="llm-usage-exporter"'})
        presented = hashlib.sha256(token.strip().encode()).digest()
        found = None
        for digest, tenant in self.digests:
            if hmac.compare_digest(presented, digest):
                found = tenant
        if found is None:
            raise HTTPProblem(401, "unauthenticated", "unknown token",
                              {"WWW-Authenticate": 'Bearer realm="llm-usage-exporter", error="invalid_token"'})
        return found


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing with 413 as soon as it exceeds ``limit`` (never buffered past it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and (
            len(declared) > 18 or int(declared) > limit):
        raise HTTPProblem(413, "too_large", f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, "too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _loads(data: bytes) -> Any:
    """orjson for speed; the stdlib parser as a fallback for valid JSON orjson refuses (integers past
    64 bits), and NaN/Infinity refused by both so they never reach a counter."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        def refuse(name: str) -> Any:
            raise ValueError(f"{name} is not valid JSON")
        document = json.loads(data.decode("utf-8"), parse_constant=refuse)
        _refuse_lone_surrogates(document)
        return document


def _refuse_lone_surrogates(document: Any) -> None:
    """The stdlib parser accepts ``\\ud800``-style lone surrogates, which no UTF-8 writer can emit
    again (the state log, /metrics, the errors API): refuse the body like orjson does."""
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a string holds a lone UTF-16 surrogate") from None
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def parse_events(body: bytes, content_type: str, max_events: int) -> list[Any]:
    """Decode a JSON ``{"events": [...]}`` or NDJSON body into raw event objects (400/413/415)."""
    media = _media(content_type)
    if media not in JSON_TYPES and media not in NDJSON_TYPES:
        raise HTTPProblem(415, "unsupported_media_type",
                          "Content-Type must be application/json or application/x-ndjson")
    try:
        if media in JSON_TYPES:
            document = _loads(body)
            if not isinstance(document, dict) or not isinstance(document.get("events"), list):
                raise HTTPProblem(400, "bad_request", 'body must be a JSON object {"events": [ ... ]}')
            events = document["events"]
        else:
            lines = [line for line in body.split(b"\n") if line.strip()]
            if len(lines) > max_events:
                raise HTTPProblem(413, "too_large", f"{len(lines)} events exceed the batch limit of {max_events}")
            events = []
            for number, line in enumerate(lines, 1):
                try:
                    events.append(_loads(line))
                except (ValueError, RecursionError) as exc:
                    raise HTTPProblem(400, "bad_request", f"line {number} is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise HTTPProblem(400, "bad_request", f"body is not valid JSON: {exc}") from None
    if len(events) > max_events:
        raise HTTPProblem(413, "too_large", f"{len(events)} events exceed the batch limit of {max_events}")
    return events


def _tenant_counts(tenants: Iterable[Any]) -> dict[str, int]:
    """Events per tenant named in the batch (malformed tenants are left to per-event validation)."""
    counts: dict[str, int] = {}
    for tenant in tenants:
        if isinstance(tenant, str):
            counts[tenant] = counts.get(tenant, 0) + 1
    return counts


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class MetricsMiddleware:
    """Counts requests by route *template* (never the raw path, which clients control)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.telemetry.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.telemetry.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in ("GET", "POST", "HEAD", "PUT", "DELETE") else "other"
            self.telemetry.http_requests.labels(template, method, str(status)).inc()
            self.telemetry.http_duration.labels(template, method).observe(time.perf_counter() - start)


@dataclass
class Exporter:
    """Everything one app instance owns; tests build as many as they like."""

    config: Config
    registry: CollectorRegistry
    self_registry: CollectorRegistry
    telemetry: Telemetry
    prices: PriceTable
    store: StateStore
    aggregator: Aggregator
    auth: TokenAuth
    rate_limits: TenantRateLimits
    writer: FastUsageWriter

    def render_metrics(self, accept: str) -> tuple[bytes, str]:
        """The /metrics body for the negotiated format, and its content type."""
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        own = encoder(self.self_registry)
        usage = self.writer.render(openmetrics).encode()
        if openmetrics:
            return own[:-len(_OM_EOF)] + usage + _OM_EOF, content_type
        return own + usage, content_type


class _RegistryView(Collector):
    """Shows one registry's metrics inside another (the self-metrics inside the full registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def build_exporter(config: Config, registry: CollectorRegistry | None = None,
                   prices: PriceTable | None = None) -> Exporter:
    """``registry`` gets every metric (for tests and embedding); /metrics renders the self-metrics
    with prometheus-client and the usage series with the fast writer."""
    self_registry = CollectorRegistry(auto_describe=False)
    telemetry = Telemetry(self_registry)
    prices = prices or load_price_table(config.pricing_file)
    store = StateStore(config.storage_path, config.storage_sync)
    aggregator = Aggregator(config, prices, store, telemetry)
    registry = registry or CollectorRegistry(auto_describe=False)
    registry.register(_RegistryView(self_registry))
    registry.register(UsageCollector(aggregator))
    for name, tenant in config.tenants.items():
        if tenant.budget_usd_per_day is not None:
            telemetry.budget.labels(name).set(tenant.budget_usd_per_day)
    rate_limits = TenantRateLimits({name: t.rate_limit_events_per_second for name, t in config.tenants.items()})
    return Exporter(config, registry, self_registry, telemetry, prices, store, aggregator, TokenAuth(config),
                    rate_limits, FastUsageWriter(aggregator))


def create_app(config: Config, registry: CollectorRegistry | None = None, prices: PriceTable | None = None,
               exporter: Exporter | None = None) -> Starlette:
    """The ASGI app. The state store is opened and the simulator started in the lifespan."""
    ex = exporter or build_exporter(config, registry, prices)

    async def post_events(request: Request) -> Response:
        try:
            tenant = ex.auth.tenant_for(request)
            body = await read_body(request, config.web_max_body_bytes)
            now = time.time()
            content_type = request.headers.get("content-type", "")
            valid = decode_batch(body, now, ex.aggregator.limits) if _media(content_type) in JSON_TYPES else None
            if valid is not None:
                raw: list[Any] = []
                counts = _tenant_counts(e.tenant for e in valid)
                if len(valid) > config.web_max_batch_events:
                    raise HTTPProblem(413, "too_large", f"{len(valid)} events exceed the batch limit of "
                                                        f"{config.web_max_batch_events}")
            else:
                raw = parse_events(body, content_type, config.web_max_batch_events)
                counts = _tenant_counts(e.get("tenant") for e in raw if isinstance(e, dict))
            if tenant is not None:
                foreign = set(counts) - {tenant}
                if foreign:
                    raise HTTPProblem(403, "forbidden", f"token of tenant {tenant!r} cannot write tenant(s) "
                                                        f"{sorted(foreign)[:5]}")
            retry_after = ex.rate_limits.admit(counts) if ex.rate_limits.buckets else 0
            if retry_after:
                raise HTTPProblem(429, "rate_limited", f"tenant rate limit exceeded; retry in {retry_after}s",
                                  {"Retry-After": str(retry_after)})
            if not ex.store.healthy and not _store_recovers(ex):
                raise HTTPProblem(503, "store_unavailable", f"{ex.store.last_error or 'state store unavailable'}; "
                                  "nothing from this request was counted", {"Retry-After": "5"})
            try:
                if valid is not None:
                    result = ex.aggregator.ingest_valid(valid, "api", now)
                else:
                    result = ex.aggregator.ingest(raw, "api", now)
            except StoreUnavailable as exc:
                raise HTTPProblem(503, "store_unavailable", f"{exc}; nothing from this request was counted",
                                  {"Retry-After": "5"}) from None
        except HTTPProblem as exc:
            ex.telemetry.rejections.labels(exc.reason).inc()
            return _problem(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        return _json(result.as_dict())

    def _scoped_tenant(request: Request) -> str:
        tenant = request.path_params["tenant"]
        caller = ex.auth.tenant_for(request)
        if caller is not None and caller != tenant:
            raise HTTPProblem(403, "forbidden", f"token of tenant {caller!r} cannot read tenant {tenant!r}")
        return tenant

    def _limit(request: Request, default: int, maximum: int) -> int:
        raw = request.query_params.get("limit", str(default))
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= maximum:
            raise HTTPProblem(400, "bad_request", f"limit must be an integer from 1 to {maximum}")
        return int(raw)

    async def get_customers(request: Request) -> Response:
        try:
            tenant = _scoped_tenant(request)
            sort = request.query_params.get("sort", "cost_usd")
            if sort not in CUSTOMER_SORT_KEYS:
                raise HTTPProblem(400, "bad_request", f"sort must be one of {', '.join(CUSTOMER_SORT_KEYS)}")
            order = request.query_params.get("order", "desc")
            if order not in ("asc", "desc"):
                raise HTTPProblem(400, "bad_request", "order must be asc or desc")
            limit = _limit(request, 100, 10_000)
        except HTTPProblem as exc:
            return _problem(exc)
        rows = ex.aggregator.customer_rows(tenant, sort, order == "desc", limit)
        return _json({"tenant": tenant, "customers": rows})

    async def get_errors(request: Request) -> Response:
        try:
            tenant = _scoped_tenant(request)
            limit = _limit(request, 10, config.errors_ring_size)
        except HTTPProblem as exc:
            return _problem(exc)
        return _json({"tenant": tenant, "errors": ex.aggregator.errors_of(tenant, limit)})

    async def metrics(request: Request) -> Response:
        data, content_type = ex.render_metrics(request.headers.get("accept", ""))
        return Response(data, media_type=content_type)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if ex.store.healthy or _store_recovers(ex):
            return _json({"status": "ready"})
        return _json({"status": "not ready", "reason": ex.store.last_error}, 503)

    async def index(request: Request) -> Response:
        return _json({"name": "llm-usage-exporter", "metrics": "/metrics", "ingest": "POST /v1/events",
                      "otlp": "POST /v1/otlp/v1/traces",
                      "customers": "/v1/tenants/{tenant}/customers", "errors": "/v1/tenants/{tenant}/errors",
                      "health": ["/healthz", "/readyz"]})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ex.aggregator.load()
        task = None
        if config.simulator_enabled:
            from ..demo.simulator import run_live_simulator

            task = asyncio.create_task(run_live_simulator(ex.aggregator, config))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(StoreUnavailable):
                ex.aggregator.checkpoint()  # a faster next start; the log alone would be enough
            ex.store.close()

    from ..formats.otlp import make_otlp_route  # otlp builds on this module's HTTPProblem and read_body

    routes = [
        Route("/", index),
        Route("/v1/events", post_events, methods=["POST"]),
        make_otlp_route(ex),
        Route("/v1/tenants/{tenant}/customers", get_customers),
        Route("/v1/tenants/{tenant}/errors", get_errors),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.exporter = ex
    app.add_middleware(MetricsMiddleware, telemetry=ex.telemetry)
    return app


def _store_recovers(ex: Exporter) -> bool:
    """Probe an unhealthy store with an empty transaction so /readyz and writes recover by themselves."""
    try:
        ex.store.probe()
    except StoreUnavailable:
        return False
    ex.telemetry.store_up.set(1)
    return True

