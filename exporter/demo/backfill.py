"""History backfill: simulate N past days through the one ingest path and turn the series into
Prometheus TSDB blocks with ``promtool tsdb create-blocks-from openmetrics``.

Samples are what a scrape every ``step`` seconds would have seen, with the same names and labels
as the live exporter. The ingest state goes to the same state store the live exporter then opens,
so live counters continue from the backfilled totals instead of restarting at zero.

OpenMetrics requires all samples of a family, and of a series, to be contiguous; so each day is
buffered per family and per series, written as one file, converted, and deleted.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from ..core.aggregate import Aggregator
from ..core.exposition import UsageCollector
from .simulator import Ledger, Simulator, load_scenario

DAY = 86400


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class OpenMetricsHistory:
    """Timestamped samples of many scrapes, grouped so each family and series is contiguous."""

    def __init__(self, target_labels: dict[str, str] | None = None) -> None:
        self.target_labels = dict(target_labels or {})
        self.families: dict[str, tuple[str, str, dict[tuple[tuple[str, str], ...], list[str]]]] = {}
        self.samples = 0

    def add(self, families: Iterable[Metric], timestamp: float) -> None:
        ts = f"{timestamp:.3f}"
        for family in families:
            entry = self.families.get(family.name)
            if entry is None:
                entry = self.families[family.name] = (family.type, family.documentation, {})
            series = entry[2]
            for sample in family.samples:
                key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                all_labels = {**sample.labels, **self.target_labels}
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(all_labels.items()))
                series.setdefault(key, []).append(
                    f"{sample.name}{{{labels}}} {floatToGoString(sample.value)} {ts}\n")
                self.samples += 1

    def write(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as out:
            for name, (kind, documentation, series) in self.families.items():
                if not series:
                    continue
                out.write(f"# HELP {name} {documentation}\n# TYPE {name} {kind}\n")
                for lines in series.values():
                    out.writelines(lines)
            out.write("# EOF\n")


@dataclass
class BackfillReport:
    days: float
    events: int
    samples: int
    blocks_dir: str
    seconds: float


def run_backfill(aggregator: Aggregator, scenario: str, days: float, out: Path, rate: float, seed: int,
                 step: float = 300.0, end: float | None = None, promtool: str | None = None,
                 keep_openmetrics: bool = False, ledger: Ledger | None = None, progress: bool = True,
                 target_labels: dict[str, str] | None = None) -> BackfillReport:
    """Simulate ``days`` up to ``end`` (default now) and write TSDB blocks into ``out``.

    ``target_labels`` are the ``job``/``instance`` labels Prometheus attaches when it scrapes the
    live exporter: with the same values the history and the live series are one series."""
    promtool = promtool or shutil.which("promtool")
    if promtool is None:
        raise RuntimeError("promtool not found: install the `prometheus` package (it ships promtool)")
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    end = (time.time() if end is None else end) // step * step
    start = end - days * DAY
    sim = Simulator(load_scenario(scenario), seed, rate, run_id=f"backfill-{seed}-{int(start)}", ledger=ledger)
    collector = UsageCollector(aggregator)
    steps = int(round((end - start) / step))
    bar = _progress(steps, progress)
    events = samples = 0
    history = OpenMetricsHistory(target_labels)
    chunk_start = start
    t = start
    for index in range(steps):
        batch = sim.events_between(t, t + step)
        t += step
        if batch:
            aggregator.ingest(batch, "backfill", now=t)
            events += len(batch)
        history.add(collector.collect(), t)
        bar.update(1)
        if t - chunk_start >= DAY or index == steps - 1:
            samples += history.samples
            _convert(history, out, promtool, int(chunk_start), keep_openmetrics)
            history = OpenMetricsHistory(target_labels)
            chunk_start = t
    bar.close()
    return BackfillReport(days, events, samples, str(out), time.monotonic() - started)


def _convert(history: OpenMetricsHistory, out: Path, promtool: str, label: int, keep: bool) -> None:
    path = out / f"backfill-{label}.om"
    history.write(path)
    result = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(path), str(out)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"promtool failed on {path}: {result.stderr.strip() or result.stdout.strip()}")
    if not keep:
        path.unlink()


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="scrape", desc="backfill", disable=not enabled, mininterval=0.5)
