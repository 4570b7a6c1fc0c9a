"""Benchmarks, always side by side with a baseline in the same run: these machines are shared and
noisy, so only ratios measured together mean something. Every figure is the median of ``--reps``
runs (3) in which ours and the baseline alternate. Prints a table, writes bench/results/*.json.

    python bench/run.py                               # everything (make bench), ~10 minutes on 2 cores
    python bench/run.py --only ingest,stages --reps 5
    python bench/run.py --shape 'mine:tenants=3,customers=2000,models=8,dist=zipf' --batch 250 --clients 2
    python bench/run.py --quick                       # a smoke run (make test runs it; no thresholds)

What is measured:
  ingest   HTTP ingest, ours (real process, durable SQLite store) vs bench/baseline.py (json +
           prometheus-client .labels().inc() per event) behind the same uvicorn, and a server that
           only reads the bodies (the HTTP ceiling), for each shape x batch x clients.
  stages   µs per event by stage, in process, on the same bodies: decode, validate, price,
           aggregate, persist (log append; checkpoint amortised), respond; the rest of the HTTP
           figure is the framework and the transport.
  scrape   /metrics with >= 80k samples fetched over HTTP as Prometheus does (Accept, gzip) vs
           prometheus_client.generate_latest on the same samples, and vs the baseline server; ours
           unchanged since the last scrape and after one uniform 1000-event batch.
  under_scrape  ingest alone vs while /metrics is fetched every second.
  memory   RSS over 10M events at a fixed series set (a child process, so nothing else counts).
  simulator     events/s the simulator generates: the complete event dicts the live exporter, loadgen
                and backfill get, without and with the ground-truth ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from bench.httpload import Connection, post_load, scrape  # noqa: E402
from bench.shapes import UNIFORM, ZIPF, Generator, Shape, for_run  # noqa: E402
from exporter.config import load_config  # noqa: E402
from exporter.core import events as events_module  # noqa: E402
from exporter.core import pricing as pricing_module  # noqa: E402
from exporter.demo.simulator import Ledger, Simulator, load_scenario  # noqa: E402
from exporter.server.app import build_exporter  # noqa: E402
from harness import ExporterProcess, ServerProcess  # noqa: E402

RESULTS = REPO / "bench" / "results"
# >= 80k samples: 7 x 800 x 4 = 22,400 label sets, ~4 samples each, plus the histograms.
SCRAPE_SHAPE = Shape(name="scrape 7x800x4", customers=800)
SCRAPE_SHAPE_QUICK = Shape(name="scrape 7x50x4", customers=50)


def machine() -> dict[str, Any]:
    versions = {}
    for dist in ("uvicorn", "uvloop", "httptools", "starlette", "orjson", "msgspec", "prometheus-client"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("model name")), "?"),
            "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "loadavg_at_start": os.getloadavg(), "commit": commit.stdout.strip(), "versions": versions}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def rss_mib(pid: int | None = None) -> float:
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024


def exporter_in_process(storage: str = ":memory:", sync: str = "normal") -> Any:
    config = load_config({"storage.path": storage, "storage.sync": sync, "web.listen-address": "127.0.0.1:0"}, {}, {})
    ex = build_exporter(config, CollectorRegistry(auto_describe=False))
    ex.aggregator.load()
    return ex


class UvicornProcess(ServerProcess):
    """A bench/baseline.py app under the same uvicorn as ours (``python -m exporter``)."""

    ready_path = "/readyz"

    def __init__(self, workdir: Path, factory: str) -> None:
        self.name = self.factory = factory
        super().__init__(workdir)

    def command(self) -> list[str]:
        code = ("import sys, uvicorn; sys.path.insert(0, %r); from bench import baseline; "
                "from exporter.core.pricing import load_price_book; "
                "app = baseline.create_baseline_app(load_price_book()) if %r == 'baseline' "
                "else baseline.create_ceiling_app(); "
                "uvicorn.run(app, host='127.0.0.1', port=%d, log_level='warning', access_log=False)"
                % (str(REPO), self.factory, self.port))
        return [sys.executable, "-c", code]


def post_all(port: int, bodies: list[bytes], batch: int) -> None:
    """Send every body (fills state; not a measurement)."""
    result = asyncio.run(post_load(port, bodies, batch, 3600.0, 2))
    if result.not_200:
        raise RuntimeError(f"{result.not_200} fill requests failed on port {port}")


# --- ingest over HTTP -----------------------------------------------------------------------------
def bench_ingest(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Ours vs baseline vs ceiling for each shape x batch x clients; interleaved, median of reps."""
    rows = []
    run_ids = iter(range(1, 10_000))
    with ExporterProcess(tmp / "ours") as ours, UvicornProcess(tmp / "base", "baseline") as base, \
            UvicornProcess(tmp / "ceiling", "ceiling") as ceiling:
        servers = {"ours": ours.port, "baseline": base.port, "ceiling": ceiling.port}
        for shape in args.shapes:
            gen = Generator(shape)
            for batch in args.batches:
                # One pool of bodies per (shape, batch), re-stamped with fresh ids for every run.
                pool = gen.bodies(max(8, int(args.max_events / batch)), batch, time.time())
                for port in servers.values():  # warm-up: label sets exist, caches are hot
                    post_all(port, for_run(pool[:max(4, 20_000 // batch)], next(run_ids)), batch)
                for clients in args.clients:
                    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
                    for rep in range(args.reps):
                        order = ["ours", "baseline", "ceiling"] if rep % 2 == 0 else ["baseline", "ours", "ceiling"]
                        for name in order:
                            bodies = for_run(pool, next(run_ids))
                            result = asyncio.run(post_load(servers[name], bodies, batch, args.seconds, clients,
                                                           count_accepted=name != "ceiling"))
                            if result.not_200 or (name != "ceiling" and result.accepted != result.events_sent):
                                raise RuntimeError(f"{name}: {result}")
                            runs[name].append(result.as_dict())
                    eps = {name: median([r["events_per_second"] for r in rs]) for name, rs in runs.items()}
                    rows.append({"shape": shape.name, "shape_spec": asdict(shape), "label_sets": shape.label_sets,
                                 "batch": batch, "clients": clients, "events_per_second": eps,
                                 "ratio": eps["ours"] / eps["baseline"],
                                 "p99_ms": {n: median([r["latency_ms"]["p99"] for r in rs]) for n, rs in runs.items()},
                                 "runs": runs})
                    print(f"  {shape.name} batch {batch} x{clients}: ours {eps['ours']:,.0f} baseline "
                          f"{eps['baseline']:,.0f} ceiling {eps['ceiling']:,.0f} ev/s", file=sys.stderr, flush=True)
                del pool
        rss = rss_mib(ours.proc.pid)  # type: ignore[union-attr]
    return {"rows": rows, "ours_rss_mib_after": round(rss, 1), "storage": "SQLite file, storage.sync=normal (default)",
            "goal": ">= 5x baseline on the high-cardinality uniform shape"}


# --- stage breakdown ------------------------------------------------------------------------------
class StageClock:
    """Time spent in wrapped callables, by stage. Wrapping costs ~0.2 µs a call; that overhead is
    measured and taken off the stage that contains the wrapped calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.overhead = self._calibrate()

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        seconds, calls, clock = self.seconds, self.calls, time.perf_counter

        def timed(*a: Any, **k: Any) -> Any:
            start = clock()
            try:
                return fn(*a, **k)
            finally:
                seconds[stage] += clock() - start
                calls[stage] += 1
        return timed

    def _calibrate(self, n: int = 200_000) -> float:
        def noop() -> None:
            return None
        wrapped = StageClock.wrap(self, "_calibration", noop)
        start = time.perf_counter()
        for _ in range(n):
            noop()
        bare = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(n):
            wrapped()
        overhead = (time.perf_counter() - start - bare) / n
        self.seconds.clear()
        self.calls.clear()
        return overhead


FOLD_STAGE = "aggregate: fold rows (count into state)"  # one name: the stage timer's and the table's


def bench_stages(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """µs per event by stage, on the same batches (uniform shape, batch 500), durable store."""
    shape, batch = args.shapes[0], 500
    count = 40 if args.quick else 400
    out: dict[str, Any] = {"shape": shape.name, "batch": batch, "events_per_rep": count * batch}
    gen = Generator(shape)
    pool = gen.bodies(count, batch, time.time())
    reps: list[dict[str, float]] = []
    for rep in range(args.reps):
        ex = exporter_in_process(str(tmp / f"stages-{rep}.db"), "normal")
        agg = ex.aggregator
        post_all_inprocess(agg, for_run(pool[:max(4, 20_000 // batch)], 9000 + rep))  # warm
        agg.checkpoint()
        agg.checkpoint_every = float("inf")  # checkpoints run every checkpoint_max_events, as under heavy ingest
        clock = StageClock()
        prices = agg.prices
        model_price = getattr(pricing_module, "ModelPrice", None)  # the per-model price object, if any
        original_cost = getattr(model_price, "cost_micros", None)
        if original_cost is not None:
            model_price.cost_micros = clock.wrap("price", original_cost)
        # Instance attributes shadow the methods ingest calls; a name another change removed is skipped.
        for obj, attr, name in ((prices, "lookup", "price"), (prices, "cost", "price"), (prices, "sku_micros", "price"),
                                (agg.store, "append", "persist"), (agg, "checkpoint", "checkpoint"),
                                (agg, "fold", FOLD_STAGE),
                                (agg, "_count", "aggregate: self-metrics"),
                                (agg.dedupe, "add", "aggregate: dedupe")):
            if callable(getattr(obj, attr, None)):
                setattr(obj, attr, clock.wrap(name, getattr(obj, attr)))
        from starlette.responses import Response
        stage = defaultdict(float)
        limits, decoder, finish = agg.limits, events_module._BATCH_DECODER, events_module._finish
        perf = time.perf_counter
        try:
            for body in for_run(pool, rep + 1):
                now = time.time()
                t0 = perf()
                events = decoder.decode(body).events
                t1 = perf()
                if not finish(events, now, limits):
                    raise RuntimeError("a bench body failed validation")
                t2 = perf()
                result = agg.ingest_valid(events, "api", now)
                t3 = perf()
                Response(orjson.dumps(result.as_dict()), media_type="application/json")
                t4 = perf()
                stage["decode"] += t1 - t0
                stage["validate"] += t2 - t1
                stage["ingest_valid"] += t3 - t2
                stage["respond"] += t4 - t3
        finally:
            if original_cost is not None:
                model_price.cost_micros = original_cost
            ex.store.close()
        events = count * batch
        wrapped_calls = sum(clock.calls.values())
        inner = sum(clock.seconds.values())
        aggregate = stage["ingest_valid"] - inner - wrapped_calls * clock.overhead
        row = {"decode": stage["decode"], "validate": stage["validate"], "price": clock.seconds["price"],
               "aggregate": aggregate + sum(v for k, v in clock.seconds.items() if k.startswith("aggregate")),
               "persist": clock.seconds["persist"], "checkpoint": clock.seconds["checkpoint"],
               "respond": stage["respond"]}
        row.update({k: v for k, v in clock.seconds.items() if k.startswith("aggregate:")})
        row["aggregate: accumulate loop (rest)"] = aggregate
        us = {k: v / events * 1e6 for k, v in row.items()}
        us["checkpoint_ms_each"] = clock.seconds["checkpoint"] * 1000 / max(1, clock.calls["checkpoint"])
        us["checkpoints"] = clock.calls["checkpoint"]
        us["total"] = sum(us[k] for k in ("decode", "validate", "price", "aggregate", "persist", "checkpoint", "respond"))
        us["wrapper_overhead_us_per_call"] = clock.overhead * 1e6
        reps.append(us)
    out["us_per_event"] = {k: median([r[k] for r in reps]) for k in reps[0]}
    out["reps"] = reps
    out["note"] = ("checkpoint: amortised over the run, which checkpoints every checkpoint_max_events events as the "
                   "exporter does under heavy ingest (else every 5 s); checkpoint_ms_each: one of them")
    return out


def post_all_inprocess(agg: Any, bodies: list[bytes]) -> None:
    for body in bodies:
        now = time.time()
        events = events_module.decode_batch(body, now, agg.limits)
        if events is None:
            raise RuntimeError("a bench body failed validation")
        agg.ingest_valid(events, "api", now)


# --- /metrics -------------------------------------------------------------------------------------
def _count_samples(text: str) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(text) if not f.name.startswith("llm_exporter"))


def bench_scrape(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Scrape timings and ingest-under-scrape share one filled exporter (>= 80k samples)."""
    shape = SCRAPE_SHAPE_QUICK if args.quick else SCRAPE_SHAPE
    gen = Generator(shape)
    fill = gen.bodies(max(1, shape.label_sets * 4 // 1000), 1000, time.time())
    reps = max(args.reps, 3)
    out: dict[str, Any] = {"shape": shape.name}
    with ExporterProcess(tmp / "scrape-ours") as ours, UvicornProcess(tmp / "scrape-base", "baseline") as base:
        post_all(ours.port, fill, 1000)
        post_all(base.port, fill, 1000)
        local = exporter_in_process()  # the same samples in process, for generate_latest
        post_all_inprocess(local.aggregator, fill)
        plain = ours.metrics_text()
        out["samples"] = _count_samples(plain)
        out["plain_bytes"] = len(plain.encode())

        async def fetch_all() -> dict[str, list[float]]:
            conns = {"ours": await Connection("127.0.0.1", ours.port).open(),
                     "baseline": await Connection("127.0.0.1", base.port).open()}
            times: dict[str, list[float]] = defaultdict(list)
            async def fetch(name: str) -> tuple[float, int, dict[str, str]]:
                try:
                    return await scrape(conns[name])
                except (asyncio.IncompleteReadError, ConnectionError):
                    # idle past the server's keep-alive timeout while the other one rendered: reconnect
                    await conns[name].close()
                    conns[name] = await Connection("127.0.0.1", ports[name]).open()
                    return await scrape(conns[name])

            ports = {"ours": ours.port, "baseline": base.port}
            for name in conns:  # warm: the first scrape builds caches, as after any restart
                await fetch(name)
            for change in changes:
                for name in list(conns):
                    seconds, size, headers = await fetch(name)
                    times[name].append(seconds)
                    out[f"{name}_wire_bytes"] = size
                    out[f"{name}_content_encoding"] = headers.get("content-encoding", "identity")
                    out[f"{name}_content_type"] = headers.get("content-type", "")
                # What Prometheus meets under traffic: one uniform batch between two scrapes leaves
                # nearly every cached block of series changed, so this scrape re-renders and recompresses.
                poster = await Connection("127.0.0.1", ours.port).open()  # fresh: an idle one may have timed out
                status, _, _ = await poster.request("POST", "/v1/events", change, {"Content-Type": "application/json"})
                await poster.close()
                if status != 200:
                    raise RuntimeError(f"a change batch answered {status}")
                seconds, _, _ = await fetch("ours")
                times["ours_changed"].append(seconds)
            for conn in conns.values():
                await conn.close()
            return times
        changes = gen.bodies(reps * 2, 1000, time.time())
        times = asyncio.run(fetch_all())
        generate = []
        for _ in range(reps):
            start = time.perf_counter()
            generate_latest(local.registry)
            generate.append(time.perf_counter() - start)
        out["ours_http_ms"] = median(times["ours"]) * 1000
        out["ours_changed_http_ms"] = median(times["ours_changed"]) * 1000
        out["baseline_server_http_ms"] = median(times["baseline"]) * 1000
        out["generate_latest_same_samples_ms"] = median(generate) * 1000
        out["ratio_vs_generate_latest"] = out["generate_latest_same_samples_ms"] / out["ours_http_ms"]
        out["ratio_changed_vs_generate_latest"] = out["generate_latest_same_samples_ms"] / out["ours_changed_http_ms"]
        out["ratio_vs_baseline_server"] = out["baseline_server_http_ms"] / out["ours_http_ms"]
        out["goal"] = ">= 10x generate_latest on the same samples, >= 80k samples, over HTTP"
        if "under_scrape" in args.only:
            out["under_scrape"] = _under_scrape(args, ours.port)
    return out


def _under_scrape(args: argparse.Namespace, port: int) -> dict[str, Any]:
    """Ingest (first shape, batch 500, one client) alone vs while /metrics is fetched every second."""
    gen = Generator(args.shapes[0])
    pool = gen.bodies(max(8, int(args.max_events / 500)), 500, time.time())
    seconds = max(args.seconds, 1.0 if args.quick else 4.0)

    async def load(scraped: bool, run: int) -> tuple[float, int]:
        scrapes = 0
        stop = asyncio.Event()

        async def scraper() -> None:
            nonlocal scrapes
            conn = await Connection("127.0.0.1", port).open()
            while not stop.is_set():
                started = time.perf_counter()
                await scrape(conn)
                scrapes += 1
                try:
                    await asyncio.wait_for(stop.wait(), max(0.0, 1.0 - (time.perf_counter() - started)))
                except asyncio.TimeoutError:
                    pass
            await conn.close()
        task = asyncio.create_task(scraper()) if scraped else None
        result = await post_load(port, for_run(pool, run), 500, seconds, 1)
        stop.set()
        if task is not None:
            await task
        return result.events_per_second, scrapes

    alone, scraped, scrapes = [], [], []
    for rep in range(max(args.reps, 3)):
        for mode in ((False, True) if rep % 2 == 0 else (True, False)):
            eps, n = asyncio.run(load(mode, 5000 + rep * 2 + mode))
            (scraped if mode else alone).append(eps)
            if mode:
                scrapes.append(n)
    drop = 1 - median(scraped) / median(alone)
    return {"alone_eps": median(alone), "scraped_eps": median(scraped), "drop": drop, "scrapes_per_run": scrapes,
            "seconds_per_run": seconds, "goal": "drop < 10%"}


# --- memory ---------------------------------------------------------------------------------------
def bench_memory(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """RSS of a child process ingesting ``--memory-events`` at the first shape's fixed series."""
    total = 200_000 if args.quick else args.memory_events
    child = subprocess.run([sys.executable, __file__, "--memory-child", str(total), "--out", str(tmp),
                            "--shape", _shape_arg(args.shapes[0])], capture_output=True, text=True)
    if child.returncode:
        raise RuntimeError(f"memory child failed: {child.stderr[-2000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    curve = result["curve"]
    window_full = next((c for c in curve if c["dedupe_entries"] >= result["dedupe_max_entries"]), None)
    result["rss_at_window_full_mib"] = window_full["rss_mib"] if window_full else None
    result["rss_end_mib"] = curve[-1]["rss_mib"]
    result["growth_after_window_full_mib"] = (round(curve[-1]["rss_mib"] - window_full["rss_mib"], 1)
                                              if window_full else None)
    # The window's dicts reach their steady size a few hundred thousand events after it fills (deleted
    # slots are reclaimed by a resize), so "flat" is judged on the second half of the run.
    middle = curve[len(curve) // 2]
    result["growth_second_half_mib"] = round(curve[-1]["rss_mib"] - middle["rss_mib"], 1)
    result["second_half_from_events"] = middle["events"]
    result["goal"] = "flat once the dedupe window is full (1M ids by default)"
    result.update(_bytes_per_series_and_id(args))
    return result


def _bytes_per_series_and_id(args: argparse.Namespace) -> dict[str, Any]:
    """Python heap per exposed series (state + render caches) and per remembered id, by tracemalloc."""
    import tracemalloc
    shape = SCRAPE_SHAPE_QUICK if args.quick else SCRAPE_SHAPE
    now = time.time()
    body = orjson.dumps({"events": Generator(shape).events(shape.label_sets * 4, now)})
    events = events_module.decode_batch(body, now, events_module.Limits(max_label_length=128))
    assert events is not None
    ex = exporter_in_process()
    ex.aggregator.dedupe.max_total = 0  # ids are measured on their own below
    tracemalloc.start()
    for i in range(0, len(events), 1000):
        ex.aggregator.ingest_valid(events[i:i + 1000], "api", now)
    ex.render_metrics("")
    heap = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    series = _count_samples(ex.render_metrics("")[0].decode())
    window = exporter_in_process().aggregator.dedupe
    tracemalloc.start()  # the key strings count: the window holds them
    window.add(now, {"tenant-1": {f"tenant-1\x00RUN0001-{i}": now for i in range(200_000)}})
    per_id = tracemalloc.get_traced_memory()[0] / 200_000
    tracemalloc.stop()
    return {"bytes_per_exposed_sample": round(heap / series), "exposed_samples_measured": series,
            "dedupe_bytes_per_id": round(per_id)}


def _shape_arg(shape: Shape) -> str:
    fields = asdict(shape)
    name = fields.pop("name")
    return name + ":" + ",".join(f"{k}={v}" for k, v in fields.items())


def memory_child(total: int, shape: Shape, tmp: Path) -> None:
    ex = exporter_in_process(str(tmp / "memory.db"), "normal")
    agg = ex.aggregator
    now = time.time()
    body = orjson.dumps({"events": Generator(shape).events(1000, now)})
    batch = events_module.decode_batch(body, now, agg.limits)
    assert batch is not None
    curve = []
    every = max(1, total // 1000 // 40)
    start = time.perf_counter()
    for i in range(total // 1000):
        for n, event in enumerate(batch):
            event.id = f"m{i}-{n}"
        agg.ingest_valid(batch, "api", now)
        if (i + 1) % every == 0:
            curve.append({"events": (i + 1) * 1000, "rss_mib": round(rss_mib(), 1), "dedupe_entries": len(agg.dedupe),
                          "seconds": round(time.perf_counter() - start, 1)})
    series = sum(len(v) for v in agg.series.values())
    print(json.dumps({"events": total, "series": series, "curve": curve, "shape": shape.name,
                      "dedupe_max_entries": agg.dedupe.max_total,
                      "ingest_valid_eps": total / (time.perf_counter() - start)}))


# --- simulator ------------------------------------------------------------------------------------
def bench_simulator(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The events the live exporter's simulator, loadgen and backfill send (``events_between`` over a
    15-minute window of the default fleet, complete dicts), without and with the ledger (backfill
    --ledger, the accuracy tests), alternating."""
    rates: dict[str, list[float]] = {"plain": [], "ledger": []}
    for rep in range(args.reps):
        for kind in rates:
            sim = Simulator(load_scenario("default"), 1 + rep, 200.0, run_id="b",
                            ledger=Ledger() if kind == "ledger" else None)
            start = time.time() - 7200
            t0 = time.perf_counter()
            events = sim.events_between(start, start + (120 if args.quick else 900))
            rates[kind].append(len(events) / (time.perf_counter() - t0))
    return {"events": len(events), "generated_per_second": median(rates["plain"]), "reps": rates["plain"],
            "with_ledger_per_second": median(rates["ledger"]), "with_ledger_reps": rates["ledger"],
            "goal": ">= 100k events/s"}


BENCHES: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "simulator": bench_simulator, "stages": bench_stages, "ingest": bench_ingest, "scrape": bench_scrape,
    "memory": bench_memory,
}
ALL = ["simulator", "stages", "ingest", "scrape", "under_scrape", "memory"]


# --- table ----------------------------------------------------------------------------------------
def table(results: dict[str, Any]) -> str:
    out: list[str] = [f"machine: {results['machine']['cpu']} x{results['machine']['cpus']}, python "
                      f"{results['machine']['python']}, load {results['machine']['loadavg_at_start'][0]:.1f}; "
                      f"medians of {results['reps']} interleaved runs"]

    def grid(rows: list[tuple[str, ...]]) -> None:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        out.append("")
        for n, row in enumerate(rows):
            out.append("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
            if n == 0:
                out.append("  ".join("-" * w for w in widths))

    if "ingest" in results:
        rows = [("HTTP ingest, events/s", "batch", "clients", "ours", "baseline", "ratio", "ceiling", "ours p99 ms")]
        for r in results["ingest"]["rows"]:
            eps = r["events_per_second"]
            rows.append((r["shape"], str(r["batch"]), str(r["clients"]), f"{eps['ours']:,.0f}",
                         f"{eps['baseline']:,.0f}", f"{r['ratio']:.2f}x", f"{eps['ceiling']:,.0f}",
                         f"{r['p99_ms']['ours']:.1f}"))
        grid(rows)
        out.append(f"goal: {results['ingest']['goal']}; ceiling = a server that only reads the bodies")
    if "stages" in results:
        s = results["stages"]
        us = s["us_per_event"]
        rows = [(f"stage, µs/event ({s['shape']}, batch {s['batch']})", "µs")]
        for key in ("decode", "validate", "price", "aggregate", "aggregate: accumulate loop (rest)",
                    FOLD_STAGE, "aggregate: dedupe",
                    "aggregate: self-metrics", "persist", "checkpoint", "respond", "total"):
            if key in us:
                rows.append((("  " if key.startswith("aggregate:") else "") + key, f"{us[key]:.2f}"))
        http = next((r for r in results.get("ingest", {}).get("rows", [])
                     if r["shape"] == s["shape"] and r["batch"] == s["batch"] and r["clients"] == 1), None)
        if http:
            eps = http["events_per_second"]["ours"]
            rows.append(("HTTP + framework (1e6 / HTTP rate - stages)", f"{1e6 / eps - us['total']:.2f}"))
            rows.append(("HTTP total (1e6 / HTTP events/s)", f"{1e6 / eps:.2f}"))
        rows.append((f"one checkpoint, ms (of {us['checkpoints']:.0f} in the run)", f"{us['checkpoint_ms_each']:.1f}"))
        grid(rows)
    if "scrape" in results:
        r = results["scrape"]
        grid([("/metrics over HTTP", "samples", "ms", "wire bytes", "encoding"),
              ("ours, nothing changed since the last scrape", f"{r['samples']:,}", f"{r['ours_http_ms']:.1f}",
               f"{r['ours_wire_bytes']:,}", r["ours_content_encoding"]),
              ("ours, after a 1000-event batch (most blocks changed)", "", f"{r['ours_changed_http_ms']:.1f}", "", ""),
              ("baseline server (generate_latest)", "", f"{r['baseline_server_http_ms']:.1f}",
               f"{r['baseline_wire_bytes']:,}", r["baseline_content_encoding"]),
              ("generate_latest, same samples, in process", "", f"{r['generate_latest_same_samples_ms']:.1f}", "", "")])
        out.append(f"ratio: {r['ratio_vs_generate_latest']:.1f}x generate_latest unchanged, "
                   f"{r['ratio_changed_vs_generate_latest']:.1f}x after a batch, {r['ratio_vs_baseline_server']:.1f}x "
                   f"the baseline server; goal {r['goal']}")
        if "under_scrape" in r:
            u = r["under_scrape"]
            out.append(f"ingest while scraped every 1 s: {u['scraped_eps']:,.0f} ev/s vs {u['alone_eps']:,.0f} alone: "
                       f"drop {u['drop'] * 100:.1f}% (goal < 10%)")
    if "memory" in results:
        r = results["memory"]
        c = r["curve"]
        out.append("")
        full = (f"{r['rss_at_window_full_mib']} MiB when the dedupe window is full -> {r['rss_end_mib']} MiB at the "
                f"end (growth after full: {r['growth_after_window_full_mib']} MiB; over the second half, from "
                f"{r['second_half_from_events']:,} events: {r['growth_second_half_mib']} MiB)"
                if r["rss_at_window_full_mib"] is not None else f"{r['rss_end_mib']} MiB (dedupe window not full yet)")
        out.append(f"RSS over {r['events']:,} events at {r['series']:,} series ({r['shape']}): {c[0]['rss_mib']} MiB at "
                   f"{c[0]['events']:,} events -> {full}; {r['ingest_valid_eps']:,.0f} ev/s in process")
        out.append(f"heap per exposed sample {r['bytes_per_exposed_sample']} B, per remembered id "
                   f"{r['dedupe_bytes_per_id']} B")
    if "simulator" in results:
        r = results["simulator"]
        out.append(f"simulator: {r['generated_per_second']:,.0f} events/s generated, "
                   f"{r['with_ledger_per_second']:,.0f} with the ledger (goal {r['goal']})")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated subset of " + ", ".join(ALL))
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, one rep, no 10M events")
    parser.add_argument("--reps", type=int, help="interleaved runs per figure (3; 1 with --quick)")
    parser.add_argument("--seconds", type=float, help="seconds per ingest run (3; 0.5 with --quick)")
    parser.add_argument("--shape", action="append", type=Shape.parse, dest="shapes",
                        help="traffic shape [name:]key=value,... (repeatable; default: uniform and zipf "
                             "7 tenants x 100 customers x 4 models); keys: tenants, customers, models, dist "
                             "(uniform|zipf), s, error_rate, cache_share, cost_usd (0|1), seed")
    parser.add_argument("--batch", action="append", type=int, dest="batches", help="events per POST (100, 500, 1000)")
    parser.add_argument("--clients", action="append", type=int, help="concurrent keep-alive clients (1, 4)")
    parser.add_argument("--max-events", type=int, default=600_000, help="events per run at most (bodies are prepared)")
    parser.add_argument("--memory-events", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.shapes = args.shapes or [UNIFORM, ZIPF]
    if args.memory_child:
        memory_child(args.memory_child, args.shapes[0], args.out)
        return 0
    args.reps = args.reps or (1 if args.quick else 3)
    args.seconds = args.seconds or (0.5 if args.quick else 3.0)
    args.batches = args.batches or ([500] if args.quick else [100, 500, 1000])
    args.clients = args.clients or ([1] if args.quick else [1, 4])
    if args.quick:
        args.max_events = min(args.max_events, 100_000)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; known: {', '.join(ALL)}")
    results: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "quick": args.quick, "reps": args.reps, "seconds_per_run": args.seconds,
                               "shapes": [asdict(s) | {"describe": s.describe()} for s in args.shapes]}
    with tempfile.TemporaryDirectory() as tmp:
        for name in BENCHES:
            if name not in args.only and not (name == "scrape" and "under_scrape" in args.only):
                continue
            started = time.perf_counter()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            try:
                results[name] = BENCHES[name](args, Path(tmp))
            except Exception as exc:  # keep what the other sections measured
                print(f"{name} failed: {exc!r}", file=sys.stderr, flush=True)
                results.setdefault("failed", {})[name] = repr(exc)
                continue
            results[name]["seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    text = table(results)
    print(text)
    for name, error in results.get("failed", {}).items():
        print(f"FAILED {name}: {error}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results | {"table": text}, indent=2, default=str))
    print(f"\nwrote {path}")
    return 1 if results.get("failed") else 0


if __name__ == "__main__":
    raise SystemExit(main())
