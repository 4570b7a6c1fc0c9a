"""Accuracy against the simulator's ledger: an hour of the default fleet is POSTed to a real
exporter, a real Prometheus scrapes it, and PromQL totals per tenant and per model must equal the
ledger exactly (counters) or land in the right bucket (quantiles)."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from exporter.demo.simulator import Ledger, Simulator, load_scenario
from groundtruth import bucket_around, expected_cost, true_quantile
from harness import ExporterProcess, PrometheusProcess


def test_prometheus_totals_match_the_ledger(tmp_path):
    ledger = Ledger()
    scenario = load_scenario("incident")
    sim = Simulator(scenario, seed=7, rate=3.0, run_id="accuracy", ledger=ledger)
    end = time.time() - 60
    events = sim.events_between(end - 3600, end)
    # The last real hour: at the daily trough and on a weekend it holds a fraction of 3 events/s
    # (0.9: room for Poisson noise), so the floor holds at any hour of any day.
    floor = 0.9 * 3.0 * 3600 * (1 - scenario.diurnal_amplitude) * min(1.0, scenario.weekend_factor)
    assert ledger.events == len(events) > floor, "an hour at 3 events/s with the daily and weekly cycles"

    cost_by = {"tenant": defaultdict(float), "model": defaultdict(float)}
    for event in events:
        cost = expected_cost(event)
        cost_by["tenant"][event["tenant"]] += cost
        cost_by["model"][event["model"]] += cost
    totals = {label: defaultdict(lambda: defaultdict(float)) for label in ("tenant", "model")}
    for (tenant, _customer, model), row in ledger.totals.items():
        for label, value in (("tenant", tenant), ("model", model)):
            for key, amount in row.items():
                totals[label][value][key] += amount

    with ExporterProcess(tmp_path / "exporter") as exporter, \
            PrometheusProcess(tmp_path / "prom", [f"127.0.0.1:{exporter.port}"]) as prom:
        for start in range(0, len(events), 1000):
            body = exporter.post(events[start:start + 1000]).json()
            assert body["rejected"] == 0 and body["duplicates"] == 0, body["errors"][:3]
        prom.wait_for_scrape_after(time.time())

        for label in ("tenant", "model"):
            requests = prom.by_label(f"sum by ({label}) (llm_requests_total)", label)
            errors = prom.by_label(f'sum by ({label}) (llm_requests_total{{status="error"}})', label)
            inputs = prom.by_label(f'sum by ({label}) (llm_tokens_total{{token_type="input"}})', label)
            outputs = prom.by_label(f'sum by ({label}) (llm_tokens_total{{token_type="output"}})', label)
            cache = prom.by_label(f'sum by ({label}) (llm_token_details_total{{token_type="cache_read"}})', label)
            cost = prom.by_label(f"sum by ({label}) (llm_cost_usd_total)", label)
            truth = totals[label]
            assert set(requests) == set(truth)
            for value, row in truth.items():
                assert requests[value] == row["requests"], (label, value)
                assert errors.get(value, 0) == row["errors"], (label, value)
                assert inputs[value] == row["input_tokens"] and outputs[value] == row["output_tokens"], (label, value)
                assert cache.get(value, 0) == row["cache_read_tokens"], (label, value)
                assert cost[value] == pytest.approx(cost_by[label][value], rel=1e-9, abs=1e-9), (label, value)

        p95 = prom.by_label("histogram_quantile(0.95, sum by (model, le) (llm_request_duration_seconds_bucket))",
                            "model")
        for model, durations in ledger.durations.items():
            if len(durations) < 50:
                continue
            lower, upper = bucket_around(true_quantile(durations, 0.95))
            assert lower <= p95[model] <= upper, (model, p95[model], (lower, upper))
