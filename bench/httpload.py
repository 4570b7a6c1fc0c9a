"""A minimal HTTP/1.1 keep-alive client for the benchmarks: raw asyncio streams, no client library.

Why not httpx: on these 2-core machines the load generator shares the CPU with the server it
measures; httpx spends a few hundred µs of Python per request, which at batch 100 is more than the
server's own work per event. This client writes a prepared request and reads Content-Length bytes
back, so what is measured is the server. Only what our servers answer is supported (no chunked
bodies, no redirects).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson


class Connection:
    """One keep-alive connection; ``request`` returns (status, headers, body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> "Connection":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**24)
        return self

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        assert self.reader is not None and self.writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        response_headers = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            response_headers[key.strip().lower()] = value.strip()
        if "content-length" not in response_headers:
            raise RuntimeError(f"response without Content-Length from {path}: {status_line}")
        data = await self.reader.readexactly(int(response_headers["content-length"]))
        return int(status_line.split()[1]), response_headers, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass


@dataclass
class LoadResult:
    """One load run: events/s accepted (the figure compared), latency, anything not 200."""

    clients: int
    batch: int
    seconds: float
    requests: int
    events_sent: int
    accepted: int
    events_per_second: float
    not_200: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else 0.0


async def post_load(port: int, bodies: list[bytes], batch: int, seconds: float, clients: int,
                    count_accepted: bool = True) -> LoadResult:
    """POST ``bodies`` over ``clients`` keep-alive connections until ``seconds`` pass or they run
    out. ``count_accepted=False`` (the read-only ceiling server) counts events sent instead."""
    connections = [await Connection("127.0.0.1", port).open() for _ in range(clients)]
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    totals = {"requests": 0, "accepted": 0, "not_200": 0}
    next_body = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(conn: Connection) -> None:
        nonlocal next_body
        while next_body < len(bodies) and time.perf_counter() < deadline:
            body = bodies[next_body]
            next_body += 1
            sent = time.perf_counter()
            status, _, data = await conn.request("POST", "/v1/events", body, headers)
            latencies.append((time.perf_counter() - sent) * 1000)
            totals["requests"] += 1
            if status != 200:
                totals["not_200"] += 1
            elif count_accepted:
                totals["accepted"] += orjson.loads(data)["accepted"]
            else:
                totals["accepted"] += batch

    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        for conn in connections:
            await conn.close()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return LoadResult(clients=clients, batch=batch, seconds=round(elapsed, 3), requests=totals["requests"],
                      events_sent=totals["requests"] * batch, accepted=totals["accepted"],
                      events_per_second=totals["accepted"] / elapsed, not_200=totals["not_200"],
                      latency_ms={name: round(_percentile(latencies, q), 2)
                                  for name, q in (("p50", 0.5), ("p99", 0.99))})


# What Prometheus 3 sends when it scrapes (it also accepts the protobuf format, which we do not serve).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;escaping=underscores,"
                     "application/openmetrics-text;version=0.0.1;q=0.9,text/plain;version=1.0.0;escaping=underscores;q=0.5,"
                     "text/plain;version=0.0.4;q=0.4,*/*;q=0.1")
SCRAPE_HEADERS = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip", "User-Agent": "Prometheus/3.0.0"}


async def scrape(conn: Connection) -> tuple[float, int, dict[str, str]]:
    """One /metrics fetch as Prometheus does it: seconds, bytes on the wire, response headers."""
    start = time.perf_counter()
    status, headers, data = await conn.request("GET", "/metrics", headers=SCRAPE_HEADERS)
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    return time.perf_counter() - start, len(data), headers
