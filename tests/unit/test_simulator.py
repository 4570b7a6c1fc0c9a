"""The simulator's contract: seeded and deterministic, time-ordered, an exact ledger, and traffic whose
shares, error rates and log-normal medians are the scenario's own numbers.

Expectations are computed from the scenario file (weights, rates, medians), never from a previous
run, with tolerances of 5 standard errors of the sample size drawn, so the test holds for any
seed and fails when a distribution moves."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import Counter, defaultdict

import pytest

from exporter.demo.simulator import ERROR_TYPES_BACKGROUND, Ledger, Scenario, Simulator, load_scenario

START = 1_764_082_800.0  # Tuesday 2025-11-25 15:00 UTC: a weekday at the daily peak
HOUR = 3600.0


def model_shares(scenario: Scenario) -> dict[str, float]:
    """P(model) over the fleet: sum over tenants of P(tenant) * P(model | tenant)."""
    total = sum(t.weight for t in scenario.tenants)
    shares: dict[str, float] = defaultdict(float)
    for tenant in scenario.tenants:
        for model, weight in zip(tenant.models, tenant.model_weights):
            shares[model] += tenant.weight / total * weight / sum(tenant.model_weights)
    return shares


def close(observed: float, expected: float, n: int) -> bool:
    """A proportion within 5 binomial standard errors of ``expected``."""
    return abs(observed - expected) <= 5 * math.sqrt(expected * (1 - expected) / n) + 1e-12


@pytest.fixture(scope="module")
def steady() -> tuple[Scenario, list[dict], Ledger]:
    scenario = load_scenario("steady")
    ledger = Ledger()
    events = Simulator(scenario, seed=5, rate=20.0, run_id="t", ledger=ledger).events_between(START, START + HOUR)
    return scenario, events, ledger


def test_same_seed_same_events_and_another_seed_others() -> None:
    scenario = load_scenario("default")
    first = Simulator(scenario, seed=3, rate=5.0).events_between(START, START + 600)
    again = Simulator(scenario, seed=3, rate=5.0).events_between(START, START + 600)
    other = Simulator(scenario, seed=4, rate=5.0).events_between(START, START + 600)
    assert first == again and len(first) > 1000
    assert first != other


def test_events_are_in_time_order_inside_the_window_with_unique_ids(steady) -> None:
    _, events, _ = steady
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps) and START <= stamps[0] and stamps[-1] < START + HOUR
    assert len({e["id"] for e in events}) == len(events)
    # 20 events/s at the cycle's mean, flat traffic: a Poisson count per minute, so 72,000 +- 5 sd.
    assert abs(len(events) - 72_000) < 5 * math.sqrt(72_000)


def test_live_stamp_and_load_generator_batches() -> None:
    sim = Simulator(load_scenario("default"), seed=1, rate=50.0, run_id="live")
    live = sim.events_between(START, START + 30, stamp=START + 99.5)
    assert live and {e["timestamp"] for e in live} == {START + 99.5}
    batch = sim.events_at(START, 500, stamp=START + 1)
    assert len(batch) == 500 and {e["timestamp"] for e in batch} == {START + 1}
    assert len({e["id"] for e in live + batch}) == len(live) + len(batch)  # one counter across calls


def test_the_ledger_is_exactly_what_was_generated(steady) -> None:
    _, events, ledger = steady
    assert ledger.events == len(events)
    expected: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    durations: dict[str, list[float]] = defaultdict(list)
    for e in events:
        row = expected[(e["tenant"], e["customer"], e["model"])]
        row["requests"] += 1
        row["errors"] += e["status"] == "error"
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
            row[name] += e.get(name, 0)
        durations[e["model"]].append(e["duration_ms"] / 1000)
    assert {key: dict(row) for key, row in ledger.totals.items()} == {
        key: {name: row[name] for name in ledger.totals[key]} for key, row in expected.items()}
    assert ledger.durations == durations


def test_every_event_carries_the_fields_of_its_kind(steady) -> None:
    scenario, events, _ = steady
    for e in events[:5000]:
        model = scenario.models[e["model"]]
        assert {"id", "timestamp", "tenant", "customer", "model", "operation", "input_tokens", "output_tokens",
                "duration_ms", "status"} <= set(e)
        agent = e["operation"] == "agent_run"
        assert model.operation == "chat" or not agent  # only chat models run agents
        assert ("ttft_ms" in e) == (bool(model.ttft_ms) and not agent)
        assert ("llm_calls" in e) == ("tool_calls" in e) == agent
        assert ("error_type" in e) == ("error_message" in e) == (e["status"] == "error")
        assert e.get("cache_read_tokens", 0) + e.get("cache_write_tokens", 0) <= e["input_tokens"]
        assert e.get("reasoning_tokens", 0) <= e["output_tokens"]
        assert e.get("ttft_ms", 0) <= e["duration_ms"]
        assert round(e["duration_ms"], 3) == e["duration_ms"]


def test_tenant_model_and_customer_shares_follow_the_weights(steady) -> None:
    scenario, events, _ = steady
    n = len(events)
    tenants = Counter(e["tenant"] for e in events)
    total = sum(t.weight for t in scenario.tenants)
    for tenant in scenario.tenants:
        assert close(tenants[tenant.name] / n, tenant.weight / total, n), tenant.name
    models = Counter(e["model"] for e in events)
    for model, share in model_shares(scenario).items():
        assert close(models[model] / n, share, n), model
    acme = next(t for t in scenario.tenants if t.name == "acme")
    customers = Counter(e["customer"] for e in events if e["tenant"] == "acme")
    whale = acme.customer_weights[0] / sum(acme.customer_weights)
    assert close(customers[acme.customers[0]] / tenants["acme"], whale, tenants["acme"])


def test_agent_share_and_background_error_rate(steady) -> None:
    scenario, events, _ = steady
    chat = [e for e in events if scenario.models[e["model"]].operation == "chat"]
    agents = sum(e["operation"] == "agent_run" for e in chat)
    assert close(agents / len(chat), scenario.agent_share, len(chat))
    # Steady: no bursts, no incidents; an agent run fails at least at 1 - agent_success_rate.
    failure = 1 - scenario.agent_success_rate
    expected = 0.0
    for model, share in model_shares(scenario).items():
        m = scenario.models[model]
        a = scenario.agent_share if m.operation == "chat" else 0.0
        expected += share * ((1 - a) * m.error_rate + a * max(m.error_rate, failure))
    errors = sum(e["status"] == "error" for e in events)
    assert close(errors / len(events), expected, len(events))


def test_token_and_latency_medians_are_the_profiles(steady) -> None:
    """Single calls that succeeded: input and output tokens and TTFT are log-normal with the profile's
    medians and spreads (5 standard errors: 1.25 sigma / sqrt(n) for a median in log space)."""
    scenario, events, _ = steady
    by_model: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if e["operation"] != "agent_run" and e["status"] == "ok":
            by_model[e["model"]].append(e)
    for name, sample in by_model.items():
        m, n = scenario.models[name], len(sample)
        if n < 500:
            continue
        for field, median, sigma in (("input_tokens", m.input, m.sigma), ("output_tokens", m.output, m.output_sigma),
                                     ("ttft_ms", m.ttft_ms, 0.35)):
            if not median:
                continue
            logs = [math.log(max(e[field], 1)) for e in sample]
            observed = math.exp(statistics.median(logs))
            tolerance = 5 * 1.2533 * sigma / math.sqrt(n) + 1 / median  # tokens are whole numbers
            assert abs(math.log(observed / median)) <= tolerance, (name, field, observed, median)
            spread = statistics.stdev(logs)  # the sample sd's standard error is sigma / sqrt(2n)
            assert abs(spread - sigma) <= 5 * sigma / math.sqrt(2 * n) + 0.01, (name, field, spread, sigma)


def test_incidents_degrade_one_model_and_bursts_bring_rate_limits() -> None:
    """Incident scenario, no agents: inside an incident (and no burst) the degraded model fails at
    incident_error_rate with server_error or timeout only; inside a burst the error rate is 4 points
    higher and 60 % of the errors are rate_limited, the rest following the background mix."""
    scenario = dataclasses.replace(load_scenario("incident"), agent_share=0.0)
    sim = Simulator(scenario, seed=9, rate=10.0)
    events = sim.events_between(START, START + 12 * HOUR)
    bursts, incidents = sim._episodes(START, START + 12 * HOUR)  # newest first, as the generator reads them
    degraded, in_bursts = [], []
    for e in events:
        in_burst = any(b0 <= e["timestamp"] < b1 for b0, b1 in bursts)
        active = next((model for i0, i1, model in incidents if i0 <= e["timestamp"] < i1), None)
        if active == e["model"] and not in_burst:
            degraded.append(e)
        elif in_burst and active is None:
            in_bursts.append(e)
    burst_errors = [e for e in in_bursts if e["status"] == "error"]
    assert len(degraded) > 500 and len(burst_errors) > 200
    errors = sum(e["status"] == "error" for e in degraded)
    assert close(errors / len(degraded), scenario.incident_error_rate, len(degraded))
    assert {e["error_type"] for e in degraded if e["status"] == "error"} == {"server_error", "timeout"}
    background = dict(ERROR_TYPES_BACKGROUND)["rate_limited"]
    limited = sum(e["error_type"] == "rate_limited" for e in burst_errors)
    assert close(limited / len(burst_errors), 0.6 + 0.4 * background, len(burst_errors))
    shares = model_shares(scenario)
    expected = sum(share * (scenario.models[model].error_rate + 0.04) for model, share in shares.items())
    assert close(len(burst_errors) / len(in_bursts), expected, len(in_bursts))
