"""The one ingest path: raw events → validated, deduplicated, priced, pre-aggregated series.

The HTTP API, the simulator and backfill all call :meth:`Aggregator.ingest`. A batch is first
reduced to per-series deltas in local dicts (so a 1000-event batch touches each shared series
once), then the new absolute values are committed to the state store in one transaction, and
only then applied in memory and acknowledged. A failed commit leaves memory untouched: nothing
is half-counted.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Iterable, Sequence

from . import metrics as m
from .config import Config
from .events import Event, FieldError, Limits, validate_event
from .pricing import PriceTable
from .store import Changes, StateStore
from .telemetry import Telemetry

OTHER = "__other__"
UNKNOWN_PROVIDER = "unknown"
# OpenTelemetry gen_ai.provider.name well-known values: always accepted as label values.
KNOWN_PROVIDERS = frozenset({
    "openai", "anthropic", "aws.bedrock", "azure.ai.inference", "azure.ai.openai", "cohere", "deepseek",
    "gcp.gemini", "gcp.gen_ai", "gcp.vertex_ai", "groq", "ibm.watsonx.ai", "mistral_ai", "perplexity", "x_ai",
    UNKNOWN_PROVIDER,
})

# Customer rows in the read API: events, input_tokens, output_tokens, cost_micros, errors, latest_timestamp.
_EVENTS, _INPUT, _OUTPUT, _COST, _ERRORS, _LATEST = range(6)


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                "errors": self.errors}


class LabelCaps:
    """Folds label values past their cap into ``__other__``: memory and series stay bounded whatever
    clients send. First come, first kept; the kept sets are rebuilt from the store on restart."""

    def __init__(self, config: Config, prices: PriceTable) -> None:
        self.fixed_tenants = frozenset(config.tenants) if config.auth_required and config.tenants else None
        self.max_tenants = config.limits_max_tenants
        self.max_customers = config.limits_max_customers_per_tenant
        self.max_unknown = config.limits_max_unknown_models
        self.prices = prices
        self.tenants: set[str] = set()
        self.customers: dict[str, set[str]] = {}
        self.unknown_models: set[str] = set()
        self.unknown_providers: set[str] = set()

    def remember(self, tenant: str, customer: str) -> None:
        self.tenants.add(tenant)
        self.customers.setdefault(tenant, set()).add(customer)

    def tenant(self, value: str, overflow: list[str]) -> str:
        if value in self.tenants or (self.fixed_tenants is not None and value in self.fixed_tenants):
            self.tenants.add(value)
            return value
        if self.fixed_tenants is None and len(self.tenants) < self.max_tenants:
            self.tenants.add(value)
            return value
        overflow.append("tenant")
        return OTHER

    def customer(self, tenant: str, value: str, overflow: list[str]) -> str:
        seen = self.customers.get(tenant)
        if seen is None:
            seen = self.customers[tenant] = set()
        if value in seen:
            return value
        if len(seen) < self.max_customers:
            seen.add(value)
            return value
        overflow.append("customer")
        return OTHER

    def _unknown(self, seen: set[str], value: str, label: str, overflow: list[str]) -> str:
        if value in seen:
            return value
        if len(seen) < self.max_unknown:
            seen.add(value)
            return value
        overflow.append(label)
        return OTHER

    def model(self, value: str, overflow: list[str]) -> str:
        return value if value in self.prices else self._unknown(self.unknown_models, value, "model", overflow)

    def provider(self, value: str, overflow: list[str]) -> str:
        if value in KNOWN_PROVIDERS or value in self.prices.providers:
            return value
        return self._unknown(self.unknown_providers, value, "provider", overflow)


class DedupeWindow:
    """Remembers accepted (tenant, id) keys, oldest first, bounded in count and age.

    Past the window an id is forgotten: a retry older than ``max_age`` is refused anyway as too
    old (max_age >= ingest.max-age is enforced by the config), but one evicted for *size* would be
    counted again, which ``llm_exporter_dedupe_evictions_total{reason="size"}`` makes visible.
    """

    def __init__(self, max_entries: int, max_age: float) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.seen: dict[str, float] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.seen

    def __len__(self) -> int:
        return len(self.seen)

    def plan_evictions(self, now: float, new_keys: dict[str, float]) -> tuple[list[str], list[tuple[str, float]], int]:
        """Which remembered keys to forget and which new keys to keep so the window stays within its
        bounds; also how many were dropped for size (rather than age)."""
        cutoff = now - self.max_age
        expired = []
        for key, seen_at in self.seen.items():
            if seen_at >= cutoff:
                break
            expired.append(key)
        over = max(len(self.seen) - len(expired) + len(new_keys) - self.max_entries, 0)
        by_size = list(islice(islice(self.seen, len(expired), None), over))
        added = list(new_keys.items())[over - len(by_size):]  # a batch larger than the window keeps its newest
        return expired + by_size, added, over

    def apply(self, added: Iterable[tuple[str, float]], evicted: Iterable[str]) -> None:
        for key in evicted:
            self.seen.pop(key, None)
        self.seen.update(added)


def dedupe_key(tenant: str, event_id: str) -> str:
    return f"{tenant}\x00{event_id}"


def _observe(series: dict, key: tuple, buckets: tuple[float, ...], value: float) -> None:
    """Histogram delta as [sum, count per bucket..., count above the last bound]."""
    hist = series.get(key)
    if hist is None:
        hist = series[key] = [0.0] + [0] * (len(buckets) + 1)
    hist[0] += value
    hist[1 + bisect_left(buckets, value)] += 1


def _rejection_reason(errors: list[FieldError]) -> str:
    for error in errors:
        if error.field == "timestamp" and "older" in error.message:
            return "too_old"
        if error.field == "timestamp" and "future" in error.message:
            return "in_future"
    return "invalid_field"


class Aggregator:
    """Owns the usage state (series, customer totals, dedupe window) and the ingest function."""

    def __init__(self, config: Config, prices: PriceTable, store: StateStore, telemetry: Telemetry) -> None:
        self.config = config
        self.prices = prices
        self.store = store
        self.telemetry = telemetry
        self.limits = Limits(config.ingest_max_age, config.ingest_max_future, config.limits_max_label_length)
        self.caps = LabelCaps(config, prices)
        self.dedupe = DedupeWindow(config.dedupe_max_entries, config.dedupe_max_age)
        self.series: dict[str, dict[tuple[str, ...], Any]] = {spec.name: {} for spec in m.USAGE_METRICS}
        self.customers: dict[tuple[str, str], list[Any]] = {}
        self.recent_errors: dict[str, deque[dict[str, Any]]] = {}

    def load(self) -> None:
        """Restore state from the store, so counters continue and old duplicates stay refused."""
        snapshot = self.store.load()
        for metric, values in snapshot.series.items():
            if metric in self.series:
                self.series[metric].update(values)
        self.customers.update(snapshot.customers)
        for tenant, customer in snapshot.customers:
            self.caps.remember(tenant, customer)
        for _tenant, _customer, model, provider in self.series[m.COST.name]:
            if model not in self.prices and model != OTHER:
                self.caps.unknown_models.add(model)
            if provider not in KNOWN_PROVIDERS and provider not in self.prices.providers and provider != OTHER:
                self.caps.unknown_providers.add(provider)
        self.dedupe.seen.update(snapshot.dedupe)
        self.telemetry.dedupe_entries.set(len(self.dedupe))
        self.telemetry.store_up.set(1)

    def ingest(self, raw_events: Sequence[Any], source: str, now: float | None = None) -> IngestResult:
        """Validate, dedupe, price and count ``raw_events``; raises StoreUnavailable (nothing counted)."""
        now = time.time() if now is None else now
        result = IngestResult()
        limits, caps, prices, dedupe = self.limits, self.caps, self.prices, self.dedupe
        requests: dict = {}
        errors: dict = {}
        tokens: dict = {}
        details: dict = {}
        cost: dict = {}
        agent_cost: dict = {}
        agent_calls: dict = {}
        duration: dict = {}
        ttft: dict = {}
        tpot: dict = {}
        request_tokens: dict = {}
        last_seen: dict = {}
        customers: dict = {}
        new_keys: dict[str, float] = {}
        overflow: list[str] = []
        unpriced: list[str] = []
        rejections: list[str] = []
        new_errors: list[tuple[str, dict[str, Any]]] = []

        for index, raw in enumerate(raw_events):
            event = validate_event(raw, now, limits)
            if not isinstance(event, Event):
                result.rejected += 1
                rejections.append(_rejection_reason(event))
                event_id = raw.get("id") if isinstance(raw, dict) else None
                for error in event:
                    result.errors.append({"index": index, "id": event_id if isinstance(event_id, str) else None,
                                          "field": error.field, "message": error.message})
                continue
            key = dedupe_key(event.tenant, event.id)
            if key in dedupe or key in new_keys:
                result.duplicates += 1
                continue
            new_keys[key] = now
            result.accepted += 1

            tenant = caps.tenant(event.tenant, overflow)
            customer = caps.customer(tenant, event.customer, overflow)
            price = prices.lookup(event.model, event.timestamp)
            model = price.model if price is not None else caps.model(event.model, overflow)
            provider = caps.provider(event.provider or (price.provider if price else None) or UNKNOWN_PROVIDER,
                                     overflow)
            if event.cost_usd is not None:
                micros = round(event.cost_usd * 1_000_000)
            else:
                micros = prices.sku_micros(event.sku)
                if micros is None:
                    if price is None:
                        micros = 0
                        unpriced.append(model)
                    else:
                        micros = price.cost_micros(event)
            status, operation = event.status, event.operation

            k = (tenant, customer, model, provider, operation, status)
            requests[k] = requests.get(k, 0) + 1
            if status == "error":
                k = (tenant, model, provider, operation, event.error_type)
                errors[k] = errors.get(k, 0) + 1
                new_errors.append((tenant, {"timestamp": event.timestamp, "customer": customer, "model": model,
                                            "error_type": event.error_type, "error_message": event.error_message}))
            k = (tenant, customer, model, provider, "input")
            tokens[k] = tokens.get(k, 0) + event.input_tokens
            k = (tenant, customer, model, provider, "output")
            tokens[k] = tokens.get(k, 0) + event.output_tokens
            for token_type, count in (("cache_read", event.cache_read_tokens), ("cache_write", event.cache_write_tokens),
                                      ("reasoning", event.reasoning_tokens)):
                if count:
                    k = (tenant, model, provider, token_type)
                    details[k] = details.get(k, 0) + count
            k = (tenant, customer, model, provider)
            cost[k] = cost.get(k, 0) + micros
            if operation == "agent_run":
                k = (tenant, model, status)
                agent_cost[k] = agent_cost.get(k, 0) + micros
            if event.llm_calls:
                k = (tenant, model, "llm")
                agent_calls[k] = agent_calls.get(k, 0) + event.llm_calls
            if event.tool_calls:
                k = (tenant, model, "tool")
                agent_calls[k] = agent_calls.get(k, 0) + event.tool_calls
            _observe(duration, (tenant, model, provider, operation), m.DURATION_BUCKETS, event.duration_s)
            if operation != "agent_run" and operation != "tool_call":
                k = (tenant, model, provider, "input")
                _observe(request_tokens, k, m.TOKEN_BUCKETS, event.input_tokens)
                k = (tenant, model, provider, "output")
                _observe(request_tokens, k, m.TOKEN_BUCKETS, event.output_tokens)
            if event.ttft_s is not None:
                _observe(ttft, (tenant, model, provider), m.TTFT_BUCKETS, event.ttft_s)
                if event.output_tokens > 1:
                    _observe(tpot, (tenant, model, provider), m.TPOT_BUCKETS,
                             (event.duration_s - event.ttft_s) / (event.output_tokens - 1))
            k = (tenant,)
            if event.timestamp > last_seen.get(k, 0.0):
                last_seen[k] = event.timestamp
            k = (tenant, customer)
            row = customers.get(k)
            if row is None:
                row = customers[k] = [0, 0, 0, 0, 0, 0.0]
            row[_EVENTS] += 1
            row[_INPUT] += event.input_tokens
            row[_OUTPUT] += event.output_tokens
            row[_COST] += micros
            row[_ERRORS] += status == "error"
            if event.timestamp > row[_LATEST]:
                row[_LATEST] = event.timestamp

        deltas = {m.REQUESTS.name: requests, m.ERRORS.name: errors, m.TOKENS.name: tokens,
                  m.TOKEN_DETAILS.name: details, m.COST.name: cost, m.AGENT_RUN_COST.name: agent_cost,
                  m.AGENT_CALLS.name: agent_calls, m.DURATION.name: duration, m.TTFT.name: ttft, m.TPOT.name: tpot,
                  m.REQUEST_TOKENS.name: request_tokens, m.LAST_EVENT.name: last_seen}
        if new_keys:
            self._commit(deltas, customers, new_keys, now)
        self._count(result, source, rejections, overflow, unpriced, new_errors)
        return result

    def _commit(self, deltas: dict[str, dict], customers: dict, new_keys: dict[str, float], now: float) -> None:
        changes = Changes()
        for metric, delta in deltas.items():
            current = self.series[metric]
            kind = m.USAGE_BY_NAME[metric].kind
            for key, value in delta.items():
                old = current.get(key)
                if old is None:
                    new = value
                elif kind == "histogram":
                    new = [a + b for a, b in zip(old, value)]
                elif kind == "gauge":
                    new = max(old, value)
                else:
                    new = old + value
                changes.series.append((metric, key, new))
        for key, delta in customers.items():
            old = self.customers.get(key)
            if old is None:
                new_row = delta
            else:
                new_row = [a + b for a, b in zip(old[:_LATEST], delta[:_LATEST])] + [max(old[_LATEST], delta[_LATEST])]
            changes.customers.append((key, new_row))
        evicted, changes.dedupe_add, by_size = self.dedupe.plan_evictions(now, new_keys)
        changes.dedupe_remove = evicted
        try:
            self.store.commit(changes)
        except Exception:
            self.telemetry.store_up.set(0)
            raise
        self.telemetry.store_up.set(1)
        for metric, key, new in changes.series:
            self.series[metric][key] = new
        for key, row in changes.customers:
            self.customers[key] = row
        self.dedupe.apply(changes.dedupe_add, evicted)
        self.telemetry.dedupe_entries.set(len(self.dedupe))
        if by_size:
            self.telemetry.dedupe_evictions.labels("size").inc(by_size)
        by_age = len(evicted) + len(new_keys) - len(changes.dedupe_add) - by_size
        if by_age:
            self.telemetry.dedupe_evictions.labels("age").inc(by_age)

    def _count(self, result: IngestResult, source: str, rejections: list[str], overflow: list[str],
               unpriced: list[str], new_errors: list[tuple[str, dict[str, Any]]]) -> None:
        t = self.telemetry
        for result_name, count in (("accepted", result.accepted), ("duplicate", result.duplicates),
                                   ("rejected", result.rejected)):
            if count:
                t.events.labels(source, result_name).inc(count)
        for reason in rejections:
            t.rejections.labels(reason).inc()
        for label in overflow:
            t.overflow.labels(label).inc()
        for model in unpriced:
            t.unpriced.labels(model).inc()
        for tenant, error in new_errors:
            ring = self.recent_errors.get(tenant)
            if ring is None:
                ring = self.recent_errors[tenant] = deque(maxlen=self.config.errors_ring_size)
            ring.append(error)

    def customer_rows(self, tenant: str, sort: str, descending: bool, limit: int) -> list[dict[str, Any]]:
        rows = [{"customer": customer, "events": row[_EVENTS], "input_tokens": row[_INPUT],
                 "output_tokens": row[_OUTPUT], "cost_usd": row[_COST] / 1_000_000, "errors": row[_ERRORS],
                 "latest_timestamp": row[_LATEST]}
                for (row_tenant, customer), row in self.customers.items() if row_tenant == tenant]
        rows.sort(key=lambda r: (r[sort], r["customer"]), reverse=descending)
        return rows[:limit]

    def errors_of(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        ring = self.recent_errors.get(tenant, ())
        return list(ring)[::-1][:limit]
