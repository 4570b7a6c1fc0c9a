"""Renders the aggregated usage state on every scrape, two ways.

:class:`UsageCollector` is the prometheus-client pattern for state we own (a custom collector
yielding metric families); it serves ``registry.get_sample_value`` and backfill, and is the
reference the fast writer is tested against. :class:`FastUsageWriter` serves ``/metrics``.
Neither keeps one ``Counter.labels(...)`` child per series: the state is already aggregated per
batch and survives restarts.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any, Iterator

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
                    family.add_metric(list(labels), value / divisor if divisor != 1 else value)
            yield family


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str:
    """The sample value as prometheus-client writes it (``5.0``, ``0.0123``, ``+Inf``)."""
    if type(value) is int and -(2**53) < value < 2**53:
        return f"{value}.0"
    return floatToGoString(value)


class FastUsageWriter:
    """Text/OpenMetrics writer for the usage series that caches each series' escaped name-and-labels
    prefix, so a scrape formats only the numbers.

    Why: prometheus-client builds a Metric and Sample objects and escapes every label of every
    series on every scrape; at 100k series that is most of a second on these machines. The output
    is the same exposition (a property test compares the parsed samples with prometheus-client's).
    """

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator
        self._prefixes: dict[str, dict[tuple[str, ...], Any]] = {spec.name: {} for spec in m.USAGE_METRICS}
        self._le = {spec.name: [floatToGoString(b) for b in spec.buckets] + ["+Inf"]
                    for spec in m.USAGE_METRICS if spec.kind == "histogram"}

    @staticmethod
    def _header(spec: m.MetricSpec, openmetrics: bool) -> str:
        name = spec.name if openmetrics else spec.exposed_name
        help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n")
        if openmetrics:
            help_text = help_text.replace('"', '\\"')
        return f"# HELP {name} {help_text}\n# TYPE {name} {spec.kind}\n"

    def _prefix(self, spec: m.MetricSpec, labels: tuple[str, ...]) -> Any:
        pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(spec.labels, labels))
        if spec.kind != "histogram":
            return f"{spec.exposed_name}{{{pairs}}} "
        sep = "," if pairs else ""
        buckets = [f'{spec.name}_bucket{{{pairs}{sep}le="{le}"}} ' for le in self._le[spec.name]]
        return buckets, f"{spec.name}_count{{{pairs}}} ", f"{spec.name}_sum{{{pairs}}} "

    def render(self, openmetrics: bool = False) -> str:
        out: list[str] = []
        append = out.append
        for spec in m.USAGE_METRICS:
            append(self._header(spec, openmetrics))
            cache = self._prefixes[spec.name]
            values = list(self.aggregator.series[spec.name].items())
            if len(cache) > 2 * len(values) + 1000:
                cache.clear()  # series are never removed today; keep the cache bounded all the same
            if spec.kind == "histogram":
                for labels, hist in values:
                    prefix = cache.get(labels)
                    if prefix is None:
                        prefix = cache[labels] = self._prefix(spec, labels)
                    total = 0
                    for bucket_prefix, count in zip(prefix[0], hist[1:]):
                        total += count
                        append(f"{bucket_prefix}{total}.0\n")
                    append(f"{prefix[1]}{total}.0\n{prefix[2]}{_number(hist[0])}\n")
            else:
                divisor = spec.divisor
                for labels, value in values:
                    prefix = cache.get(labels)
                    if prefix is None:
                        prefix = cache[labels] = self._prefix(spec, labels)
                    append(f"{prefix}{_number(value / divisor if divisor != 1 else value)}\n")
        return "".join(out)
