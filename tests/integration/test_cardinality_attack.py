"""Cardinality attack on a real exporter process: one tenant sends a flood of distinct customer ids and
model names. The caps must hold (customer and unknown-model values fold into ``__other__``), the
overflow must be counted exactly, and neither ``/metrics`` nor the process' memory may grow with the
size of the attack once the caps are full.

The fast variant (100k customers, 2k models) runs in ``make test``; the full one (1M customers, 10k
models) is ``slow``. Both print their figures (series, /metrics bytes, RSS).

About "series per tenant <= cap + 1": the per-label caps bound each label's values (customers per tenant
<= 1000, unknown models <= 50, + ``__other__`` each), not the number of *combinations*; an honest tenant
whose 1000 customers use three models already has 3000 ``llm_requests_total`` series. So the flood test
asserts each label's bound and the exact series count the caps imply, and
``test_label_combinations_are_capped_per_tenant`` checks the cap on their product
(``--limits.max-combinations-per-tenant``, 10,000 (customer, model, provider) per tenant), which this
file found missing: 1000 customers x 20 priced models x 2 statuses made 40,000 series, and with every
known provider and operation it would have been millions.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import ExporterProcess

MAX_CUSTOMERS = 1000  # the defaults under attack
MAX_UNKNOWN_MODELS = 50
MAX_COMBINATIONS = 10_000
OTHER = "__other__"
KNOWN_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-haiku-4-5", "gemini-2.5-flash",
                "gemini-2.5-pro", "gpt-4.1", "gpt-4.1-mini", "o3", "o4-mini", "claude-opus-4-1", "deepseek-chat",
                "mistral-large", "llama-3.3-70b-versatile", "gpt-5", "gpt-5-mini", "claude-opus-4-5", "gemini-2.0-flash",
                "deepseek-reasoner", "gpt-4.1-nano")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def event(i: int, tenant: str, customer: str, model: str, now: float, **extra: object) -> bytes:
    return orjson.dumps({"id": f"{tenant}-{i}", "timestamp": now - 1, "tenant": tenant, "customer": customer,
                         "model": model, "input_tokens": 10, "output_tokens": 2, "duration_ms": 50, "status": "ok",
                         **extra})


def post_all(exporter: ExporterProcess, bodies: list[bytes], batch: int = 10_000) -> int:
    accepted = 0
    for start in range(0, len(bodies), batch):
        body = b'{"events":[' + b",".join(bodies[start:start + batch]) + b"]}"
        response = exporter.client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text[:300]
        assert response.json()["rejected"] == 0, response.json()["errors"][:3]
        accepted += response.json()["accepted"]
    return accepted


def read_metrics(exporter: ExporterProcess) -> tuple[str, dict[str, list]]:
    text = exporter.metrics_text()
    by_name: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            by_name.setdefault(s.name, []).append(s)
    return text, by_name


def overflow(by_name: dict[str, list]) -> dict[str, float]:
    return {s.labels["label"]: s.value for s in by_name.get("llm_exporter_overflow_total", [])}


def run_flood(tmp_path: Path, customers: int, models: int) -> dict[str, object]:
    tenant = "mallory"
    with ExporterProcess(tmp_path / "exporter") as exporter:
        pid = exporter.proc.pid
        now = time.time()
        # An honest neighbour first: 200 customers on 3 known models.
        honest = [event(i, "acme", f"acme-{i % 200}", KNOWN_MODELS[i % 3], now) for i in range(2000)]
        post_all(exporter, honest)
        text, _ = read_metrics(exporter)
        before = {"bytes": len(text), "rss_kib": rss_kib(pid)}

        # The flood, in order, so the first-come-first-kept caps are predictable: event i names
        # customer i (each once) and model i % models (unknown to the price table).
        flood = [event(i, tenant, f"cust-{i:07d}", f"model-{i % models:05d}", now) for i in range(customers)]
        tenth = customers // 10
        post_all(exporter, flood[:tenth])
        text, _ = read_metrics(exporter)
        at_tenth = {"bytes": len(text), "rss_kib": rss_kib(pid)}
        started = time.perf_counter()
        accepted = tenth + post_all(exporter, flood[tenth:])
        seconds = time.perf_counter() - started
        assert accepted == customers
        text, by_name = read_metrics(exporter)
        after = {"bytes": len(text), "rss_kib": rss_kib(pid), "peak_rss_kib": rss_kib(pid, "VmHWM")}

        # What the caps must have done, computed independently: first come, first kept.
        kept_customers = {f"cust-{i:07d}" for i in range(min(customers, MAX_CUSTOMERS))}
        kept_models = {f"model-{m:05d}" for m in range(min(models, MAX_UNKNOWN_MODELS))}
        expected_series = Counter()
        customer_overflow = model_overflow = 0
        for i in range(customers):
            customer, model = f"cust-{i:07d}", f"model-{i % models:05d}"
            if customer not in kept_customers:
                customer, customer_overflow = OTHER, customer_overflow + 1
            if model not in kept_models:
                model, model_overflow = OTHER, model_overflow + 1
            expected_series[(customer, model)] += 1

        requests = [s for s in by_name["llm_requests_total"] if s.labels["tenant"] == tenant]
        series = Counter({(s.labels["customer"], s.labels["model"]): s.value for s in requests})
        assert len({c for c, _ in series}) <= MAX_CUSTOMERS + 1
        assert len({m for _, m in series}) <= MAX_UNKNOWN_MODELS + 1
        assert series == expected_series, "the caps kept other values than first come, first kept"
        assert sum(series.values()) == customers, "every flooded event is counted (under __other__ if need be)"
        assert {label: n for label, n in overflow(by_name).items() if n} == {
            "customer": customer_overflow, "model": model_overflow}
        honest_requests = [s for s in by_name["llm_requests_total"] if s.labels["tenant"] == "acme"]
        assert sum(s.value for s in honest_requests) == 2000 and len(honest_requests) == 600  # 200 x 3 models
        assert all(s.labels["customer"] != OTHER for s in honest_requests), "the neighbour is untouched"
        families = {s.name for samples in by_name.values() for s in samples}
        assert "llm_exporter_overflow_total" in families

        # Bounded: once the caps are full, more attack adds neither series nor (beyond the dedupe
        # window's ~100-200 bytes per remembered id) memory.
        dedupe_growth_kib = (customers - tenth) * 250 // 1024
        assert after["bytes"] <= at_tenth["bytes"] * 1.02, (at_tenth, after)
        assert after["bytes"] < 2_000_000
        assert after["rss_kib"] - at_tenth["rss_kib"] < dedupe_growth_kib + 64 * 1024, (at_tenth, after)
        report = {"customers": customers, "models": models, "attack_seconds": round(seconds, 1),
                  "tenant_series": len(series), "overflow": overflow(by_name),
                  "metrics_bytes": (before["bytes"], at_tenth["bytes"], after["bytes"]),
                  "rss_mib": tuple(round(x / 1024) for x in (before["rss_kib"], at_tenth["rss_kib"],
                                                             after["rss_kib"], after["peak_rss_kib"]))}
        print(f"\ncardinality flood: {report}")
        return report


def test_customer_and_model_flood_fast(tmp_path):
    run_flood(tmp_path, customers=100_000, models=2_000)


@pytest.mark.slow
def test_customer_and_model_flood_full(tmp_path):
    run_flood(tmp_path, customers=1_000_000, models=10_000)


def test_label_combinations_are_capped_per_tenant(tmp_path):
    """Every value within its cap, but every combination: 1000 customers x 20 priced models x 2 statuses.
    The first 10,000 (customer, model, provider) combinations keep their customer; the events of the
    others count under customer ``__other__`` and in ``overflow_total{label="series"}``, exactly."""
    with ExporterProcess(tmp_path / "exporter") as exporter:
        now = time.time()
        per_customer = 2 * len(KNOWN_MODELS)  # every priced model, ok and error
        bodies = [event(i, "mallory", f"cust-{i // per_customer:04d}", KNOWN_MODELS[(i // 2) % len(KNOWN_MODELS)],
                        now, status="error" if i % 2 else "ok", error_type="timeout")
                  for i in range(MAX_CUSTOMERS * per_customer)]
        rss_before = rss_kib(exporter.proc.pid)
        bytes_before = len(exporter.metrics_text())
        assert post_all(exporter, bodies) == len(bodies)
        text, by_name = read_metrics(exporter)
        series = [s for s in by_name["llm_requests_total"] if s.labels["tenant"] == "mallory"]
        print(f"\ncombination attack: {len(bodies)} events -> {len(series)} llm_requests_total series, "
              f"/metrics {bytes_before:,} -> {len(text):,} bytes, RSS {rss_before // 1024} -> "
              f"{rss_kib(exporter.proc.pid) // 1024} MiB, overflow {overflow(by_name)}")
        assert len(set(KNOWN_MODELS)) == len(KNOWN_MODELS), "the arithmetic below needs distinct models"
        combinations = MAX_CUSTOMERS * len(KNOWN_MODELS)  # 20,000, each seen twice (ok and error)
        assert sum(s.value for s in series) == len(bodies)
        assert {label: n for label, n in overflow(by_name).items() if n} == {
            "series": 2 * (combinations - MAX_COMBINATIONS)}
        # the kept combinations x 2 statuses, plus customer __other__ x each model x 2 statuses
        assert len(series) == 2 * MAX_COMBINATIONS + 2 * len(KNOWN_MODELS)
        assert all(s.value == 1 for s in series if s.labels["customer"] != OTHER)
