"""The ingest function: counting, dedupe, caps, persistence across restarts, store failure."""

from __future__ import annotations

import sqlite3
import time

import pytest

from exporter.config import ConfigError
from exporter.core.aggregate import OTHER
from exporter.core.store import StoreUnavailable
from helpers import ev, make_exporter, sample


def test_counts_tokens_cost_and_histograms():
    ex = make_exporter()
    result = ex.aggregator.ingest([
        ev(input_tokens=1000, output_tokens=500, cache_read_tokens=400, ttft_ms=300, duration_ms=1300),
        ev(customer="c2", status="error", error_type="timeout", duration_ms=30_000),
    ], "api")
    assert (result.accepted, result.duplicates, result.rejected) == (2, 0, 0)
    labels = dict(tenant="acme", model="gpt-4o", provider="openai")
    assert sample(ex, "llm_requests_total", customer="c1", operation="chat", status="ok", **labels) == 1
    assert sample(ex, "llm_requests_total", customer="c2", operation="chat", status="error", **labels) == 1
    assert sample(ex, "llm_request_errors_total", operation="chat", error_type="timeout", **labels) == 1
    assert sample(ex, "llm_tokens_total", customer="c1", token_type="input", **labels) == 1000
    assert sample(ex, "llm_token_details_total", token_type="cache_read", **labels) == 400
    # c1: 600 × 2.5 + 400 × 1.25 + 500 × 10 = 1500 + 500 + 5000 = 7000 per M = $0.007
    assert sample(ex, "llm_cost_usd_total", customer="c1", **labels) == pytest.approx(0.007)
    assert sample(ex, "llm_request_duration_seconds_count", operation="chat", **labels) == 2
    assert sample(ex, "llm_request_duration_seconds_bucket", operation="chat", le="1.28", **labels) == 0
    assert sample(ex, "llm_request_duration_seconds_bucket", operation="chat", le="2.56", **labels) == 1
    assert sample(ex, "llm_request_duration_seconds_bucket", operation="chat", le="+Inf", **labels) == 2
    assert sample(ex, "llm_request_duration_seconds_sum", operation="chat", **labels) == pytest.approx(31.3)
    assert sample(ex, "llm_time_to_first_token_seconds_count", **labels) == 1
    # (1.3 - 0.3) / (500 - 1) ≈ 0.002 s per output token → first bucket (0.01)
    assert sample(ex, "llm_time_per_output_token_seconds_bucket", le="0.01", **labels) == 1
    assert sample(ex, "llm_exporter_events_total", source="api", result="accepted") == 2


def test_bucket_boundaries_are_inclusive():
    ex = make_exporter()
    ex.aggregator.ingest([ev(duration_ms=10), ev(duration_ms=10.001)], "api")
    labels = dict(tenant="acme", model="gpt-4o", provider="openai", operation="chat")
    assert sample(ex, "llm_request_duration_seconds_bucket", le="0.01", **labels) == 1
    assert sample(ex, "llm_request_duration_seconds_bucket", le="0.02", **labels) == 2


def test_duplicates_never_count_twice_within_and_across_batches():
    ex = make_exporter()
    first = ev(id="same")
    assert ex.aggregator.ingest([first, dict(first)], "api").duplicates == 1
    again = ex.aggregator.ingest([dict(first), ev(id="same", tenant="globex")], "api")
    assert (again.accepted, again.duplicates) == (1, 1), "ids are unique per tenant"
    assert sample(ex, "llm_requests_total", tenant="acme", customer="c1", model="gpt-4o", provider="openai",
                  operation="chat", status="ok") == 1
    assert sample(ex, "llm_exporter_events_total", source="api", result="duplicate") == 2


def test_rejected_event_does_not_spoil_the_batch_and_its_id_stays_usable():
    ex = make_exporter()
    result = ex.aggregator.ingest([ev(id="a"), ev(id="b", input_tokens=-1), "junk", ev(id="c")], "api")
    assert (result.accepted, result.rejected) == (2, 2)
    assert [(e["index"], e["id"], e["field"]) for e in result.errors] == [(1, "b", "input_tokens"), (2, None, "")]
    assert ex.aggregator.ingest([ev(id="b")], "api").accepted == 1, "a rejected id may be sent again, fixed"
    assert sample(ex, "llm_exporter_rejections_total", reason="invalid_field", tenant="acme") == 1
    assert sample(ex, "llm_exporter_rejections_total", reason="invalid_field", tenant="") == 1, "junk has no tenant"


