"""Load generator: POSTs simulated events over HTTP with keep-alive connections and reports
achieved events/s, POST latency percentiles and non-2xx counts. The benchmarks use it too.

Bodies are serialised before the clock starts (a client that spends its CPU building JSON would
measure itself, not the exporter), each with fresh event ids so nothing is a duplicate.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson

from .simulator import Simulator, load_scenario


@dataclass
class LoadReport:
    url: str
    batch: int
    concurrency: int
    duration_s: float
    requests: int
    events_sent: int
    events_per_second: float
    accepted: int
    duplicates: int
    rejected: int
    status_codes: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    errors: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        lat = self.latency_ms
        return (f"{self.events_per_second:,.0f} events/s over {self.duration_s:.1f}s "
                f"({self.requests} POSTs of {self.batch}, concurrency {self.concurrency}); "
                f"latency ms p50 {lat.get('p50', 0):.1f} p95 {lat.get('p95', 0):.1f} p99 {lat.get('p99', 0):.1f}; "
                f"accepted {self.accepted}, duplicates {self.duplicates}, rejected {self.rejected}; "
                f"non-2xx {self.non_2xx}, connection errors {self.errors}")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def make_bodies(count: int, batch: int, scenario: str = "steady", seed: int = 1, run_id: str = "") -> list[bytes]:
    """``count`` JSON bodies of ``batch`` events each, timestamped now."""
    sim = Simulator(load_scenario(scenario), seed, rate=1.0, run_id=run_id or f"load-{time.time_ns():x}")
    now = time.time()
    bodies = []
    for _ in range(count):
        bodies.append(orjson.dumps({"events": sim.events_at(now, batch, stamp=now)}))
    return bodies


async def run_load(url: str, bodies: list[bytes], batch: int, duration: float, rate: float = 0.0,
                   concurrency: int = 4, token: str | None = None) -> LoadReport:
    """Send ``bodies`` (cycling is refused: ids would repeat) until ``duration`` or the bodies run out.
    ``rate`` caps events/s (0 = as fast as the exporter answers)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    totals = Counter[str]()
    errors = 0
    next_body = 0
    start = time.perf_counter()
    deadline = start + duration
    interval = batch / rate if rate > 0 else 0.0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_body, errors
        while True:
            now = time.perf_counter()
            if now >= deadline or next_body >= len(bodies):
                return
            index = next_body
            next_body += 1
            if interval:
                due = start + index * interval
                if due > now:
                    await asyncio.sleep(due - now)
            sent = time.perf_counter()
            try:
                response = await client.post("/v1/events", content=bodies[index], headers=headers)
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - sent) * 1000)
            codes[str(response.status_code)] += 1
            if response.status_code == 200:
                body = orjson.loads(response.content)
                totals.update({k: body[k] for k in ("accepted", "duplicates", "rejected")})

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    requests = sum(codes.values())
    return LoadReport(
        url=url, batch=batch, concurrency=concurrency, duration_s=elapsed, requests=requests,
        events_sent=requests * batch, events_per_second=totals["accepted"] / elapsed if elapsed else 0.0,
        accepted=totals["accepted"], duplicates=totals["duplicates"], rejected=totals["rejected"],
        status_codes=dict(codes), non_2xx=sum(n for code, n in codes.items() if not code.startswith("2")),
        errors=errors,
        latency_ms={f"p{int(q * 100)}": percentile(latencies, q) for q in (0.5, 0.95, 0.99)} | {
            "max": latencies[-1] if latencies else 0.0},
    )
