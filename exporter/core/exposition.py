"""Renders the aggregated usage state on every scrape, two ways.

:class:`UsageCollector` is the prometheus-client pattern for state we own (a custom collector
yielding metric families); it serves ``registry.get_sample_value`` and backfill, and is the
reference the fast writer is tested against. :class:`FastUsageWriter` serves ``/metrics``.
Neither keeps one ``Counter.labels(...)`` child per series: the state is already aggregated per
batch and survives restarts.
"""

from __future__ import annotations

import struct
import threading
import zlib
from itertools import accumulate, repeat
from operator import truediv
from typing import Any, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import metrics as m
from .aggregate import Aggregator

try:  # ISA-L's DEFLATE: 3x the speed of zlib's level 1 on exposition text, and ~5% smaller
    from isal import isal_zlib as _deflate
except ImportError:  # a machine isal has no wheel for (pyproject installs it on x86_64 and aarch64)
    _deflate = zlib  # type: ignore[no-redef]


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
                    family.add_metric(list(labels), list(zip(bounds, accumulate(hist[1:]))), spec.exposed(hist[0]))
            else:
                cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
                family = cls(spec.name, spec.help, labels=spec.labels)
                for labels, value in values:
                    family.add_metric(list(labels), spec.exposed(value))
            yield family


_EXACT = 2**53  # ints below this print exactly as the float prometheus-client would print
_INF = float("inf")
_BLOCK = 1024  # series per cached block: small enough that a change re-renders little, large enough to compress well
GZIP_LEVEL = 1  # ~12x smaller exposition text at a fraction of level 6's CPU; a scrape is latency-bound
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"  # no name, mtime 0, "fastest", unknown OS
_DEFLATE_END = b"\x03\x00"  # an empty final fixed-Huffman block: closes a stream of sync-flushed pieces
OM_EOF = b"# EOF\n"

