"""Hostile requests against the real exporter process: decompression bombs, span/event bombs and a
tenant flooding maximal legal batches. Each bomb must be refused (413/400) with the exporter alive,
its peak RSS growth bounded by a small multiple of the body limit; the fairness probe measures how
long a 1-event request of tenant A waits while tenant B sends its largest legal batches back to back.

Figures are printed (``-s`` or the junit properties); the wall-clock bounds (1 s per bomb, 250 ms p99
for the probe) are asserted only in the ``slow`` variants, as timing on a shared machine is noise.
"""

from __future__ import annotations

import gzip
import os
import statistics
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from harness import ExporterProcess

OTLP = "/v1/otlp/v1/traces"
BODY_LIMIT = 10 * 1024 * 1024  # the default web.max-body-bytes
MAX_EVENTS = 10_000  # the default web.max-batch-events
RSS_BOUND = 6 * BODY_LIMIT  # "a small multiple of the body limit"


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS, so each bomb's peak is its own."""
    with open(f"/proc/{pid}/clear_refs", "w") as handle:
        handle.write("5")


def gzip_bomb(payload_unit: bytes, size: int) -> bytes:
    """``size`` bytes of ``payload_unit`` repeated, gzip-compressed, built in pieces (never all in memory)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = payload_unit * (1 << 20 // len(payload_unit))
    parts, written = [], 0
    while written < size:
        parts.append(compressor.compress(block))
        written += len(block)
    parts.append(compressor.flush())
    return b"".join(parts)


def empty_spans(count: int) -> bytes:
    """An ExportTraceServiceRequest with ``count`` empty spans in one scope, written as wire bytes."""
    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload
    scope = b"\x12\x00" * count  # field 2 (spans), length 0
    return field(1, field(2, scope))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


BOMBS: dict[str, tuple[str, Callable[[], bytes], dict[str, str], tuple[int, ...]]] = {
    # name: (path, body builder, headers, accepted statuses)
    "events-gzip-zeros": ("/v1/events", lambda: gzip_bomb(b"\0", 1 << 30),
                          {"Content-Type": "application/json", "Content-Encoding": "gzip"}, (413,)),
    "events-gzip-objects": ("/v1/events", lambda: b"".join([gzip.compress(b'{"events": ['),
                                                           gzip_bomb(b"{},", 9 << 20)]),
                            {"Content-Type": "application/json", "Content-Encoding": "gzip"}, (413, 400)),
    "events-json-objects": ("/v1/events", lambda: b'{"events": [' + b"{}," * 3_000_000 + b"{}]}",
                            {"Content-Type": "application/json"}, (413,)),
    "events-ndjson-lines": ("/v1/events", lambda: b"{}\n" * 3_000_000,
                            {"Content-Type": "application/x-ndjson"}, (413,)),
    "otlp-gzip-zeros": (OTLP, lambda: gzip_bomb(b"\0", 1 << 30),
                        {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, (413,)),
    "otlp-protobuf-spans": (OTLP, lambda: gzip.compress(empty_spans(4_000_000)),
                            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, (413,)),
    "otlp-json-spans": (OTLP, lambda: b'{"resourceSpans": [{"scopeSpans": [{"spans": [' + b"{}," * 3_000_000
                        + b'{}]}]}]}', {"Content-Type": "application/json"}, (413,)),
    "otlp-gzip-trailing-garbage": (OTLP, lambda: gzip.compress(empty_spans(3)) + b"garbage",
                                   {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, (400,)),
}


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    with ExporterProcess(tmp_path_factory.mktemp("hostile")) as process:
        yield process


def fire_bomb(exporter: ExporterProcess, name: str) -> tuple[int, float, int]:
    """(status, seconds to answer, peak RSS growth in bytes) of one bomb."""
    path, build, headers, _ = BOMBS[name]
    body = build()
    pid = exporter.proc.pid
    reset_peak(pid)
    before = status_kib(pid, "VmRSS")
    start = time.perf_counter()
    response = httpx.post(exporter.url + path, content=body, headers=headers, timeout=60)
    elapsed = time.perf_counter() - start
    growth = (status_kib(pid, "VmHWM") - before) * 1024
    assert response.status_code in BOMBS[name][3], (name, response.status_code, response.text[:300])
    assert "error" in response.json()
    assert httpx.get(exporter.url + "/healthz").status_code == 200
    print(f"\nbomb {name}: {len(body):,} bytes on the wire -> {response.status_code} in {elapsed * 1000:.0f} ms, "
          f"peak RSS +{growth / 2**20:.1f} MiB ({response.json()['error'][:90]})")
    return response.status_code, elapsed, growth


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_refused_with_bounded_memory(exporter, name, record_property):
    status, elapsed, growth = fire_bomb(exporter, name)
    record_property("seconds", round(elapsed, 3))
    record_property("rss_growth_mib", round(growth / 2**20, 1))
    assert growth < RSS_BOUND, f"{name}: peak RSS grew {growth / 2**20:.0f} MiB"
    assert "llm_exporter_rejections_total" in exporter.metrics_text()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_answered_within_a_second(exporter, name):
    _, elapsed, _ = fire_bomb(exporter, name)
    assert elapsed < 1.0, f"{name} took {elapsed:.2f} s"


# --- fairness ----------------------------------------------------------------------------------
def maximal_legal_batch(tenant: str, now: float, n: int = MAX_EVENTS, slow_path: bool = True) -> bytes:
    """B's largest legal request: ``n`` valid events, one of them invalid so the whole batch takes the
    per-event validation path (the most work a legal body can ask for)."""
    events: list[dict[str, Any]] = [
        {"id": f"{tenant}-{now}-{i}", "timestamp": now - 1, "tenant": tenant, "customer": f"c{i % 50}",
         "model": "gpt-4o", "input_tokens": 1000 + i, "output_tokens": 100, "duration_ms": 900.0,
         "status": "ok"} for i in range(n)]
    if slow_path:
        events[0]["input_tokens"] = -1
    return orjson.dumps({"events": events})


def fairness_probe(exporter: ExporterProcess, seconds: float = 6.0, flooders: int = 2) -> dict[str, float]:
    """p50/p99 latency of tenant A's 1-event requests while tenant B floods maximal batches."""
    stop = threading.Event()
    flood_count = [0]

    def flood() -> None:
        with httpx.Client(base_url=exporter.url, timeout=60) as client:
            while not stop.is_set():
                body = maximal_legal_batch("tenant-b", time.time())
                response = client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
                assert response.status_code == 200, response.text[:300]
                flood_count[0] += 1

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(flooders)]
    for thread in threads:
        thread.start()
    latencies = []
    try:
        with httpx.Client(base_url=exporter.url, timeout=60) as client:
            time.sleep(0.5)  # the flood is under way
            deadline = time.monotonic() + seconds
            n = 0
            while time.monotonic() < deadline:
                event = {"id": f"a-{os.getpid()}-{time.time()}-{n}", "timestamp": time.time() - 1, "tenant": "tenant-a",
                         "customer": "c1", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5,
                         "duration_ms": 100.0, "status": "ok"}
                start = time.perf_counter()
                response = client.post("/v1/events", content=orjson.dumps({"events": [event]}),
                                       headers={"Content-Type": "application/json"})
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 200 and response.json()["accepted"] == 1
                n += 1
                time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    figures = {"probes": len(latencies), "p50_ms": statistics.median(latencies) * 1000, "p99_ms": p99 * 1000,
               "max_ms": latencies[-1] * 1000, "flood_batches": flood_count[0]}
    print(f"\nfairness: tenant A 1-event p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms, "
          f"max {figures['max_ms']:.0f} ms over {len(latencies)} probes, while tenant B sent "
          f"{flood_count[0]} batches of {MAX_EVENTS} events")
    return figures


def test_fairness_probe_prints_p99(exporter, record_property):
    figures = fairness_probe(exporter, seconds=3.0)
    for key, value in figures.items():
        record_property(key, round(value, 1))
    assert figures["flood_batches"] >= 1 and figures["probes"] >= 10


@pytest.mark.slow
def test_one_event_waits_less_than_250ms_behind_a_maximal_batch(exporter):
    figures = fairness_probe(exporter, seconds=15.0)
    assert figures["p99_ms"] < 250, figures
