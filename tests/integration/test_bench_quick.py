"""`bench/run.py --quick` runs every benchmark end to end against real servers (no thresholds:
speed is judged by `make bench`, never by `make test`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_bench_measures_every_section(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    (path,) = tmp_path.glob("bench-*.json")
    results = json.loads(path.read_text())
    rows = results["ingest"]["rows"]
    assert {r["shape"] for r in rows} == {"uniform", "zipf 7x100x4"}
    for row in rows:
        for name in ("ours", "baseline"):
            for r in row["runs"][name]:  # every event sent was accepted: nothing refused, nothing a duplicate
                assert r["accepted"] == r["events_sent"] > 0 and r["not_200"] == 0
    stages = results["stages"]["us_per_event"]
    assert all(stages[k] > 0 for k in ("decode", "validate", "price", "aggregate", "persist", "respond"))
    scrape = results["scrape"]
    assert scrape["samples"] > 1000 and scrape["ours_http_ms"] > 0 and scrape["generate_latest_same_samples_ms"] > 0
    assert scrape["under_scrape"]["scrapes_per_run"][0] >= 1
    assert results["memory"]["curve"][-1]["events"] == results["memory"]["events"]
    assert results["simulator"]["generated_per_second"] > 0 and results["simulator"]["with_ledger_per_second"] > 0
    assert results["machine"]["cpus"] and "HTTP ingest" in run.stdout and "RSS over" in run.stdout