Snapshot = list[tuple[m.MetricSpec, list[tuple[str, ...]], list[Any]]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str:
    """The sample value as prometheus-client writes it (``5.0``, ``0.0123``, ``+Inf``)."""
    if type(value) is int and -_EXACT < value < _EXACT:
        return f"{value}.0"
    return floatToGoString(value)


class _Piece:
    """Rendered exposition bytes and, once gzip is asked for, their raw DEFLATE compression ending in a
    sync flush: byte-aligned and not final, so pieces compressed apart concatenate into one valid stream
    and an unchanged piece is never compressed twice."""

    __slots__ = ("data", "_deflated")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._deflated: bytes | None = None

    @property
    def deflated(self) -> bytes:
        if self._deflated is None:
            compressor = _deflate.compressobj(GZIP_LEVEL, _deflate.DEFLATED, -zlib.MAX_WBITS)
            self._deflated = compressor.compress(self.data) + compressor.flush(_deflate.Z_SYNC_FLUSH)
        return self._deflated


class _Block(_Piece):
    """Up to :data:`_BLOCK` consecutive series of one metric, with the keys and values they were
    rendered from (histograms as tuples: the live lists may be updated in place) and the prefixes
    aligned with the keys, so a block whose values changed re-renders without a single dict lookup."""

    __slots__ = ("keys", "values", "prefixes")

    def __init__(self, keys: list[tuple[str, ...]], values: list[Any], prefixes: list[Any], data: bytes) -> None:
        super().__init__(data)
        self.keys, self.values, self.prefixes = keys, values, prefixes


def gzip_pieces(pieces: Iterable[_Piece]) -> bytes:
    """One gzip member (RFC 1952) around the pieces' concatenated DEFLATE streams."""
    out = [_GZIP_HEADER]
    crc = size = 0
    for piece in pieces:
        out.append(piece.deflated)
        crc = zlib.crc32(piece.data, crc)
        size += len(piece.data)
    out.append(_DEFLATE_END)
    out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(out)


class FastUsageWriter:
    """Text/OpenMetrics writer for the usage series that renders a scrape from cached blocks: a block
    of series whose keys and values are unchanged since the last scrape is reused as it is, rendered
    and gzip-compressed; a changed block re-renders only its numbers (the escaped name-and-labels
    prefixes are kept in the block, aligned with its keys) and compresses only itself.

    Why: prometheus-client builds a Metric and Sample objects and escapes every label of every
    series on every scrape; at 100k series that is most of a second on these machines, and gzip of
    the ~10 MB text is another 30 ms. The output is the same exposition (a property test compares
    the parsed samples with prometheus-client's, across scrapes that change, add and remove series).

    Memory: the rendered text (~120 bytes a sample), its compression and the prefixes, held only
    for the series of the last scrape, so bounded by the series caps like the series themselves.
    """

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator
        self._blocks: dict[str, list[_Block]] = {spec.name: [] for spec in m.USAGE_METRICS}
        self._le = {spec.name: [floatToGoString(b) for b in spec.buckets] + ["+Inf"]
                    for spec in m.USAGE_METRICS if spec.kind == "histogram"}
        # The name-and-labels line start with %s for each escaped value (histograms: the labels only).
        pairs = {spec.name: ",".join(f'{k}="%s"' for k in spec.labels) for spec in m.USAGE_METRICS}
        self._templates = {spec.name: pairs[spec.name] if spec.kind == "histogram"
                           else f"{spec.exposed_name}{{{pairs[spec.name]}}} " for spec in m.USAGE_METRICS}
        self._headers = {om: {spec.name: _Piece(self._header(spec, om).encode()) for spec in m.USAGE_METRICS}
                         for om in (False, True)}
        self._eof = _Piece(OM_EOF)
        self._lock = threading.Lock()  # one render at a time updates the caches

    def snapshot(self) -> Snapshot:
        """Every usage series' key and value, copied at one instant. Cheap (references, plus the few
        histograms copied to tuples); take it on the thread that ingests, render it anywhere."""
        out = []
        for spec in m.USAGE_METRICS:
            series = self.aggregator.series[spec.name]
            values = list(map(tuple, series.values())) if spec.kind == "histogram" else list(series.values())
            out.append((spec, list(series), values))
        return out

    def render(self, openmetrics: bool = False) -> str:
        """The usage series' exposition now (without the ``# EOF`` line)."""
        return b"".join(p.data for p in self.pieces(self.snapshot(), openmetrics)).decode()

    def body(self, snapshot: Snapshot, head: bytes, openmetrics: bool, gzipped: bool) -> bytes:
        """The whole /metrics body: ``head`` (the self-metrics, without ``# EOF``), the usage series
        of ``snapshot``, ``# EOF`` for OpenMetrics; gzip-compressed if ``gzipped``."""
        pieces = [_Piece(head), *self.pieces(snapshot, openmetrics)]
        if openmetrics:
            pieces.append(self._eof)
        if gzipped:
            return gzip_pieces(pieces)
        return b"".join(p.data for p in pieces)

    def pieces(self, snapshot: Snapshot, openmetrics: bool) -> list[_Piece]:
        """The usage series of ``snapshot`` as header and block pieces, re-rendering changed blocks."""
        headers = self._headers[openmetrics]
        out: list[_Piece] = []
        with self._lock:
            for spec, keys, values in snapshot:
                out.append(headers[spec.name])
                out.extend(self._render_metric(spec, keys, values))
        return out

    def _render_metric(self, spec: m.MetricSpec, keys: list[tuple[str, ...]], values: list[Any]) -> list[_Block]:
        old = self._blocks[spec.name]
        blocks = []
        for number, start in enumerate(range(0, len(keys), _BLOCK)):
            block_keys, block_values = keys[start:start + _BLOCK], values[start:start + _BLOCK]
            cached = old[number] if number < len(old) else None
            known = len(cached.keys) if cached is not None and block_keys[:len(cached.keys)] == cached.keys else 0
            if known == len(block_keys) and cached.values == block_values:
                blocks.append(cached)
                continue
            # Series are appended to the end of their dict, so a block's known keys keep their
            # prefixes; a removal shifts the blocks after it, which then render their prefixes anew.
            prefixes = (cached.prefixes if known else []) + [self._prefix(spec, k) for k in block_keys[known:]]
            text = self._lines(spec, prefixes, block_values)
            blocks.append(_Block(block_keys, block_values, prefixes, text.encode()))
        self._blocks[spec.name] = blocks
        return blocks

    def _lines(self, spec: m.MetricSpec, prefixes: list[Any], values: list[Any]) -> str:
        if spec.kind == "histogram":
            out: list[str] = []
            append = out.append
            for (bucket_prefixes, count_prefix, sum_prefix), hist in zip(prefixes, values):
                total = 0
                for bucket_prefix, count in zip(bucket_prefixes, hist[1:]):
                    total += count
                    append(f"{bucket_prefix}{total}.0\n")
                append(f"{count_prefix}{total}.0\n{sum_prefix}{_number(spec.exposed(hist[0]))}\n")
            return "".join(out)
        divisor = spec.divisor
        if divisor == 1:
            return "".join([f"{p}{v}.0\n" if type(v) is int and -_EXACT < v < _EXACT else f"{p}{_number(v)}\n"
                            for p, v in zip(prefixes, values)])
        # A float below 1e6 (and not -Inf or NaN) prints as its repr in Go's style too.
        return "".join([f"{p}{x!r}\n" if -_INF < x < 1e6 else f"{p}{floatToGoString(x)}\n"
                        for p, x in zip(prefixes, map(truediv, values, repeat(divisor)))])

    @staticmethod
    def _header(spec: m.MetricSpec, openmetrics: bool) -> str:
        name = spec.name if openmetrics else spec.exposed_name
        help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n")
        if openmetrics:
            help_text = help_text.replace('"', '\\"')
        return f"# HELP {name} {help_text}\n# TYPE {name} {spec.kind}\n"

    def _prefix(self, spec: m.MetricSpec, labels: tuple[str, ...]) -> Any:
        joined = "".join(labels)  # escape only the rare label set that needs it (3x faster prefixes)
        if "\\" in joined or "\n" in joined or '"' in joined:
            labels = tuple(map(_escape, labels))
        if spec.kind != "histogram":
            return self._templates[spec.name] % labels
        pairs = self._templates[spec.name] % labels
        sep = "," if pairs else ""
        buckets = [f'{spec.name}_bucket{{{pairs}{sep}le="{le}"}} ' for le in self._le[spec.name]]
        return buckets, f"{spec.name}_count{{{pairs}}} ", f"{spec.name}_sum{{{pairs}}} "
