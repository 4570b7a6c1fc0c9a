"""The exporter's object wiring and route table: ingest (through :mod:`exporter.server.ingest`), the
read API (:mod:`exporter.server.read_api`), health, reload and /metrics, built by :func:`create_app`.

Every request-level failure maps to a 4xx that says what to fix (or 503 when the store cannot take
the write); per-event problems never fail the request (partial success). The fuzz tests hold the
line that nothing a client sends produces a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import platform
import signal
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .. import __version__
from ..config import Config
from ..core.aggregate import Aggregator
from ..core.exposition import OM_EOF, FastUsageWriter, UsageCollector
from ..core.pricing import PriceBook, load_price_book
from ..core.ratelimit import TenantRateLimits
from ..core.store import StateStore, StoreUnavailable
from ..core.telemetry import Telemetry
from ..formats import otlp
from .http import MetricsMiddleware, TokenAuth, json_response
from .ingest import EVENTS, OTLP_TRACES, FrontDoor, store_ready
from .read_api import ReadAPI
from .reload import Loader, Reloader, set_budgets


@dataclass
class Exporter:
    """Everything one app instance owns; tests build as many as they like."""

    config: Config
    registry: CollectorRegistry
    self_registry: CollectorRegistry
    telemetry: Telemetry
    prices: PriceBook
    store: StateStore
    aggregator: Aggregator
    auth: TokenAuth
    rate_limits: TenantRateLimits
    writer: FastUsageWriter
    front_door: FrontDoor

    def render_metrics(self, accept: str, gzipped: bool = False) -> tuple[bytes, str]:
        """The /metrics body for the negotiated format (gzip-compressed if ``gzipped``), and its content type."""
        render, content_type = self.metrics_renderer(accept, gzipped)
        return render(), content_type

    def metrics_renderer(self, accept: str, gzipped: bool) -> tuple[Callable[[], bytes], str]:
        """Takes the state for one scrape now and returns what renders it, safe to call in another
        thread: the self-metrics are encoded and the usage series snapshotted here, on the thread
        that ingests, so the body is one instant's state however long the rendering takes."""
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        own = encoder(self.self_registry)
        if openmetrics:
            own = own[:-len(OM_EOF)]  # the writer ends the body with it, after the usage series
        snapshot = self.writer.snapshot()
        return functools.partial(self.writer.body, snapshot, own, openmetrics, gzipped), content_type


