"""Renders the aggregated usage state as Prometheus metric families on every scrape.

A custom collector (the prometheus-client pattern for state we own) rather than one
``Counter.labels(...)`` child per series: the state is already aggregated per batch, survives
restarts, and is rendered by prometheus-client's own text/OpenMetrics writers, so escaping and
content negotiation are the library's, not ours.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import metrics as m
from .aggregate import Aggregator


class UsageCollector(Collector):
    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator
        self._le = {spec.name: [floatToGoString(b) for b in spec.buckets] + ["+Inf"]
                    for spec in m.USAGE_METRICS if spec.kind == "histogram"}

    def describe(self) -> list[Metric]:
        return []  # the families are dynamic; an empty describe keeps registration cheap

    def collect(self) -> Iterator[Metric]:
        for spec in m.USAGE_METRICS:
            # Copy under the GIL: ingest may replace values while a scrape runs in another thread.
            values = list(self.aggregator.series[spec.name].items())
            if spec.kind == "histogram":
                family = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
                bounds = self._le[spec.name]
                for labels, hist in values:
                    family.add_metric(list(labels), list(zip(bounds, accumulate(hist[1:]))), hist[0])
            else:
                cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
                family = cls(spec.name, spec.help, labels=spec.labels)
                divisor = spec.divisor
                for labels, value in values:
                    family.add_metric(list(labels), value / divisor if divisor != 1.0 else value)
            yield family