def test_customer_cap_folds_into_other_and_counts_overflow():
    ex = make_exporter(limits_max_customers_per_tenant=2)
    ex.aggregator.ingest([ev(customer=f"c{i}") for i in range(5)], "api")
    customers = {key[1] for key in ex.aggregator.series["llm_requests"]}
    assert customers == {"c0", "c1", OTHER}
    assert sample(ex, "llm_exporter_overflow_total", label="customer") == 3
    assert sample(ex, "llm_requests_total", tenant="acme", customer=OTHER, model="gpt-4o", provider="openai",
                  operation="chat", status="ok") == 3


def test_unknown_models_are_capped_unpriced_and_cost_zero():
    ex = make_exporter(limits_max_unknown_models=2)
    ex.aggregator.ingest([ev(model=f"mystery-{i}") for i in range(4)] + [ev(model="gpt-4o")], "api")
    models = {key[2] for key in ex.aggregator.series["llm_requests"]}
    assert models == {"mystery-0", "mystery-1", OTHER, "gpt-4o"}
    assert sample(ex, "llm_exporter_unpriced_events_total", model="mystery-0") == 1
    assert sample(ex, "llm_exporter_unpriced_events_total", model=OTHER) == 2
    assert sample(ex, "llm_cost_usd_total", tenant="acme", customer="c1", model="mystery-0", provider="unknown") == 0


def test_tenant_cap_when_auth_is_off():
    ex = make_exporter(limits_max_tenants=2)
    ex.aggregator.ingest([ev(tenant=f"t{i}") for i in range(4)], "api")
    assert {key[0] for key in ex.aggregator.series["llm_requests"]} == {"t0", "t1", OTHER}


def test_cost_override_sku_and_agent_runs():
    ex = make_exporter(yaml={})
    ex.aggregator.prices.skus["report"] = 25 * 10**16  # $0.25 in atto-dollars
    ex.aggregator.ingest([
        ev(customer="a", cost_usd=1.5),
        ev(customer="b", sku="report"),
        ev(customer="c", sku="unknown-sku", input_tokens=1000, output_tokens=0),
        ev(customer="d", operation="agent_run", llm_calls=4, tool_calls=7, cost_usd=0.2),
        ev(customer="d", operation="agent_run", llm_calls=2, status="error", error_type="timeout", cost_usd=0.1),
    ], "api")
    def cost(customer):
        return sample(ex, "llm_cost_usd_total", tenant="acme", customer=customer, model="gpt-4o", provider="openai")
    # d: 0.2 + 0.1 is exactly 0.3: client costs are taken as the decimals they wrote, summed as integers
    assert (cost("a"), cost("b"), cost("c"), cost("d")) == (1.5, 0.25, 0.0025, 0.3)
    assert sample(ex, "llm_agent_run_cost_usd_total", tenant="acme", model="gpt-4o", status="ok") == 0.2
    assert sample(ex, "llm_agent_run_cost_usd_total", tenant="acme", model="gpt-4o", status="error") == 0.1
    assert sample(ex, "llm_agent_calls_total", tenant="acme", model="gpt-4o", call_type="llm") == 6
    assert sample(ex, "llm_agent_calls_total", tenant="acme", model="gpt-4o", call_type="tool") == 7


def test_state_survives_restart_and_old_duplicates_stay_rejected(tmp_path):
    ex = make_exporter(tmp_path)
    ex.aggregator.ingest([ev(id="x", customer="c9"), ev(id="y")], "api")
    before = sample(ex, "llm_cost_usd_total", tenant="acme", customer="c9", model="gpt-4o", provider="openai")
    ex.store.close()
    ex2 = make_exporter(tmp_path)
    assert sample(ex2, "llm_cost_usd_total", tenant="acme", customer="c9", model="gpt-4o", provider="openai") == before
    result = ex2.aggregator.ingest([ev(id="x"), ev(id="z", customer="c9")], "api")
    assert (result.accepted, result.duplicates) == (1, 1)
    assert sample(ex2, "llm_cost_usd_total", tenant="acme", customer="c9", model="gpt-4o",
                  provider="openai") == pytest.approx(2 * before)
    rows = ex2.aggregator.customer_rows("acme", "cost_usd", True, 10)
    assert rows[0]["customer"] == "c9" and rows[0]["events"] == 2


