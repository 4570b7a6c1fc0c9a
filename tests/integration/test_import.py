"""import end to end: six hours of simulator-shaped events, shuffled, duplicated and partly broken,
imported into TSDB blocks; Prometheus started on them answers for the past, and the live exporter
started on the same state continues the counters with no reset and nothing counted twice."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import orjson

from harness import REPO, ExporterProcess, PrometheusProcess, free_port, require_binary

from exporter.demo.simulator import Simulator, load_scenario


def write_history(path: Path, start: float, end: float, rate: float, seed: int = 3) -> list[dict]:
    """Simulated traffic written as a log would be: shuffled, 1 % repeated lines, a broken line."""
    events = Simulator(load_scenario("default"), seed, rate, run_id="hist").events_between(start, end)
    for event in events:
        event["id"] = event["id"].replace("sim-", "req-")
    rng = random.Random(seed)
    lines = [orjson.dumps(e) for e in events]
    lines += rng.sample(lines, len(lines) // 100)
    rng.shuffle(lines)
    lines.insert(len(lines) // 2, b'{"id": "cut-off", "timestamp": ')
    path.write_bytes(b"\n".join(lines) + b"\n")
    return events


def test_import_then_live_continues_without_reset(tmp_path):
    require_binary("promtool")
    now = time.time()
    events = write_history(tmp_path / "gateway.ndjson", now - 6 * 3600, now - 60, rate=0.05)
    state = tmp_path / "state.db"
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "import", str(tmp_path / "gateway.ndjson"), "--out",
         str(tmp_path / "prom" / "tsdb"), f"--storage.path={state}", f"--instance=127.0.0.1:{port}", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"imported {len(events):,} of " in result.stdout and "rejected (invalid_line 1)" in result.stdout

    with ExporterProcess(tmp_path / "exporter", storage=state, port=port) as exporter, \
            PrometheusProcess(tmp_path / "prom", [f"127.0.0.1:{exporter.port}"]) as prom:
        three_hours_ago = now - 3 * 3600
        expected_then = sum(1 for e in events if e["timestamp"] < three_hours_ago // 300 * 300)
        assert prom.scalar("sum(llm_requests_total)", at=three_hours_ago) == expected_then
        series = prom.query_range("sum(increase(llm_requests_total[30m]))", now - 5 * 3600, now - 3600, 1800)
        assert series and all(float(v) > 0 for _, v in series[0]["values"])

        prom.wait_for_scrape_after(time.time())
        assert prom.scalar("sum(llm_requests_total)") == len(events)
        live = {"id": "live-1", "timestamp": time.time(), "tenant": "acme", "customer": "acme-cust-001",
                "model": "gpt-4o", "input_tokens": 100, "output_tokens": 10, "duration_ms": 900, "status": "ok"}
        repeat = dict(events[-1])  # inside the live window: already imported, so a duplicate
        body = exporter.post([live, repeat]).json()
        assert (body["accepted"], body["duplicates"]) == (1, 1), body
        prom.wait_for_scrape_after(time.time())
        assert prom.scalar("sum(llm_requests_total)") == len(events) + 1
        assert prom.scalar("sum(resets(llm_requests_total[7h]))") == 0
        assert prom.scalar("sum(resets(llm_cost_usd_total[7h]))") == 0
