"""The baseline the benchmarks compare against: what most exporters do per event.

``json`` parsing, pydantic-free dict checks, and prometheus-client metric children updated with
``.labels(...).inc()`` / ``.observe()`` for every event. Same metrics, labels and buckets as ours,
so the comparison measures the approach, not a smaller workload.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from exporter.core import metrics as m
from exporter.core.pricing import UNITS_PER_USD, PriceBook

_REQUIRED = ("id", "timestamp", "tenant", "customer", "model", "duration_ms", "status")


class BaselineExporter:
    def __init__(self, prices: PriceBook, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self.prices = prices
        self.seen: set[tuple[str, str]] = set()

        def counter(spec: m.MetricSpec) -> Counter:
            return Counter(spec.name, spec.help, spec.labels, registry=self.registry)

        def histogram(spec: m.MetricSpec) -> Histogram:
            return Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=self.registry)

        self.requests = counter(m.REQUESTS)
        self.errors = counter(m.ERRORS)
        self.tokens = counter(m.TOKENS)
        self.details = counter(m.TOKEN_DETAILS)
        self.cost = counter(m.COST)
        self.saved = counter(m.CACHE_SAVINGS)
        self.premium = counter(m.CACHE_WRITE_PREMIUM)
        self.duration = histogram(m.DURATION)
        self.ttft = histogram(m.TTFT)
        self.request_tokens = histogram(m.REQUEST_TOKENS)
        self.last = Gauge(m.LAST_EVENT.name, m.LAST_EVENT.help, m.LAST_EVENT.labels, registry=self.registry)

    def ingest_body(self, body: bytes) -> dict[str, Any]:
        events = json.loads(body)["events"]
        accepted = rejected = duplicates = 0
        for event in events:
            if not isinstance(event, dict) or any(event.get(k) is None for k in _REQUIRED) or not all(
                    isinstance(event.get(k, 0), int) and event.get(k, 0) >= 0
                    for k in ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")):
                rejected += 1
                continue
            key = (event["tenant"], event["id"])
            if key in self.seen:
                duplicates += 1
                continue
            self.seen.add(key)
            accepted += 1
            self.observe(event)
        return {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}

    def observe(self, e: dict[str, Any]) -> None:
        schedule = self.prices.resolve(e["model"], e.get("provider"))
        provider = e.get("provider") or (schedule.provider if schedule else None) or "unknown"
        tenant, customer, operation = e["tenant"], e["customer"], e.get("operation", "chat")
        model = schedule.model if schedule else e["model"]
        self.requests.labels(tenant, customer, model, provider, operation, e["status"]).inc()
        if e["status"] == "error":
            self.errors.labels(tenant, model, provider, operation, e.get("error_type", "_OTHER")).inc()
        self.tokens.labels(tenant, customer, model, provider, "input").inc(e["input_tokens"])
        self.tokens.labels(tenant, customer, model, provider, "output").inc(e["output_tokens"])
        for kind in ("cache_read", "cache_write", "reasoning"):
            if e.get(f"{kind}_tokens"):
                self.details.labels(tenant, model, provider, kind).inc(e[f"{kind}_tokens"])
        if schedule is not None:  # the same price source and rates as ours, per event
            tiered, _ = schedule.at(e["timestamp"], e.get("service_tier", "default"))
            counts = (e["input_tokens"], e.get("cache_read_tokens", 0), e.get("cache_write_tokens", 0), 0, 0,
                      e["output_tokens"], e.get("reasoning_tokens", 0), 0)
            rates = tiered.pick(e["input_tokens"])
            self.cost.labels(tenant, customer, model, provider).inc(rates.cost(counts) / UNITS_PER_USD)
            if counts[1] or counts[2]:
                saved, extra = rates.cache_savings(counts)
                self.saved.labels(tenant, model, provider).inc(saved / UNITS_PER_USD)
                self.premium.labels(tenant, model, provider).inc(extra / UNITS_PER_USD)
        self.duration.labels(tenant, model, provider, operation).observe(e["duration_ms"] / 1000)
        if e.get("ttft_ms") is not None:
            self.ttft.labels(tenant, model, provider).observe(e["ttft_ms"] / 1000)
        self.request_tokens.labels(tenant, model, provider, "input").observe(e["input_tokens"])
        self.request_tokens.labels(tenant, model, provider, "output").observe(e["output_tokens"])
        self.last.labels(tenant).set(e["timestamp"])


def create_baseline_app(prices: PriceBook) -> Any:
    """The baseline behind the same HTTP framework, for the over-HTTP comparison."""
    from prometheus_client import generate_latest
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    exporter = BaselineExporter(prices)

    async def post_events(request: Request) -> Response:
        return JSONResponse(exporter.ingest_body(await request.body()))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(exporter.registry), media_type="text/plain; version=0.0.4")

    async def ready(request: Request) -> Response:
        return JSONResponse({"status": "ready"})

    return Starlette(routes=[Route("/v1/events", post_events, methods=["POST"]), Route("/metrics", metrics),
                             Route("/readyz", ready)])


def create_ceiling_app() -> Any:
    """Reads each body and answers, nothing else: what the HTTP stack alone allows on this machine."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def post_events(request: Request) -> Response:
        await request.body()
        return JSONResponse({"accepted": 0})

    async def ready(request: Request) -> Response:
        return JSONResponse({"status": "ready"})

    return Starlette(routes=[Route("/v1/events", post_events, methods=["POST"]), Route("/readyz", ready)])
