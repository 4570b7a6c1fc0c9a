"""Pricing: hand-computed costs, cache and reasoning tokens as parts (never on top), overrides,
billing rules, effective dates and the shipped table's sanity."""

from __future__ import annotations

import pytest

from exporter.core.events import Event
from exporter.core.pricing import PricingError, default_price_document, load_price_table, parse_price_table

TABLE = {"models": {"m": {"provider": "openai", "input": 2.0, "output": 8.0, "cache_read": 0.5, "cache_write": 2.5}}}


def event(**kw) -> Event:
    base = dict(id="e", timestamp=1_790_000_000.0, tenant="t", customer="c", model="m", provider=None,
                operation="chat", input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0,
                reasoning_tokens=0, cost_usd=None, duration_ms=1000.0, ttft_ms=None, status="ok", error_type=None,
                error_message=None, llm_calls=0, tool_calls=0, sku=None)
    base.update(kw)
    return Event(**base)


def micros(doc, **kw) -> int:
    table = parse_price_table(doc)
    ev = event(**kw)
    return table.lookup(ev.model, ev.timestamp).cost_micros(ev)


def test_plain_input_and_output():
    # 1000 × $2/M + 500 × $8/M = $0.002 + $0.004 = $0.006
    assert micros(TABLE, input_tokens=1000, output_tokens=500) == 6000


def test_cached_tokens_are_part_of_input_not_on_top():
    # 1000 input of which 600 cache reads and 100 cache writes:
    # 300 × 2 + 600 × 0.5 + 100 × 2.5 = 600 + 300 + 250 = 1150 per M → $0.00115
    assert micros(TABLE, input_tokens=1000, cache_read_tokens=600, cache_write_tokens=100) == 1150
    # Billing cache reads on top of the full input price would give 2000 + 300 + 250 = 2550.


def test_reasoning_defaults_to_output_price_and_is_part_of_output():
    # 500 output of which 400 reasoning, reasoning price defaults to output: 500 × 8 = 4000 per M
    assert micros(TABLE, output_tokens=500, reasoning_tokens=400) == 4000


def test_explicit_reasoning_price():
    doc = {"models": {"m": {**TABLE["models"]["m"], "reasoning": 12.0}}}
    # 100 × 8 + 400 × 12 = 800 + 4800 = 5600 per M
    assert micros(doc, output_tokens=500, reasoning_tokens=400) == 5600


def test_request_fee_and_rounding_to_micro_dollars():
    doc = {"models": {"m": {**TABLE["models"]["m"], "request_fee": 0.001}}}
    # 3 input tokens × $2/M = $0.000006; + $0.001 fee
    assert micros(doc, input_tokens=3) == 1006
    # 1 input token = $0.000002; 1 cache-read token alone = $0.0000005 → rounds to 0 or 1 micro (banker's: 0)
    assert micros(TABLE, input_tokens=1) == 2


def test_missing_cache_prices_default_to_input_price():
    doc = {"models": {"m": {"input": 1.0, "output": 2.0}}}
    assert micros(doc, input_tokens=1000, cache_read_tokens=1000) == 1000


def test_billing_rules_round_then_minimum():
    doc = {"models": {"m": {**TABLE["models"]["m"], "round_to_usd": 0.01, "min_charge_usd": 0.02,
                            "operations": {"embeddings": {"min_charge_usd": 0.0, "round_to_usd": 0.001}}}}}
    # $0.006 → rounded up to $0.01 → minimum $0.02
    assert micros(doc, input_tokens=1000, output_tokens=500) == 20_000
    # $0.026 → $0.03 (above minimum)
    assert micros(doc, input_tokens=1000, output_tokens=3000) == 30_000
    # exactly $0.02 stays $0.02 (no spurious round-up from float error)
    assert micros(doc, input_tokens=10_000) == 20_000
    # per-operation rule: embeddings $0.002 → 0.001 grid → $0.002, no minimum
    assert micros(doc, input_tokens=1000, operation="embeddings") == 2000


def test_effective_from_picks_price_in_force():
    import datetime

    doc = {"models": {"m": [
        {"input": 4.0, "output": 8.0},
        {"input": 2.0, "output": 8.0, "effective_from": "2026-06-01"},
    ]}}
    june = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc).timestamp()
    assert micros(doc, input_tokens=1000, timestamp=june - 1) == 4000
    assert micros(doc, input_tokens=1000, timestamp=june) == 2000
    doc["models"]["m"][1]["effective_from"] = "June"
    with pytest.raises(PricingError, match="effective_from"):
        parse_price_table(doc)


def test_aliases_resolve_to_canonical_model():
    table = load_price_table()
    price = table.lookup("gpt-4o-2024-08-06", 0)
    assert price is not None and price.model == "gpt-4o"


def test_user_file_overrides_default(tmp_path):
    user = tmp_path / "prices.yaml"
    user.write_text("models:\n  gpt-4o: {provider: azure.ai.openai, input: 1, output: 1}\n"
                    "  my-model: {input: 3, output: 4}\nskus:\n  report: {price_usd: 0.5}\n")
    table = load_price_table(str(user))
    assert table.lookup("gpt-4o", 0).input == 1 and table.lookup("gpt-4o", 0).provider == "azure.ai.openai"
    assert table.lookup("my-model", 0).output == 4
    assert table.lookup("claude-sonnet-4", 0).input == 3.0  # untouched default
    assert table.sku_micros("report") == 500_000 and table.sku_micros("nope") is None


@pytest.mark.parametrize("doc", [
    {"models": {"m": {"input": -1, "output": 1}}},
    {"models": {"m": {"input": 1}}},
    {"models": {"m": {"input": 1, "output": 1, "colour": 3}}},
    {"models": {"m": {"input": "cheap", "output": 1}}},
    {"prices": {}},
    {"skus": {"x": {"usd": 1}}},
])
def test_malformed_tables_name_the_problem(doc):
    with pytest.raises(PricingError, match=r"models\.m|top-level|skus\.x"):
        parse_price_table(doc)


def test_shipped_table_covers_four_providers_and_is_sane():
    doc = default_price_document()
    providers = {spec["provider"] for spec in doc["models"].values()}
    assert {"openai", "anthropic", "gcp.gemini"} <= providers
    assert providers - {"openai", "anthropic", "gcp.gemini"}, "an open-weights host is listed"
    for name, spec in doc["models"].items():
        assert spec["cache_read"] <= spec["input"], f"{name}: cache reads cost more than input"
        if spec["provider"] == "anthropic":
            assert spec["cache_write"] == pytest.approx(spec["input"] * 1.25), f"{name}: 5-minute cache write"
    load_price_table()  # parses
