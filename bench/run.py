"""Benchmarks, always side by side with a baseline in the same run (these machines are shared and
noisy: only ratios measured together mean something). Prints a table, writes bench/results/*.json.

    python bench/run.py              # everything, ~5 minutes on 2 cores
    python bench/run.py --only ingest_inprocess,exposition --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from bench.baseline import BaselineExporter  # noqa: E402
from exporter.core import metrics as m  # noqa: E402
from exporter.server.app import build_exporter  # noqa: E402
from exporter.config import load_config  # noqa: E402
from exporter.core.events import decode_batch  # noqa: E402
from exporter.demo.loadgen import make_bodies, run_load  # noqa: E402
from exporter.core.pricing import load_price_table  # noqa: E402
from exporter.demo.simulator import Simulator, load_scenario  # noqa: E402
from harness import ExporterProcess, PrometheusProcess, free_port, wait_until  # noqa: E402

RESULTS = REPO / "bench" / "results"


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("model name")), "?"),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def exporter_in_process(storage: str = ":memory:", sync: str = "normal"):
    config = load_config({"storage.path": storage, "storage.sync": sync, "web.listen-address": "127.0.0.1:0"}, {}, {})
    ex = build_exporter(config, CollectorRegistry(auto_describe=False))
    ex.aggregator.load()
    return ex


def rss_mib(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --- benchmarks ---------------------------------------------------------------------------------
def bench_ingest_inprocess(quick: bool) -> dict[str, Any]:
    """Parse + validate + dedupe + price + count, in one process: ours vs the per-event baseline."""
    batches = 60 if quick else 200
    bodies = make_bodies(batches, 1000, "steady")
    events = len(bodies) * 1000
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for name, storage, sync in (("ours (SQLite, sync=normal)", f"{tmp}/n.db", "normal"),
                                    ("ours (SQLite, sync=full)", f"{tmp}/f.db", "full"),
                                    ("ours (:memory:)", ":memory:", "normal")):
            ex = exporter_in_process(storage, sync)

            def ours(agg: Any = ex.aggregator) -> None:  # what POST /v1/events does with a valid JSON batch
                for body in bodies:
                    now = time.time()
                    agg.ingest_valid(decode_batch(body, now, agg.limits), "api", now)
            seconds = timed(ours)
            rows[name] = events / seconds
        baseline = BaselineExporter(load_price_table())
        rows["baseline (json + .labels().inc() per event)"] = events / timed(
            lambda: [baseline.ingest_body(b) for b in bodies])
    ours = rows["ours (SQLite, sync=normal)"]
    base = rows["baseline (json + .labels().inc() per event)"]
    return {"events": events, "events_per_second": rows, "ratio": ours / base,
            "goal": ">= 5x baseline", "met": ours / base >= 5}


def _serve_baseline(port: int) -> subprocess.Popen[bytes]:
    code = ("import sys, uvicorn; sys.path.insert(0, %r); from bench.baseline import create_baseline_app; "
            "from exporter.core.pricing import load_price_table; "
            "uvicorn.run(create_baseline_app(load_price_table()), host='127.0.0.1', port=%d, log_level='warning')"
            % (str(REPO), port))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200, 30,
               what="baseline server")
    return proc


def _load(url: str, seconds: float, batch: int = 1000, concurrency: int = 4) -> dict[str, Any]:
    bodies = make_bodies(int(seconds * 400) + concurrency, batch, "steady")
    report = asyncio.run(run_load(url, bodies, batch, seconds, 0.0, concurrency))
    return report.as_dict()


def bench_ingest_http(quick: bool) -> dict[str, Any]:
    """Over real HTTP with keep-alive (load generator in this process, server in its own)."""
    seconds = 4 if quick else 8
    with tempfile.TemporaryDirectory() as tmp:
        with ExporterProcess(Path(tmp)) as exporter:
            ours = _load(exporter.url, seconds)
            ours_rss = rss_mib(exporter.proc.pid)  # type: ignore[union-attr]
        port = free_port()
        proc = _serve_baseline(port)
        try:
            base = _load(f"http://127.0.0.1:{port}", seconds)
        finally:
            proc.terminate()
            proc.wait()
    ratio = ours["events_per_second"] / max(base["events_per_second"], 1)
    return {"ours": ours, "baseline": base, "ratio": ratio, "ours_rss_mib": ours_rss,
            "goal": ">= 250k events/s and >= 5x baseline",
            "met": ours["events_per_second"] >= 250_000 and ratio >= 5}


def _fill_series(ex: Any, series: int, seed: int = 1) -> int:
    """Synthetic usage state with ~``series`` exposed lines: 80% counter lines, 20% histogram lines."""
    rng = random.Random(seed)
    state = ex.aggregator.series
    counter_lines = int(series * 0.8)
    for i in range(counter_lines // 2):
        state["llm_requests"][("acme", f"cust-{i}", "gpt-4o", "openai", "chat", "ok")] = rng.randint(1, 10**6)
        state["llm_cost_usd"][("acme", f"cust-{i}", "gpt-4o", "openai")] = rng.randint(1, 10**9)
    lines_per_hist = len(m.DURATION_BUCKETS) + 3
    for i in range((series - counter_lines) // lines_per_hist):
        state["llm_request_duration_seconds"][(f"t{i % 50}", f"model-{i}", "openai", "chat")] = (
            [rng.random() * 1e4] + [rng.randint(0, 1000) for _ in range(len(m.DURATION_BUCKETS) + 1)])
    return sum(len(v) for v in state.values())


def bench_exposition(quick: bool) -> dict[str, Any]:
    """/metrics render at 1k/10k/100k series: fast writer vs prometheus_client.generate_latest."""
    out: dict[str, Any] = {}
    for size in (1_000, 10_000, 100_000):
        ex = exporter_in_process()
        _fill_series(ex, size)
        ex.render_metrics("")  # warm the prefix cache, as every scrape after the first
        reps = 3 if size == 100_000 else 10
        ours = min(timed(lambda: ex.render_metrics("")) for _ in range(reps))
        base = min(timed(lambda: generate_latest(ex.registry)) for _ in range(max(1, reps // 3)))
        body = ex.render_metrics("")[0].decode()
        lines = sum(1 for line in body.splitlines() if line.startswith("llm_") and not line.startswith("llm_exporter"))
        row: dict[str, Any] = {"series_lines": lines, "ours_ms": ours * 1000, "baseline_ms": base * 1000,
                               "ratio": base / ours}
        if size == 100_000:
            def samples(text: str) -> list[Any]:
                return sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                              for f in text_string_to_metric_families(text) for s in f.samples)
            row["parses_identically"] = samples(body) == samples(generate_latest(ex.registry).decode())
            check = subprocess.run(["promtool", "check", "metrics"], input=body.encode(), capture_output=True)
            row["promtool_check_metrics"] = check.returncode == 0
            out["goal"] = "<= 100 ms and >= 10x at 100k series"
            out["met"] = ours * 1000 <= 100 and base / ours >= 10 and row["parses_identically"]
        out[str(size)] = row
    return out


def bench_memory(quick: bool) -> dict[str, Any]:
    """RSS while events grow at a fixed series set; bytes per series; dedupe window memory."""
    total = 1_000_000 if quick else 4_000_000
    ex = exporter_in_process(sync="normal")
    sim = Simulator(load_scenario("steady"), 3, 1.0, run_id="mem")
    now = time.time()
    batch = [sim.event(now, now) for _ in range(1000)]
    curve = []
    start_rss = rss_mib()
    for i in range(total // 1000):
        for n, event in enumerate(batch):
            event["id"] = f"m{i}-{n}"
        ex.aggregator.ingest(batch, "api", now=now)
        if (i + 1) % (total // 10_000) == 0:
            curve.append({"events": (i + 1) * 1000, "rss_mib": round(rss_mib(), 1),
                          "dedupe_entries": len(ex.aggregator.dedupe)})
    series = sum(len(v) for v in ex.aggregator.series.values())
    # Bytes per series: RSS growth of adding 50k fresh series to an empty exporter.
    fresh = exporter_in_process()
    tracemalloc.start()
    _fill_series(fresh, 50_000, seed=2)
    fresh.render_metrics("")
    per_series = tracemalloc.get_traced_memory()[0] / 50_000
    tracemalloc.stop()
    # Dedupe window: memory of 200k remembered ids.
    window = exporter_in_process().aggregator.dedupe
    tracemalloc.start()
    window.apply(((f"acme\x00req-{i:012d}", now) for i in range(200_000)), [])
    per_id = tracemalloc.get_traced_memory()[0] / 200_000
    tracemalloc.stop()
    after_first_tenth = curve[0]["rss_mib"] if curve else start_rss
    return {"events": total, "series": series, "rss_curve": curve, "rss_start_mib": round(start_rss, 1),
            "rss_end_mib": curve[-1]["rss_mib"] if curve else None,
            "bytes_per_series": round(per_series), "dedupe_bytes_per_id": round(per_id),
            "dedupe_window_default_max_mib": round(per_id * 1_000_000 / 2**20),
            "note": "RSS grows with the dedupe window until it is full (1M ids by default), then stays flat",
            "growth_after_first_tenth_mib": round((curve[-1]["rss_mib"] if curve else 0) - after_first_tenth, 1)}


def bench_simulator(quick: bool) -> dict[str, Any]:
    sim = Simulator(load_scenario("default"), 1, 200.0, run_id="b")
    start = time.time() - 7200
    t0 = time.perf_counter()
    events = sim.events_between(start, start + (300 if quick else 1200))
    generate = len(events) / (time.perf_counter() - t0)
    ex = exporter_in_process()
    t0 = time.perf_counter()
    for i in range(0, len(events), 1000):
        ex.aggregator.ingest(events[i:i + 1000], "simulator")
    return {"events": len(events), "generated_per_second": generate,
            "generated_and_ingested_per_second": len(events) / (time.perf_counter() - t0 + len(events) / generate),
            "goal": ">= 100k events/s generated into the ingest function"}


def bench_ingest_under_scrape(quick: bool) -> dict[str, Any]:
    seconds = 4 if quick else 8
    with tempfile.TemporaryDirectory() as tmp:
        with ExporterProcess(Path(tmp) / "a") as exporter:
            _fill_series_via_api(exporter)
            alone = _load(exporter.url, seconds)
            with PrometheusProcess(Path(tmp) / "prom", [f"127.0.0.1:{exporter.port}"]) as _prom:
                scraped = _load(exporter.url, seconds)
            size = len(exporter.metrics_text())
    drop = 1 - scraped["events_per_second"] / alone["events_per_second"]
    return {"alone_eps": alone["events_per_second"], "scraped_every_1s_eps": scraped["events_per_second"],
            "metrics_bytes": size, "drop": drop, "goal": "drop < 20%", "met": drop < 0.2}


def _fill_series_via_api(exporter: ExporterProcess) -> None:
    """A realistic series count before measuring scrapes: one simulated hour of the default fleet."""
    sim = Simulator(load_scenario("default"), 5, 5.0, run_id="fill")
    events = sim.events_between(time.time() - 3600, time.time() - 60)
    for i in range(0, len(events), 2000):
        exporter.post(events[i:i + 2000])


def bench_replicas(quick: bool) -> dict[str, Any]:
    """Two exporter processes behind a client-side round robin vs one, on the same 2 cores."""
    seconds = 4 if quick else 8
    with tempfile.TemporaryDirectory() as tmp:
        with ExporterProcess(Path(tmp) / "one") as single:
            one = _load(single.url, seconds)["events_per_second"]
        with ExporterProcess(Path(tmp) / "r1") as r1, ExporterProcess(Path(tmp) / "r2") as r2:
            async def both() -> float:
                bodies = make_bodies(int(seconds * 300) + 4, 1000, "steady")
                half = len(bodies) // 2
                reports = await asyncio.gather(run_load(r1.url, bodies[:half], 1000, seconds, 0, 2),
                                               run_load(r2.url, bodies[half:], 1000, seconds, 0, 2))
                return sum(r.events_per_second for r in reports)
            two = asyncio.run(both())
    return {"one_replica_eps": one, "two_replicas_eps": two, "ratio": two / one}


BENCHES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "ingest_inprocess": bench_ingest_inprocess, "exposition": bench_exposition, "simulator": bench_simulator,
    "ingest_http": bench_ingest_http, "ingest_under_scrape": bench_ingest_under_scrape,
    "replicas": bench_replicas, "memory": bench_memory,
}


def summarize(results: dict[str, Any]) -> str:
    rows = [("benchmark", "ours", "baseline", "ratio", "goal", "met")]
    if "ingest_inprocess" in results:
        r = results["ingest_inprocess"]
        eps = r["events_per_second"]
        rows.append(("ingest in-process (ev/s)", f"{eps['ours (SQLite, sync=normal)']:,.0f}",
                     f"{eps['baseline (json + .labels().inc() per event)']:,.0f}", f"{r['ratio']:.1f}x", r["goal"],
                     str(r["met"])))
        rows.append(("  sync=full / :memory: (ev/s)", f"{eps['ours (SQLite, sync=full)']:,.0f} / "
                     f"{eps['ours (:memory:)']:,.0f}", "", "", "durability cost", ""))
    if "ingest_http" in results:
        r = results["ingest_http"]
        rows.append(("ingest HTTP, batch 1000 (ev/s)", f"{r['ours']['events_per_second']:,.0f}",
                     f"{r['baseline']['events_per_second']:,.0f}", f"{r['ratio']:.1f}x", r["goal"], str(r["met"])))
        rows.append(("  POST p99 latency (ms)", f"{r['ours']['latency_ms']['p99']:.1f}",
                     f"{r['baseline']['latency_ms']['p99']:.1f}", "", "", ""))
    if "exposition" in results:
        for size in ("1000", "10000", "100000"):
            r = results["exposition"][size]
            rows.append((f"/metrics render {r['series_lines']:,} lines (ms)", f"{r['ours_ms']:.1f}",
                         f"{r['baseline_ms']:.1f}", f"{r['ratio']:.1f}x",
                         results["exposition"]["goal"] if size == "100000" else "",
                         str(results["exposition"]["met"]) if size == "100000" else ""))
    if "simulator" in results:
        r = results["simulator"]
        rows.append(("simulator generate (ev/s)", f"{r['generated_per_second']:,.0f}", "", "", r["goal"],
                     str(r["generated_per_second"] >= 100_000)))
        rows.append(("  generate + ingest (ev/s)", f"{r['generated_and_ingested_per_second']:,.0f}", "", "", "", ""))
    if "ingest_under_scrape" in results:
        r = results["ingest_under_scrape"]
        rows.append(("ingest while scraped 1/s (ev/s)", f"{r['scraped_every_1s_eps']:,.0f}",
                     f"{r['alone_eps']:,.0f} alone", f"-{r['drop'] * 100:.0f}%", r["goal"], str(r["met"])))
    if "replicas" in results:
        r = results["replicas"]
        rows.append(("2 replicas vs 1, HTTP (ev/s)", f"{r['two_replicas_eps']:,.0f}", f"{r['one_replica_eps']:,.0f}",
                     f"{r['ratio']:.2f}x", "measure", ""))
    if "memory" in results:
        r = results["memory"]
        curve = r["rss_curve"]
        full = next((c for c in curve if c["dedupe_entries"] >= 1_000_000), curve[-1])
        rows.append((f"RSS over {r['events']:,} events (MiB)",
                     f"{curve[0]['rss_mib']} -> {full['rss_mib']} (window full) -> {r['rss_end_mib']}",
                     f"{r['series']} series", "", "flat at fixed series", ""))
        rows.append(("  bytes per series / per dedupe id", f"{r['bytes_per_series']} / {r['dedupe_bytes_per_id']}",
                     "", "", f"1M-id window ~{r['dedupe_window_default_max_mib']} MiB", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated subset of " + ", ".join(BENCHES))
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    results: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "quick": args.quick}
    for name in names:
        started = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = BENCHES[name](args.quick)
        results[name]["seconds"] = round(time.perf_counter() - started, 1)
    table = summarize(results)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
