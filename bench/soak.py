"""Soak test: steady load for a long time against a real exporter scraped by a real Prometheus every
second; the process must not leak memory or file descriptors, and must keep answering quickly.

    python bench/soak.py                  # 10 minutes (make soak)
    python bench/soak.py --minutes 2      # a quick check

Every ``--sample-every`` seconds (30) it samples the exporter's RSS (VmRSS), open fds (/proc/PID/fd),
the window's POST latency p50/p99 (as the client sees it, and the server-side p99 from the exporter's
own histogram via PromQL), events/s and non-2xx, and the state file's size; prints one table
row per sample; writes ``bench/results/soak-<time>.json``. Exit status 1 when, after the warm-up
(``--warmup``, default 20% of the run, at least 30 s), RSS grows by more than ``--rss-tolerance-mib``
(16) or fds by more than ``--fd-tolerance`` (4), or any POST fails, or Prometheus missed scrapes.

What "after warm-up" compares: the first sample after the warm-up against the last sample. The warm-up
is needed because the dedupe window fills up first: it remembers every accepted id up to
``--dedupe.max-entries``. The soak sets that to ``--dedupe-entries`` (50,000: full after 50 s at
1000 events/s) so the window reaches its steady state (size evictions) early; with the default of
1,000,000 the window would legitimately grow for 17 minutes at this rate (~100-200 bytes per id).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from exporter.demo.loadgen import LoadReport, make_bodies, run_load  # noqa: E402
from harness import ExporterProcess, PrometheusProcess  # noqa: E402

RESULTS = REPO / "bench" / "results"
SERVER_P99 = ('histogram_quantile(0.99, sum by (le) (rate('
              'llm_exporter_http_request_duration_seconds_bucket{route="/v1/events"}[30s])))')


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def file_kib(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal", path + "-shm") if os.path.exists(p)) // 1024


def window_bodies(window: int, count: int, batch: int, scenario: str) -> list[bytes]:
    """The bodies of one window, with fresh ids. Built between windows, not during one: a builder thread
    would compete with the client for the GIL and inflate the latencies it measures."""
    return make_bodies(count, batch, scenario, seed=window, run_id=f"soak-{os.getpid()}-{window}")


def promql(prom: PrometheusProcess, expr: str) -> float | None:
    try:
        result = prom.query(expr)
    except Exception:  # noqa: BLE001 - a soak reports, it does not crash on a failed query
        return None
    return float(result[0]["value"][1]) if result else None


def ms(seconds: float | None) -> float | None:
    return None if seconds is None or seconds != seconds else seconds * 1000  # NaN: no requests in the window


def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else max(30.0, duration * 0.2)
    per_window = max(1, int(args.rate * args.sample_every / args.batch) + args.concurrency)
    flags = [f"--dedupe.max-entries={args.dedupe_entries}", f"--storage.sync={args.sync}", "--log.level=warning"]
    exporter = ExporterProcess(workdir / "exporter", *flags)
    prom = PrometheusProcess(workdir / "prometheus", [f"127.0.0.1:{exporter.port}"], scrape_interval="1s",
                             evaluation_interval="1s")
    try:
        exporter.start()
        prom.start()
    except BaseException:
        prom.stop()
        exporter.stop()
        raise
    pid = exporter.proc.pid
    samples: list[dict[str, Any]] = []
    totals = {"accepted": 0, "requests": 0, "non_2xx": 0, "errors": 0}
    header = (f"{'t (s)':>6} {'RSS MiB':>8} {'fds':>4} {'p50 ms':>7} {'p99 ms':>7} {'srv p99':>7} {'events/s':>9} "
              f"{'non-2xx':>7} {'series':>7} {'scrape ms':>9} {'db KiB':>8}")
    print(f"soak: {args.minutes:g} min at {args.rate:g} events/s (batches of {args.batch}, {args.concurrency} "
          f"connections), Prometheus scraping every 1 s, warm-up {warmup:.0f} s; exporter pid {pid}, {exporter.url}, "
          f"files in {workdir}{'' if args.keep else ' (removed at the end; --keep keeps them)'}")
    print(header)
    print("-" * len(header))

    def sample(elapsed: float, report: LoadReport | None) -> None:
        row = {"t": round(elapsed, 1), "rss_kib": proc_status(pid, "VmRSS"), "fds": open_fds(pid),
               "threads": proc_status(pid, "Threads"), "db_kib": file_kib(exporter.storage),
               "p50_ms": report.latency_ms.get("p50") if report else None,
               "p99_ms": report.latency_ms.get("p99") if report else None,
               "events_per_s": report.events_per_second if report else None,
               "non_2xx": report.non_2xx + report.errors if report else 0,
               "series": promql(prom, 'scrape_samples_scraped{job="llm-usage-exporter"}'),
               "scrape_ms": ms(promql(prom, 'scrape_duration_seconds{job="llm-usage-exporter"}')),
               "server_p99_ms": ms(promql(prom, SERVER_P99))}
        samples.append(row)

        def fmt(value: Any, spec: str) -> str:
            width = int(spec[1:].split(",")[0].split(".")[0])
            return format(value, spec) if value is not None else "-".rjust(width)
        print(f"{row['t']:>6.0f} {row['rss_kib'] / 1024:>8.1f} {row['fds']:>4} {fmt(row['p50_ms'], '>7.1f')} "
              f"{fmt(row['p99_ms'], '>7.1f')} {fmt(row['server_p99_ms'], '>7.1f')} "
              f"{fmt(row['events_per_s'], '>9,.0f')} {row['non_2xx']:>7} "
              f"{fmt(row['series'], '>7.0f')} {fmt(row['scrape_ms'], '>9.1f')} {row['db_kib']:>8}", flush=True)

    started = time.monotonic()
    wall_start = time.time()
    try:
        sample(0.0, None)
        window = 0
        while time.monotonic() - started < duration - 1:
            window += 1
            bodies = window_bodies(window, per_window, args.batch, args.scenario)
            seconds = min(args.sample_every, duration - (time.monotonic() - started))
            report = asyncio.run(run_load(exporter.url, bodies, args.batch, seconds, args.rate, args.concurrency))
            for key in ("accepted", "requests", "non_2xx", "errors"):
                totals[key] += getattr(report, key)
            sample(time.monotonic() - started, report)
        # Prometheus' view of the whole run: the target never down, one scrape a second.
        span = f"{max(1, int(time.time() - wall_start) - 5)}s"
        prom_view = {"min_up": promql(prom, f'min_over_time(up{{job="llm-usage-exporter"}}[{span}])'),
                     "scrapes": promql(prom, f'count_over_time(up{{job="llm-usage-exporter"}}[{span}])'),
                     "expected_scrapes": int(span[:-1]),
                     "accepted_counter": promql(prom, 'sum(llm_exporter_events_total{result="accepted"})')}
        time.sleep(1.5)
        prom_view["accepted_counter"] = promql(prom, 'sum(llm_exporter_events_total{result="accepted"})')
    finally:
        prom.stop()
        exporter.stop()
        exporter.client.close()
        prom.client.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    after = [s for s in samples if s["t"] >= warmup] or samples[-1:]
    first, last = after[0], samples[-1]
    rss_growth_mib = (last["rss_kib"] - first["rss_kib"]) / 1024
    fd_growth = last["fds"] - first["fds"]
    p99s = [s["p99_ms"] for s in samples if s["p99_ms"] is not None]
    failures = []
    if rss_growth_mib > args.rss_tolerance_mib:
        failures.append(f"RSS grew {rss_growth_mib:.1f} MiB after warm-up (tolerance {args.rss_tolerance_mib} MiB)")
    if fd_growth > args.fd_tolerance:
        failures.append(f"open fds grew by {fd_growth} after warm-up (tolerance {args.fd_tolerance})")
    if totals["non_2xx"] or totals["errors"]:
        failures.append(f"{totals['non_2xx']} non-2xx responses and {totals['errors']} connection errors")
    if prom_view["min_up"] != 1.0:
        failures.append(f"Prometheus saw the target down (min up = {prom_view['min_up']})")
    if prom_view["scrapes"] is not None and prom_view["scrapes"] < 0.9 * prom_view["expected_scrapes"]:
        failures.append(f"only {prom_view['scrapes']:.0f} scrapes in {prom_view['expected_scrapes']} s")
    summary = {
        "rss_mib": {"start": round(samples[0]["rss_kib"] / 1024, 1), "after_warmup": round(first["rss_kib"] / 1024, 1),
                    "end": round(last["rss_kib"] / 1024, 1), "max": round(max(s["rss_kib"] for s in samples) / 1024, 1),
                    "growth_after_warmup": round(rss_growth_mib, 1)},
        "fds": {"start": samples[0]["fds"], "after_warmup": first["fds"], "end": last["fds"],
                "max": max(s["fds"] for s in samples)},
        "p99_ms": {"min": min(p99s, default=None), "max": max(p99s, default=None)},
        "totals": totals, "prometheus": prom_view, "failures": failures, "ok": not failures,
    }
    print("-" * len(header))
    print(f"RSS {summary['rss_mib']['start']} -> {summary['rss_mib']['after_warmup']} (after warm-up) -> "
          f"{summary['rss_mib']['end']} MiB (growth after warm-up {rss_growth_mib:+.1f} MiB, tolerance "
          f"{args.rss_tolerance_mib}); fds {samples[0]['fds']} -> {first['fds']} -> {last['fds']} (tolerance "
          f"+{args.fd_tolerance}); POST p99 {summary['p99_ms']['min']:.1f}-{summary['p99_ms']['max']:.1f} ms; "
          f"{totals['accepted']:,} events accepted in {totals['requests']:,} POSTs, {totals['non_2xx']} non-2xx; "
          f"Prometheus: {prom_view['scrapes']} scrapes, min up {prom_view['min_up']}")
    print("OK" if not failures else "FAILED: " + "; ".join(failures))

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({
        "kind": "soak", "started": wall_start, "python": platform.python_version(), "cpus": os.cpu_count(),
        "config": {k: v for k, v in vars(args).items()} | {"warmup_s": warmup, "exporter_flags": flags},
        "samples": samples, "summary": summary}, indent=2))
    print(f"wrote {out.relative_to(REPO)}")
    return 0 if not failures else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s offered (default 1000)")
    parser.add_argument("--batch", type=int, default=50, help="events per POST (default 50)")
    parser.add_argument("--concurrency", type=int, default=2, help="keep-alive connections (default 2)")
    parser.add_argument("--scenario", default="steady", help="simulator scenario for the events")
    parser.add_argument("--sample-every", type=float, default=30.0, help="seconds between samples (default 30)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before growth counts (default 20%%, >= 30)")
    parser.add_argument("--rss-tolerance-mib", type=float, default=16.0,
                        help="allowed RSS growth after the warm-up (default 16 MiB)")
    parser.add_argument("--fd-tolerance", type=int, default=4, help="allowed growth of open fds (default 4)")
    parser.add_argument("--dedupe-entries", type=int, default=50_000,
                        help="exporter --dedupe.max-entries, so the window is full after the warm-up (default 50000)")
    parser.add_argument("--sync", choices=("normal", "full"), default="normal", help="exporter --storage.sync")
    parser.add_argument("--keep", action="store_true", help="keep the state file, Prometheus TSDB and logs")
    return soak(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
