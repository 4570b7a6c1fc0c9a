"""TSDB blocks from the aggregator's state, as a scrape every ``step`` seconds would have seen it.

Backfill (simulated days) and import (real past events) both feed events to :meth:`Aggregator.ingest`
in time order and call :meth:`BlockWriter.scrape` at each step: the samples have the live exporter's
names and labels (plus the ``job``/``instance`` target labels Prometheus adds when it scrapes), so
history and live data are one series. ``promtool tsdb create-blocks-from openmetrics`` turns them
into blocks.

OpenMetrics requires all samples of a family, and of a series, to be contiguous, so samples are
buffered per family and per series; a chunk (a UTC day, or fewer scrapes when there are many
series, to bound memory) is written as one file, converted, and deleted.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from prometheus_client.utils import floatToGoString

from ..core import metrics as m
from ..core.aggregate import Aggregator
from ..core.exposition import _escape, _number

DAY = 86400
MAX_CHUNK_SAMPLES = 2_000_000  # ~400 MB of buffered sample lines at most


def require_promtool(promtool: str | None = None) -> str:
    found = promtool or shutil.which("promtool")
    if found is None:
        raise RuntimeError("promtool not found: install the `prometheus` package (it ships promtool)")
    return found


class OpenMetricsHistory:
    """Timestamped samples of many scrapes of the state, grouped so each family and series is contiguous.

    Why not prometheus-client's collector: building Metric objects and escaping labels on every
    scrape costs tens of microseconds per sample, and a month of 5-minute scrapes is tens of millions
    of samples. Each series' escaped name-and-labels prefix is built once; a scrape formats numbers."""

    def __init__(self, target_labels: dict[str, str] | None = None) -> None:
        self.target = "".join(f',{k}="{_escape(v)}"' for k, v in sorted((target_labels or {}).items()))
        self.families: dict[str, dict[tuple[str, ...], tuple[Any, list[str]]]] = {
            spec.name: {} for spec in m.USAGE_METRICS}
        self.samples = 0
        self._le = {spec.name: [floatToGoString(b) for b in spec.buckets] + ["+Inf"]
                    for spec in m.USAGE_METRICS if spec.kind == "histogram"}

    def _prefix(self, spec: m.MetricSpec, labels: tuple[str, ...]) -> Any:
        pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(spec.labels, labels)) + self.target
        pairs = pairs.lstrip(",")
        if spec.kind != "histogram":
            return f"{spec.exposed_name}{{{pairs}}} "
        sep = "," if pairs else ""
        return ([f'{spec.name}_bucket{{{pairs}{sep}le="{le}"}} ' for le in self._le[spec.name]],
                f"{spec.name}_count{{{pairs}}} ", f"{spec.name}_sum{{{pairs}}} ")

    def add(self, aggregator: Aggregator, timestamp: float) -> None:
        """One scrape of ``aggregator``'s usage series at ``timestamp``."""
        end = f" {timestamp:.3f}\n"
        added = 0
        for spec in m.USAGE_METRICS:
            family = self.families[spec.name]
            histogram = spec.kind == "histogram"
            for labels, value in aggregator.series[spec.name].items():
                entry = family.get(labels)
                if entry is None:
                    entry = family[labels] = (self._prefix(spec, labels), [])
                prefix, lines = entry
                if histogram:
                    total = 0
                    for bucket_prefix, count in zip(prefix[0], value[1:]):
                        total += count
                        lines.append(f"{bucket_prefix}{total}{end}")
                    lines.append(f"{prefix[1]}{total}{end}")
                    lines.append(f"{prefix[2]}{_number(spec.exposed(value[0]))}{end}")
                    added += len(prefix[0]) + 2
                else:
                    lines.append(f"{prefix}{_number(spec.exposed(value))}{end}")
                    added += 1
        self.samples += added

    def write(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as out:
            for spec in m.USAGE_METRICS:
                series = self.families[spec.name]
                if not series:
                    continue
                help_text = spec.help.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
                out.write(f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {spec.kind}\n")
                for _, lines in series.values():
                    out.writelines(lines)
            out.write("# EOF\n")


class BlockWriter:
    """Scrapes ``aggregator`` at the times it is given and writes the samples as TSDB blocks into ``out``.

    A chunk is one UTC day (or fewer scrapes, past ``max_chunk_samples``), converted into day-aligned
    blocks of at most 24 h (fewer, larger blocks: half promtool's time of its 2 h default, and what
    Prometheus' compaction would make of them anyway). promtool converts one chunk while the next is
    being built, so the two stages overlap."""

    def __init__(self, aggregator: Aggregator, out: Path, target_labels: dict[str, str] | None = None,
                 promtool: str | None = None, keep_openmetrics: bool = False, name: str = "history",
                 max_chunk_samples: int = MAX_CHUNK_SAMPLES) -> None:
        self.promtool = require_promtool(promtool)
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.aggregator = aggregator
        self.target_labels = dict(target_labels or {})
        self.keep_openmetrics = keep_openmetrics
        self.name = name
        self.max_chunk_samples = max_chunk_samples
        self.samples = 0
        self.scrapes = 0
        self._blocks_before = set(self._block_dirs())
        self._history = OpenMetricsHistory(self.target_labels)
        self._chunk_start: float | None = None
        self._last = float("-inf")
        self._pending: tuple[subprocess.Popen[bytes], Path] | None = None

    def _block_dirs(self) -> list[str]:
        return [p.name for p in self.out.iterdir() if p.is_dir() and (p / "meta.json").exists()]

    @property
    def blocks(self) -> int:
        """Blocks this writer created."""
        return len(set(self._block_dirs()) - self._blocks_before)

    def scrape(self, timestamp: float) -> None:
        """One scrape of the current state at ``timestamp``; a time not after the previous scrape's is
        skipped (a series' samples must increase in time)."""
        if timestamp <= self._last:
            return
        self._last = timestamp
        if self._chunk_start is not None and (timestamp // DAY != self._chunk_start // DAY
                                              or self._history.samples >= self.max_chunk_samples):
            self._convert()
        if self._chunk_start is None:
            self._chunk_start = timestamp
        self._history.add(self.aggregator, timestamp)
        self.scrapes += 1

    def _convert(self) -> None:
        """Start promtool on the buffered chunk (after the previous conversion finished)."""
        if self._chunk_start is None or not self._history.samples:
            return
        self.samples += self._history.samples
        path = self.out / f"{self.name}-{int(self._chunk_start)}.om"
        self._history.write(path)
        self._history = OpenMetricsHistory(self.target_labels)
        self._chunk_start = None
        self._wait()
        process = subprocess.Popen([self.promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                                    "--max-block-duration=24h", str(path), str(self.out)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._pending = (process, path)

    def _wait(self) -> None:
        if self._pending is None:
            return
        process, path = self._pending
        self._pending = None
        output, _ = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"promtool failed on {path}: {output.decode(errors='replace').strip()[-2000:]}")
        if not self.keep_openmetrics:
            path.unlink()

    def flush(self) -> None:
        """Convert everything scraped so far and wait for promtool: the blocks are complete on return."""
        self._convert()
        self._wait()