def test_dedupe_window_evicts_by_size_and_age():
    ex = make_exporter(dedupe_max_entries=3)
    now = time.time()
    ex.aggregator.ingest([ev(id=f"i{i}") for i in range(5)], "api", now=now)
    assert len(ex.aggregator.dedupe) == 3
    assert sample(ex, "llm_exporter_dedupe_evictions_total", tenant="acme", reason="size") == 2
    assert sample(ex, "llm_exporter_dedupe_window_entries") == 3
    ex = make_exporter(dedupe_max_age="25h")
    then = now - 30 * 3600
    assert ex.aggregator.ingest([ev(id="old", timestamp=then - 60)], "api", now=then).accepted == 1
    ex.aggregator.ingest([ev(id="new")], "api", now=now)
    assert "acme\x00old" not in ex.aggregator.dedupe
    assert sample(ex, "llm_exporter_dedupe_evictions_total", tenant="acme", reason="age") == 1


def test_store_failure_counts_nothing_then_recovers(tmp_path):
    ex = make_exporter(tmp_path)
    ex.aggregator.ingest([ev(id="a")], "api")
    blocker = sqlite3.connect(str(tmp_path / "state.db"), timeout=0)
    ex.store.close()  # drop our exclusive lock so another process can take it
    blocker.execute("PRAGMA locking_mode=EXCLUSIVE")
    blocker.execute("BEGIN EXCLUSIVE")
    snapshot = {k: dict(v) for k, v in ex.aggregator.series.items()}
    with pytest.raises(StoreUnavailable):
        ex.aggregator.ingest([ev(id="b"), ev(id="c")], "api")
    assert {k: dict(v) for k, v in ex.aggregator.series.items()} == snapshot, "nothing half-counted"
    assert "acme\x00b" not in ex.aggregator.dedupe
    assert sample(ex, "llm_exporter_store_up") == 0
    blocker.rollback()
    blocker.close()
    assert ex.aggregator.ingest([ev(id="b")], "api").accepted == 1
    assert sample(ex, "llm_exporter_store_up") == 1


def test_recent_errors_ring_is_bounded_and_newest_first():
    ex = make_exporter(errors_ring_size=3)
    ex.aggregator.ingest([ev(status="error", error_type="timeout", error_message=f"m{i}") for i in range(5)], "api")
    assert [e["error_message"] for e in ex.aggregator.errors_of("acme", 10)] == ["m4", "m3", "m2"]


def test_log_is_replayed_after_a_crash_and_folded_by_checkpoints(tmp_path):
    ex = make_exporter(tmp_path)
    ex.aggregator.ingest([ev(id="a", customer="k")], "api")
    ex.aggregator.checkpoint()
    ex.aggregator.ingest([ev(id="b", customer="k"), ev(id="c", customer="k")], "api")  # only in the log
    expected = {k: dict(v) for k, v in ex.aggregator.series.items()}
    ex.store.close()  # a crash: no final checkpoint
    ex2 = make_exporter(tmp_path)
    assert {k: dict(v) for k, v in ex2.aggregator.series.items()} == expected
    assert ex2.aggregator.customer_rows("acme", "events", True, 1)[0]["events"] == 3
    assert ex2.aggregator.ingest([ev(id="b"), ev(id="c"), ev(id="a")], "api").duplicates == 3
    remaining = ex2.store._connect().execute("SELECT COUNT(*) FROM log").fetchone()[0]
    assert remaining == 0, "start-up folds the replayed log into the snapshot"


def test_combinations_per_tenant_are_capped_too(tmp_path):
    ex = make_exporter(tmp_path, limits_max_combinations_per_tenant=3)
    models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"]
    ex.aggregator.ingest([ev(customer=f"c{i}", model=m) for i in range(2) for m in models], "api")
    kept = {(k[1], k[2]) for k in ex.aggregator.series["llm_requests"] if k[0] == "acme"}
    assert kept == {("c0", "gpt-4o"), ("c0", "gpt-4o-mini"), ("c0", "claude-sonnet-4-5"),
                    (OTHER, "gpt-4o"), (OTHER, "gpt-4o-mini"), (OTHER, "claude-sonnet-4-5")}
    assert sample(ex, "llm_exporter_overflow_total", label="series") == 3
    ex.store.close()
    ex2 = make_exporter(tmp_path, limits_max_combinations_per_tenant=3)  # the cap survives a restart
    ex2.aggregator.ingest([ev(customer="c9", model="gpt-4o")], "api")
    assert ("acme", "c9") not in {k[:2] for k in ex2.aggregator.series["llm_requests"]}


