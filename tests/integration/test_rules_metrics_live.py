"""The rule files against the live exporter and a real Prometheus (``sim_stack``).

* Every metric name an expression in ``prometheus/rules/*.yml`` reads is in a live scrape of the
  exporter: renaming a metric (or a histogram's buckets) without its rules breaks the build.
* Prometheus loaded every group and rule of the files, and every rule evaluates without error.
* Every recording rule has data once warmed up, except those in ``NO_DATA_ALLOWED`` (with the
  reason); the allow-list is asserted to be exactly the rules without data, so it cannot go stale.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness import rfc3339_to_unix
from test_dashboards_live import PROMETHEUS_SERIES, exposed_names, promql_metric_names, rule_documents, rule_exprs

# Recording rules that legitimately have no data under the simulator: name -> reason. Empty: the
# fixture's simulator (scenario incident, 300 events/s, budgets for acme and globex, agent runs)
# feeds every rule.
NO_DATA_ALLOWED: dict[str, str] = {}

# Groups with `interval: 1m` first run up to a minute after Prometheus starts and need two scrapes
# before increase()/rate() answer: allow two evaluations plus margin after the stack started.
WARM_UP_SECONDS = 150


def _recording_rules() -> list[str]:
    names: list[str] = []
    for doc in rule_documents().values():
        for group in doc.get("groups", []):
            names += [r["record"] for r in group.get("rules", []) if "record" in r and r["record"] not in names]
    return names


RECORDING_RULES = _recording_rules()


def _metrics_read_by_rules() -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for file_name, rule, expr in rule_exprs():
        for name in promql_metric_names(expr):
            if name not in RECORDING_RULES and name not in PROMETHEUS_SERIES:
                used.setdefault(name, []).append(f"{file_name}: {rule}")
    return used


METRICS_READ = _metrics_read_by_rules()


@pytest.fixture(scope="module")
def scraped(sim_stack: Any) -> set[str]:
    """Sample names of a live scrape, once every rule metric is there (counters with labels appear
    with their first event: the first error, the fixture's unpriced and invalid events)."""
    deadline = time.monotonic() + 30
    while True:
        names = exposed_names(sim_stack.exporter.metrics_text())
        if set(METRICS_READ) <= names or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def test_rule_files_read_exporter_metrics() -> None:
    assert len(METRICS_READ) >= 8, sorted(METRICS_READ)
    expected = {"llm_cost_usd_total", "llm_request_duration_seconds_bucket", "llm_exporter_events_total"}
    assert expected <= set(METRICS_READ)


@pytest.mark.parametrize("name", sorted(METRICS_READ))
def test_rule_metric_is_exported(scraped: set[str], name: str) -> None:
    assert name in scraped, (f"{name}, read by {'; '.join(METRICS_READ[name][:4])}, is not in the live exporter's "
                             "/metrics: renamed without its rules?")


def _loaded_groups(prom: Any) -> list[dict[str, Any]]:
    return prom._api("/api/v1/rules", {})["groups"]


def test_prometheus_loaded_every_rule_and_evaluates_it_without_error(sim_stack: Any) -> None:
    prom = sim_stack.prometheus
    expected = {(g["name"], r.get("record") or r.get("alert"))
                for doc in rule_documents().values() for g in doc["groups"] for r in g["rules"]}
    deadline = time.monotonic() + max(10.0, sim_stack.started + WARM_UP_SECONDS - time.time())
    while True:
        groups = _loaded_groups(prom)
        rules = [(g["name"], r) for g in groups for r in g["rules"]]
        pending = [r["name"] for _, r in rules if r["health"] == "unknown"]  # not evaluated yet
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert {(g, r["name"]) for g, r in rules} == expected
    assert len(rules) == sum(len(g["rules"]) for doc in rule_documents().values() for g in doc["groups"])
    assert not pending, f"rules never evaluated: {pending}"
    errors = {r["name"]: r.get("lastError") for _, r in rules if r["health"] != "ok"}
    assert not errors, f"rules failing to evaluate: {errors}"


def test_no_data_allow_list_names_recording_rules() -> None:
    assert set(NO_DATA_ALLOWED) <= set(RECORDING_RULES)
    assert all(reason.strip() for reason in NO_DATA_ALLOWED.values())


@pytest.mark.parametrize("rule", RECORDING_RULES)
def test_recording_rule_has_data(sim_stack: Any, rule: str) -> None:
    prom = sim_stack.prometheus
    deadline = time.monotonic() + max(10.0, sim_stack.started + WARM_UP_SECONDS - time.time())
    if rule in NO_DATA_ALLOWED:
        # No data is only meaningful once the rule was evaluated after warm-up.
        def evaluated_late() -> bool:
            for group in _loaded_groups(prom):
                for r in group["rules"]:
                    if r["name"] == rule and r["health"] == "ok" and \
                            rfc3339_to_unix(r["lastEvaluation"]) > sim_stack.started + 10:
                        return True
            return False

        while not evaluated_late():
            assert time.monotonic() < deadline, f"{rule} was not evaluated after warm-up"
            time.sleep(1)
        result = prom.query(rule)
        assert not result, (f"{rule} has data now ({result[:2]}): remove it from NO_DATA_ALLOWED "
                            f"({NO_DATA_ALLOWED[rule]})")
        return
    while not prom.query(rule):
        waited = time.time() - sim_stack.started
        assert time.monotonic() < deadline, (f"recording rule {rule} has no data {waited:.0f}s after the stack "
                                             "started (add it to NO_DATA_ALLOWED with a reason if that is right "
                                             "under the simulator)")
        time.sleep(1)
