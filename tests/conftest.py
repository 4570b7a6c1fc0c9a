"""Shared fixtures. ``sim_stack`` is one exporter (simulator on) scraped by one real Prometheus with
the project's rule files loaded, shared by the dashboard, rule and metric-existence tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import pytest

from harness import ExporterProcess, PrometheusProcess, rule_files, wait_until


@dataclass
class SimStack:
    exporter: ExporterProcess
    prometheus: PrometheusProcess
    started: float


@pytest.fixture(scope="session")
def sim_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimStack]:
    workdir = tmp_path_factory.mktemp("sim-stack")
    config = workdir / "config.yaml"
    config.write_text("tenants:\n  acme: {budget_usd_per_day: 50}\n  globex: {budget_usd_per_day: 20}\n")
    with ExporterProcess(workdir / "exporter", "--simulator.enabled=true", "--simulator.rate=300",
                         "--simulator.scenario=incident", "--simulator.speed=60",
                         f"--config.file={config}") as exporter:
        with PrometheusProcess(workdir / "prometheus", [f"127.0.0.1:{exporter.port}"], rule_files()) as prom:
            started = time.time()
            wait_until(lambda: prom.query('sum(rate(llm_requests_total[30s])) > 0'), timeout=60,
                       what="simulated traffic in Prometheus")
            yield SimStack(exporter, prom, started)