def test_a_tenant_flooding_its_window_never_evicts_another_tenants_ids(tmp_path):
    """B floods 20x past its window (and past the all-tenant total); A's old id stays a duplicate,
    also after a restart on the same state file (windows are rebuilt per tenant from the keys)."""
    settings = dict(dedupe_max_entries=600, dedupe_max_entries_per_tenant=500, web_max_batch_events=10_000)
    ex = make_exporter(tmp_path, **settings)
    now = time.time()
    assert ex.aggregator.ingest([ev(id="a-old", tenant="a")], "api", now=now).accepted == 1
    for round_ in range(20):
        ex.aggregator.ingest([ev(id=f"b{round_}-{i}", tenant="b") for i in range(500)], "api", now=now)
    assert ex.aggregator.ingest([ev(id="a-old", tenant="a")], "api", now=now).duplicates == 1
    assert sample(ex, "llm_exporter_dedupe_evictions_total", tenant="b", reason="size") == 19 * 500
    assert sample(ex, "llm_exporter_dedupe_evictions_total", tenant="a", reason="size") is None
    assert ex.aggregator.ingest([ev(id="b0-0", tenant="b")], "api", now=now).accepted == 1, "B forgot its own"
    ex.aggregator.checkpoint()
    ex.store.close()
    ex2 = make_exporter(tmp_path, **settings)
    assert ex2.aggregator.ingest([ev(id="a-old", tenant="a")], "api", now=now).duplicates == 1
    assert ex2.aggregator.ingest([ev(id="b19-499", tenant="b")], "api", now=now).duplicates == 1
    assert len(ex2.aggregator.dedupe) <= 600


def test_the_all_tenant_total_is_paid_by_the_largest_window():
    ex = make_exporter(dedupe_max_entries=100, dedupe_max_entries_per_tenant=1000)
    now = time.time()
    ex.aggregator.ingest([ev(id=f"a{i}", tenant="a") for i in range(30)], "api", now=now)
    ex.aggregator.ingest([ev(id=f"b{i}", tenant="b") for i in range(200)], "api", now=now)
    assert len(ex.aggregator.dedupe) == 100
    assert all(f"a\x00a{i}" in ex.aggregator.dedupe for i in range(30))
    assert sample(ex, "llm_exporter_dedupe_evictions_total", tenant="b", reason="size") == 130


def test_per_tenant_window_settings_come_from_the_tenants_section():
    ex = make_exporter(dedupe_max_age="25h", yaml={"tenants": {"a": {"dedupe_max_entries": 2, "dedupe_max_age": "30h"},
                                                                 "b": {}}})
    now = time.time()
    ex.aggregator.ingest([ev(id=f"x{i}", tenant="a") for i in range(5)], "api", now=now)
    ex.aggregator.ingest([ev(id=f"x{i}", tenant="b") for i in range(5)], "api", now=now)
    assert sample(ex, "llm_exporter_dedupe_evictions_total", tenant="a", reason="size") == 3
    assert sample(ex, "llm_exporter_dedupe_evictions_total", tenant="b", reason="size") is None
    assert ex.aggregator.dedupe.window_of("a").max_age == 30 * 3600
    with pytest.raises(ConfigError, match="tenants.a.dedupe_max_age must be >= ingest.max-age"):
        make_exporter(yaml={"tenants": {"a": {"dedupe_max_age": "1h"}}})


def test_rows_waiting_to_be_folded_are_read_and_survive_a_kill(tmp_path):
    """Acknowledged rows wait to be counted in bulk; every reader folds them first, and a kill before
    any fold or checkpoint loses none (they are in the log)."""
    ex = make_exporter(tmp_path)
    agg = ex.aggregator
    now = time.time()
    assert agg.ingest([ev(id=f"a{i}", tenant="a", input_tokens=7) for i in range(30)], "api", now).accepted == 30
    assert len(agg._pending) == 30  # acknowledged, not yet counted
    assert _input_tokens(agg, "a") == 7 * 30  # reading the series folds them
    assert not agg._pending
    agg.ingest([ev(id=f"b{i}", tenant="b", input_tokens=5) for i in range(20)], "api", now)
    assert agg.customer_rows("b", "events", True, 10)[0]["events"] == 20
    agg.ingest([ev(id="c", tenant="c", input_tokens=3)], "api", now)
    ex.store.close()  # SIGKILL now: nothing was checkpointed, the log holds all three records
    again = make_exporter(tmp_path)
    assert [_input_tokens(again.aggregator, t) for t in "abc"] == [210, 100, 3]


def _input_tokens(agg, tenant: str) -> int:
    return sum(v for k, v in agg.series["llm_tokens"].items() if k[0] == tenant and k[4] == "input")
