"""The exporter's own metrics, as plain prometheus-client objects on the app's registry.

They describe this process (requests served, events rejected), so they reset on restart like any
process counter; the usage series, which describe the fleet, are persisted instead.
"""

from __future__ import annotations

import platform
import time

from prometheus_client import (CollectorRegistry, Counter, GCCollector, Gauge, Histogram, PlatformCollector,
                               ProcessCollector, disable_created_metrics)

from .. import __version__
from . import metrics as m
from .pricing import PriceBook


class Telemetry:
    def __init__(self, registry: CollectorRegistry) -> None:
        # `_created` series double the self-metrics' series count and confuse users who sum them
        # (LiteLLM's FAQ warns about exactly this); counters reset on restart are handled by rate().
        disable_created_metrics()
        def counter(spec: m.MetricSpec) -> Counter:
            return Counter(spec.name, spec.help, spec.labels, registry=registry)

        def gauge(spec: m.MetricSpec) -> Gauge:
            return Gauge(spec.name, spec.help, spec.labels, registry=registry)

        self.budget = gauge(m.BUDGET)
        self.events = counter(m.EVENTS)
        self.rejections = counter(m.REJECTIONS)
        self.overflow = counter(m.OVERFLOW)
        self.unpriced = counter(m.UNPRICED)
        self.price_table_info = gauge(m.PRICE_TABLE_INFO)
        self.priced_models = gauge(m.PRICED_MODELS)
        self.http_requests = counter(m.HTTP_REQUESTS)
        self.http_duration = Histogram(m.HTTP_DURATION.name, m.HTTP_DURATION.help, m.HTTP_DURATION.labels,
                                       buckets=m.HTTP_DURATION.buckets, registry=registry)
        self.in_flight = gauge(m.IN_FLIGHT)
        self.build_info = gauge(m.BUILD_INFO)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.dedupe_entries = gauge(m.DEDUPE_ENTRIES)
        self.dedupe_evictions = counter(m.DEDUPE_EVICTIONS)
        self.store_up = gauge(m.STORE_UP)
        self.reload_ok = gauge(m.RELOAD_OK)
        self.reload_time = gauge(m.RELOAD_TIME)
        self.config_loaded()  # the start-up load is the first successful one, as in Prometheus
        # The standard process_* and python_* series every prometheus-client exporter has
        # (memory, CPU, fds, start time; GC), which dashboards and alerts written for any exporter read.
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        for label in ("tenant", "customer", "model", "provider", "series"):
            self.overflow.labels(label)

    def describe_prices(self, book: PriceBook) -> None:
        """Where prices come from: the source and its version, the override file if any (a reload
        replaces the previous description)."""
        self.price_table_info.clear()
        self.price_table_info.labels("genai-prices", book.version).set(1)
        if book.override_file:
            self.price_table_info.labels(book.override_file, "").set(1)
        self.priced_models.set(book.priced_models)

    def config_loaded(self, ok: bool = True) -> None:
        """Record a configuration (re)load: its outcome, and the time of the last one that worked."""
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set(time.time())
