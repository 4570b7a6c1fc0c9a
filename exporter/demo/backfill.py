"""History backfill: simulate N past days through the one ingest path and turn the series into
Prometheus TSDB blocks (:class:`exporter.history.blocks.BlockWriter`).

Samples are what a scrape every ``step`` seconds would have seen, with the same names and labels
as the live exporter. The ingest state goes to the same state store the live exporter then opens,
so live counters continue from the backfilled totals instead of restarting at zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.aggregate import Aggregator
from ..history.blocks import DAY, BlockWriter, require_promtool
from .simulator import Ledger, Simulator, load_scenario


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
    promtool = require_promtool(promtool)
    started = time.monotonic()
    end = (time.time() if end is None else end) // step * step
    start = end - days * DAY
    sim = Simulator(load_scenario(scenario), seed, rate, run_id=f"backfill-{seed}-{int(start)}", ledger=ledger)
    writer = BlockWriter(aggregator, out, target_labels, promtool, keep_openmetrics, name="backfill")
    steps = int(round((end - start) / step))
    bar = _progress(steps, progress)
    events = 0
    t = start
    for _ in range(steps):
        batch = sim.events_between(t, t + step)
        t += step
        if batch:
            aggregator.ingest(batch, "backfill", now=t)
            events += len(batch)
        writer.scrape(t)
        bar.update(1)
    writer.flush()
    bar.close()
    return BackfillReport(days, events, writer.samples, str(out), time.monotonic() - started)


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="scrape", desc="backfill", disable=not enabled, mininterval=0.5)
