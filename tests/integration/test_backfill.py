"""Backfill: two simulated days into TSDB blocks, Prometheus started on them answers queries over
the past, and the live exporter started on the same state continues the counters (no reset)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from groundtruth import expected_cost
from harness import REPO, ExporterProcess, PrometheusProcess, free_port, require_binary


def test_backfill_two_days_then_live_continues(tmp_path):
    require_binary("promtool")
    blocks = tmp_path / "prom" / "tsdb"
    state = tmp_path / "state.db"
    ledger_path = tmp_path / "ledger.json"
    port = free_port()
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "backfill", "--days", "2", "--rate", "0.2", "--step", "5m",
         "--scenario", "default", f"--instance=127.0.0.1:{port}", "--out", str(blocks), f"--storage.path={state}", f"--ledger={ledger_path}",
         "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "To load them" in result.stdout
    ledger = json.loads(ledger_path.read_text())
    assert ledger["events"] > 20_000
    expected_requests = sum(row["requests"] for row in ledger["totals"])

    # One hand-made event goes into the simulated history on purpose (to see the counter move by
    # exactly one), so this exporter must be told mixing is intended.
    with ExporterProcess(tmp_path / "exporter", "--storage.allow-mixed-sources=true", storage=state,
                         port=port) as exporter, \
            PrometheusProcess(tmp_path / "prom", [f"127.0.0.1:{exporter.port}"]) as prom:
        # History: a day ago the fleet was already running, with every tenant present.
        day_ago = started - 86400
        tenants = prom.query("sum by (tenant) (llm_requests_total)", at=day_ago)
        assert len(tenants) == 7
        series = prom.query_range("sum(increase(llm_cost_usd_total[1h]))", day_ago - 6 * 3600, day_ago, 3600)
        assert series and len(series[0]["values"]) >= 6
        assert all(float(v) > 0 for _, v in series[0]["values"])

        # The live exporter starts from the backfilled totals: the last backfilled sample equals its
        # first scrape, and Prometheus sees no counter reset at the boundary.
        prom.wait_for_scrape_after(time.time())
        assert prom.scalar("sum(llm_requests_total)") == expected_requests
        event = {"id": "live-1", "timestamp": time.time(), "tenant": "acme", "customer": "acme-cust-001",
                 "model": "gpt-4o", "input_tokens": 100, "output_tokens": 10, "duration_ms": 900, "status": "ok"}
        assert exporter.post([event]).json()["accepted"] == 1
        prom.wait_for_scrape_after(time.time())
        assert prom.scalar("sum(llm_requests_total)") == expected_requests + 1
        assert prom.scalar("sum(resets(llm_requests_total[3h]))") == 0
        total_cost = prom.scalar("sum(llm_cost_usd_total)")
        assert total_cost > expected_cost(event)


def test_backfill_refuses_without_promtool(tmp_path, monkeypatch):
    from exporter.demo import backfill
    from exporter.history import blocks

    monkeypatch.setattr(blocks.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="promtool not found"):
        backfill.run_backfill(None, "default", 0.01, tmp_path, 1.0, 1, progress=False)  # type: ignore[arg-type]