class _RegistryView(Collector):
    """Shows one registry's metrics inside another (the self-metrics inside the full registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def build_exporter(config: Config, registry: CollectorRegistry | None = None,
                   prices: PriceBook | None = None) -> Exporter:
    """``registry`` gets every metric (for tests and embedding); /metrics renders the self-metrics
    with prometheus-client and the usage series with the fast writer."""
    self_registry = CollectorRegistry(auto_describe=False)
    telemetry = Telemetry(self_registry)
    prices = prices or load_price_book(config.pricing_file)
    store = StateStore(config.storage_path, config.storage_sync)
    aggregator = Aggregator(config, prices, store, telemetry)
    telemetry.describe_prices(prices)
    registry = registry or CollectorRegistry(auto_describe=False)
    registry.register(_RegistryView(self_registry))
    registry.register(UsageCollector(aggregator))
    rate_limits = TenantRateLimits({name: t.rate_limit_events_per_second for name, t in config.tenants.items()})
    auth = TokenAuth(config)
    front_door = FrontDoor(config, auth, rate_limits, aggregator, store, telemetry)
    exporter = Exporter(config, registry, self_registry, telemetry, prices, store, aggregator, auth,
                        rate_limits, FastUsageWriter(aggregator), front_door)
    set_budgets(exporter, config)
    return exporter


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip``, ``*``; not with ``q=0``)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            q = params.strip().lower()
            if not q.startswith("q=") or q[2:].strip() not in ("0", "0.", "0.0", "0.00", "0.000"):
                return True
    return False


def wants_html(accept: str) -> bool:
    """A browser (``text/html`` before any JSON in Accept) rather than an API client (JSON, ``*/*``, nothing)."""
    accept = accept.lower()
    html_at, json_at = accept.find("text/html"), accept.find("application/json")
    return html_at >= 0 and (json_at < 0 or html_at < json_at)


def landing_page(links: list[tuple[str, str, str]]) -> str:
    """The HTML index for browsers: what this is, its version, and where to go."""
    items = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(text)}</a> {html.escape(note)}</li>'
                      for href, text, note in links)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llm-usage-exporter</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
code{{background:#f3f3f3;padding:0 .2em}}</style></head>
<body><h1>llm-usage-exporter</h1>
<p>Prometheus exporter for the usage and cost of LLM applications and AI agents.
Version <code>{html.escape(__version__)}</code> (Python {html.escape(platform.python_version())}).</p>
<ul>
{items}
</ul>
<p>Send usage events with <code>POST /v1/events</code> or OTLP to <code>POST /v1/otlp/v1/traces</code>;
the README of the package documents the API, the metrics and every flag
(<code>llm-usage-exporter --help</code>).</p>
</body></html>
"""


def create_app(config: Config, registry: CollectorRegistry | None = None, prices: PriceBook | None = None,
               exporter: Exporter | None = None, reload: Loader | None = None) -> Starlette:
    """The ASGI app. The state store is opened and the simulator started in the lifespan.

    ``reload`` re-runs the start-up loading (the CLI passes it): then SIGHUP reloads, and so does
    ``POST /-/reload`` when ``web.enable-lifecycle`` is on."""
    ex = exporter or build_exporter(config, registry, prices)
    reloader = Reloader(ex, reload) if reload is not None else None
    read_api = ReadAPI(ex, config)

    async def metrics(request: Request) -> Response:
        gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))  # Prometheus always asks
        render, content_type = ex.metrics_renderer(request.headers.get("accept", ""), gzipped)
        # Rendering changed blocks and compressing them (zlib lets go of the GIL) happen off the
        # event loop, so ingest goes on meanwhile.
        data = await asyncio.to_thread(render)
        headers = {"Vary": "Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return Response(data, media_type=content_type, headers=headers)

    async def post_reload(request: Request) -> Response:
        if not config.web_enable_lifecycle:
            return json_response({"error": "the lifecycle API is off; start with --web.enable-lifecycle "
                                           "(or send SIGHUP)"}, 403)
        if reloader is None:
            return json_response({"error": "this server was not started with a configuration to reload"}, 403)
        result = reloader.reload()
        if not result.ok:
            return json_response({"status": "error", "error": result.error}, 500)
        return json_response({"status": "success", "restart_needed": list(result.restart_needed)})

    async def version(request: Request) -> Response:
        return json_response({"version": __version__, "python_version": platform.python_version()})

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if store_ready(ex.store, ex.telemetry):
            return json_response({"status": "ready"})
        return json_response({"status": "not ready", "reason": ex.store.last_error}, 503)

    async def index(request: Request) -> Response:
        paths = {getattr(route, "path", None) for route in routes}
        if request.query_params.get("format") != "json" and wants_html(request.headers.get("accept", "")):
            links = [("/metrics", "/metrics", "Prometheus metrics"),
                     ("/usage", "/usage", "usage per tenant and day"),
                     ("/healthz", "/healthz", "liveness"), ("/readyz", "/readyz", "readiness (state store)"),
                     ("/version", "/version", "version"), ("/?format=json", "API index", "(JSON)")]
            page = landing_page([link for link in links if link[0].split("?")[0] in paths])
            return HTMLResponse(page, headers={"Vary": "Accept"})
        index = {"name": "llm-usage-exporter", "version": __version__, "metrics": "/metrics",
                 "ingest": "POST /v1/events", "otlp": "POST /v1/otlp/v1/traces",
                 "customers": "/v1/tenants/{tenant}/customers", "errors": "/v1/tenants/{tenant}/errors",
                 "health": ["/healthz", "/readyz"], "version_info": "/version", "reload": "POST /-/reload"}
        if "/usage" in paths:
            index.update(usage="/usage", tenants="/v1/tenants", daily="/v1/tenants/{tenant}/usage/daily?customer=&days=")
        return json_response(index, headers={"Vary": "Accept"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ex.aggregator.load()
        if reloader is not None:  # the CLI's server: the event loop runs in the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.reload)
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
            if reloader is not None:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            with contextlib.suppress(StoreUnavailable):
                ex.aggregator.checkpoint()  # a faster next start; the log alone would be enough
                if ex.aggregator.customers:  # Prometheus holds samples up to now: `import` starts after them
                    ex.store.set_meta("served_until", time.time())
            ex.store.close()

    routes = [
        Route("/", index),
        ex.front_door.route("/v1/events", EVENTS),
        ex.front_door.route(otlp.PATH, OTLP_TRACES),
        *read_api.routes(),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/version", version),
        Route("/-/reload", post_reload, methods=["POST", "PUT"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.exporter = ex
    app.add_middleware(MetricsMiddleware, telemetry=ex.telemetry)
    return app
