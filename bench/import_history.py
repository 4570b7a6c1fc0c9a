"""Import at scale: >= 1M simulator-shaped events over 30 days, shuffled, with repeats and broken
lines; then Prometheus on the blocks and the live exporter on the state, with live traffic, and
resets() == 0 over the whole range.

    .venv/bin/python bench/import_history.py --events 1000000 --days 30 [--json results.json]

Prints time, events/s, peak RSS (import process and promtool), blocks written, and the checks.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from exporter.demo.simulator import Simulator, load_scenario  # noqa: E402
from harness import ExporterProcess, PrometheusProcess, free_port  # noqa: E402


def generate(path: Path, events: int, days: float, seed: int = 11) -> int:
    """``events`` simulator events (ids renamed like a gateway's) over ``days`` up to now, shuffled
    across the whole file, plus 1 % repeated lines and 0.1 % broken ones. Returns the unique count."""
    end = time.time() - 120
    start = end - days * 86400
    # The default scenario averages about 77,000 events per simulated day at rate 1.
    sim = Simulator(load_scenario("default"), seed, events / days / 77_000, run_id="gw")
    lines: list[bytes] = []
    t = start
    while t < end:
        for event in sim.events_between(t, min(t + 3600, end)):
            event["id"] = "req-" + event["id"][4:]
            lines.append(orjson.dumps(event))
        t += 3600
    unique = len(lines)
    rng = random.Random(seed)
    lines += rng.sample(lines, unique // 100)
    rng.shuffle(lines)
    for index in rng.sample(range(len(lines)), unique // 1000):
        lines[index] = lines[index][: len(lines[index]) // 2]
    with path.open("wb") as out:
        for line in lines:
            out.write(line + b"\n")
    return unique


def distinct_intact(path: Path) -> int:
    """Ground truth without the importer: distinct (tenant, id) among the lines that are valid JSON
    (a broken line whose event has no intact copy elsewhere is lost, as it should be)."""
    seen = set()
    with path.open("rb") as lines:
        for line in lines:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            seen.add((event["tenant"], event["id"]))
    return len(seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--workdir", help="keep everything here (default: a temporary directory)")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--reuse", action="store_true",
                        help="import the workdir's gateway.ndjson again instead of generating a new one")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="import-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "gateway.ndjson"
    state = work / "state.db"
    tsdb = work / "prom" / "tsdb"
    if not (args.reuse and source.exists()):
        t0 = time.monotonic()
        generate(source, args.events, args.days)
        print(f"generated {source.stat().st_size / 1e6:,.0f} MB in {time.monotonic() - t0:.0f}s", flush=True)
    shutil.rmtree(work / "prom", ignore_errors=True)
    for leftover in work.glob("state.db*"):
        leftover.unlink()
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "exporter", "import", str(source), "--out", str(tsdb),
                           f"--storage.path={state}", f"--instance=127.0.0.1:{port}", "--no-progress", "--json"],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout, done.stderr, file=sys.stderr)
        return 1
    report = json.loads(done.stdout)
    unique = distinct_intact(source)
    figures = {"events_in_file": report["events"], "accepted": report["accepted"], "duplicates": report["duplicates"],
               "rejected": report["rejected"], "seconds": round(report["seconds"], 1),
               "events_per_second": round(report["events"] / report["seconds"]),
               "peak_rss_mb": round(report["peak_rss_mb"]), "peak_promtool_rss_mb": round(report["peak_promtool_rss_mb"]),
               "blocks": report["blocks"], "samples": report["samples"], "input_mb": round(source.stat().st_size / 1e6)}
    print(json.dumps(figures, indent=2), flush=True)
    assert report["accepted"] == unique, (report["accepted"], unique)

    with ExporterProcess(work / "exporter", storage=state, port=port) as exporter, \
            PrometheusProcess(work / "prom", [f"127.0.0.1:{port}"],
                              extra_args=[f"--storage.tsdb.retention.time={int(args.days) + 5}d"]) as prom:
        prom.wait_for_scrape_after(time.time())
        before = prom.scalar("sum(llm_requests_total)")
        for batch in range(5):
            now = time.time()
            events = [{"id": f"live-{int(now)}-{batch}-{i}", "timestamp": now, "tenant": "acme", "customer": "acme-cust-001",
                       "model": "gpt-4o", "input_tokens": 100, "output_tokens": 10, "duration_ms": 900,
                       "status": "ok"} for i in range(100)]
            assert exporter.post(events).json()["accepted"] == 100
            prom.wait_for_scrape_after(time.time())
        window = f"{int(args.days) + 1}d"
        checks = {
            "imported_total_in_prometheus": before,
            "live_total_after": prom.scalar("sum(llm_requests_total)"),
            "resets_requests": prom.scalar(f"sum(resets(llm_requests_total[{window}]))"),
            "resets_cost": prom.scalar(f"sum(resets(llm_cost_usd_total[{window}]))"),
            "resets_tokens": prom.scalar(f"sum(resets(llm_tokens_total[{window}]))"),
            f"requests_{int(args.days) - 1}_days_ago": prom.scalar(
                "sum(llm_requests_total)", at=time.time() - (args.days - 1) * 86400),
        }
    print(json.dumps(checks, indent=2))
    assert checks["imported_total_in_prometheus"] == unique
    assert checks["live_total_after"] == unique + 500
    assert checks["resets_requests"] == checks["resets_cost"] == checks["resets_tokens"] == 0
    if args.json:
        Path(args.json).write_text(json.dumps({**figures, **checks}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
