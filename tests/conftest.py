"""Shared fixtures. ``sim_stack`` is one exporter (simulator on) scraped by one real Prometheus with
the project's rule files loaded, shared by the dashboard, rule and metric-existence tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

from harness import ExporterProcess, PrometheusProcess, rule_files, wait_until

# A model missing from the price table. The simulator only uses priced models, so the fixture
# sends one event for it (tenant acme): the unpriced-model panel and the metric of the
# LLMUnpricedModel alert then have data. Its name sorts after claude-sonnet-4-5, acme's first model,
# so it is never the "first" model a test picks from a label_values() answer.
UNPRICED_MODEL = "inhouse-finetune-v1"


@dataclass
class SimStack:
    exporter: ExporterProcess
    prometheus: PrometheusProcess
    started: float
    unpriced_model: str = UNPRICED_MODEL


def probe_events(now: float) -> list[dict[str, Any]]:
    """What the simulator never sends: an event for an unpriced model and an invalid event (so
    ``llm_exporter_unpriced_events_total`` and ``llm_exporter_rejections_total`` have series)."""
    unpriced = {"id": "probe-unpriced-1", "timestamp": now, "tenant": "acme", "customer": "acme-cust-001",
                "model": UNPRICED_MODEL, "input_tokens": 1200, "output_tokens": 80, "duration_ms": 900,
                "ttft_ms": 150, "status": "ok"}
    invalid = dict(unpriced, id="probe-invalid-1", input_tokens=-1)
    return [unpriced, invalid]


@pytest.fixture(scope="session")
def sim_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimStack]:
    workdir = tmp_path_factory.mktemp("sim-stack")
    config = workdir / "config.yaml"
    config.write_text("tenants:\n  acme: {budget_usd_per_day: 50}\n  globex: {budget_usd_per_day: 20}\n")
    with ExporterProcess(workdir / "exporter", "--simulator.enabled=true", "--simulator.rate=300",
                         "--simulator.scenario=incident", "--simulator.speed=60",
                         # A small per-tenant idempotency window, so that size evictions happen within
                         # seconds: llm_exporter_dedupe_evictions_total{tenant,reason} is born at the
                         # first eviction, and the exporter-health panel must have data to be tested.
                         "--dedupe.max-entries-per-tenant=500",
                         f"--config.file={config}") as exporter:
        with PrometheusProcess(workdir / "prometheus", [f"127.0.0.1:{exporter.port}"], rule_files()) as prom:
            started = time.time()
            body = exporter.post(probe_events(time.time())).json()
            assert (body["accepted"], body["rejected"]) == (1, 1), body
            wait_until(lambda: prom.query('sum(rate(llm_requests_total[30s])) > 0'), timeout=60,
                       what="simulated traffic in Prometheus")
            wait_until(lambda: prom.query("llm_exporter_unpriced_events_total")
                       and prom.query("llm_exporter_rejections_total"), timeout=30,
                       what="the probe events' series in Prometheus")
            yield SimStack(exporter, prom, started)
