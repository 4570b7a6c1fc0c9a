"""Pricing: hand-computed costs per dimension (tiers, 5 m vs 1 h cache writes, service tiers, audio,
request fees, billing rules), exact sums, dated snapshots, unknown models, overrides."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exporter.core.events import Event
from exporter.core.pricing import UNITS_PER_USD, PricingError, build_book, load_price_book, usd
from exporter.core.pricing.matching import base_name

USD = UNITS_PER_USD
MTOK = USD // 10**6  # atto-dollars per token at $1 / 1M tokens
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()
TABLE = {"models": {"m": {"provider": "openai", "input": 2.0, "output": 8.0, "cache_read": 0.5, "cache_write": 2.5}}}


def event(**kw) -> Event:
    base = dict(id="e", timestamp=NOW, tenant="t", customer="c", model="m", provider=None, operation="chat",
                input_tokens=0, output_tokens=0, duration_ms=1000.0, status="ok")
    base.update(kw)
    return Event(**base)


def cost(book, **kw) -> tuple[int, tuple | None]:
    ev = event(**kw)
    units, _, _, warning = book.cost(ev, book.resolve(ev.model, ev.provider))
    return units, warning


@pytest.fixture(scope="module")
def table():
    return build_book(TABLE)


@pytest.fixture(scope="module")
def shipped():
    return load_price_book()


def test_plain_input_and_output(table):
    # 1000 × $2/M + 500 × $8/M = $0.002 + $0.004 = $0.006
    assert cost(table, input_tokens=1000, output_tokens=500) == (6 * USD // 1000, None)


def test_cached_tokens_are_part_of_input_not_on_top(table):
    # 1000 input of which 600 cache reads and 100 cache writes: 300 × 2 + 600 × 0.5 + 100 × 2.5 = 1150 per M
    assert cost(table, input_tokens=1000, cache_read_tokens=600, cache_write_tokens=100)[0] == 1150 * MTOK


def test_a_single_cheap_token_is_not_rounded_away(table):
    # 1 cache-read token at $0.5/M = $0.0000005: half a micro-dollar, kept exactly
    assert cost(table, input_tokens=1, cache_read_tokens=1)[0] == MTOK // 2


def test_a_million_tiny_calls_sum_exactly(shipped):
    # gpt-4o-mini: $0.15/M input, $0.60/M output. One call of 7 in + 3 out = 1.05 + 1.8 = 2.85e-6 USD
    # (it was rounded to 3e-6 per call before: +5 %). A million calls: exactly $2.85.
    one = cost(shipped, model="gpt-4o-mini", input_tokens=7, output_tokens=3)[0]
    assert one == 285 * 10**10  # 2.85e-6 USD in atto-dollars
    assert usd(sum(one for _ in range(1_000_000))) == 2.85


def test_long_context_tier_switches_the_price_of_all_tokens(shipped):
    # claude-sonnet-4-5: $3/$15 per M up to 200k input tokens; above, $6/$22.5 for ALL tokens
    below = cost(shipped, model="claude-sonnet-4-5", input_tokens=200_000, output_tokens=1000)[0]
    above = cost(shipped, model="claude-sonnet-4-5", input_tokens=200_001, output_tokens=1000)[0]
    assert below == (200_000 * 3 + 1000 * 15) * MTOK  # $0.615
    assert above == (200_001 * 6 * 2 + 1000 * 45) * MTOK // 2  # 200001 × 6 + 1000 × 22.5 = $1.222506
    assert usd(above) == 1.222506


def test_one_hour_cache_writes_cost_more_than_five_minute_ones(shipped):
    # claude-sonnet-4-5: input $3, 5-minute cache write $3.75, 1-hour cache write $6 per M.
    # 10,000 input = 2,000 plain + 8,000 writes of which 3,000 with a 1 h TTL:
    # 2000 × 3 + 5000 × 3.75 + 3000 × 6 = 6000 + 18750 + 18000 = 42750 per M = $0.04275
    units, _ = cost(shipped, model="claude-sonnet-4-5", input_tokens=10_000, cache_write_tokens=8000,
                    cache_write_1h_tokens=3000)
    assert units == 42750 * MTOK
    all_5m = cost(shipped, model="claude-sonnet-4-5", input_tokens=10_000, cache_write_tokens=8000)[0]
    assert all_5m == (2000 * 3 * 4 + 8000 * 15) * MTOK // 4  # 6000 + 30000 = $0.036


@pytest.mark.parametrize(("tier", "in_price", "out_price"), [
    ("default", 1.25, 10), ("flex", 0.625, 5), ("batch", 0.625, 5), ("priority", 2.5, 20)])
def test_each_service_tier_of_gpt_5(shipped, tier, in_price, out_price):
    # 100,000 in + 10,000 out at the tier's prices (genai-prices' gpt-5 variants in force since 2026-10)
    units, warning = cost(shipped, model="gpt-5", input_tokens=100_000, output_tokens=10_000, service_tier=tier)
    assert usd(units) == pytest.approx(0.1 * in_price + 0.01 * out_price, rel=1e-15) and warning is None


def test_tier_without_a_price_falls_back_to_default_with_a_warning(shipped):
    default = cost(shipped, model="gpt-4o", input_tokens=1000, output_tokens=10)[0]
    units, warning = cost(shipped, model="gpt-4o", input_tokens=1000, output_tokens=10, service_tier="flex")
    assert units == default and warning[0] == "service_tier" and "flex" in warning[1]
    # before the variant existed (gpt-5's flex price starts 2026-10-12) the tier falls back too
    old = datetime(2026, 9, 1, tzinfo=UTC).timestamp()
    units, warning = cost(shipped, model="gpt-5", input_tokens=1000, timestamp=old, service_tier="flex")
    assert units == 1000 * 125 * MTOK // 100 and warning[0] == "service_tier"


def test_audio_tokens_at_audio_prices():
    book = build_book({"models": {"voice": {"input": 2.5, "output": 10, "audio_input": 40, "audio_output": 80}}})
    # 1000 in of which 600 audio, 500 out of which 200 audio: 400 × 2.5 + 600 × 40 + 300 × 10 + 200 × 80
    # = 1000 + 24000 + 3000 + 16000 = 44000 per M = $0.044
    assert cost(book, model="voice", input_tokens=1000, audio_input_tokens=600, output_tokens=500,
                audio_output_tokens=200)[0] == 44000 * MTOK


def test_shipped_audio_model(shipped):
    # gpt-audio in genai-prices: text $2.5/$10, audio $32/$64 per M.
    # 150 in of which 100 audio, 120 out of which 100 audio: 50 × 2.5 + 100 × 32 + 20 × 10 + 100 × 64
    # = 125 + 3200 + 200 + 6400 = 9925 per M = $0.009925
    units, _ = cost(shipped, model="gpt-audio", input_tokens=150, audio_input_tokens=100,
                    output_tokens=120, audio_output_tokens=100)
    assert units == 9925 * MTOK


def test_request_fee_and_reasoning_price():
    book = build_book({"models": {"m": {"input": 2.0, "output": 8.0, "reasoning": 12.0, "request_fee": 0.001}}})
    # 3 × $2/M + 100 × $8/M + 400 × $12/M + $0.001 = 6 + 800 + 4800 per M + 1000 µ$ = $0.006606
    assert usd(cost(book, input_tokens=3, output_tokens=500, reasoning_tokens=400)[0]) == 0.006606


def test_reasoning_defaults_to_output_price(table):
    assert cost(table, output_tokens=500, reasoning_tokens=400)[0] == 4000 * MTOK


def test_override_tiers_and_service_tiers():
    book = build_book({"models": {"m": {"input": 1, "output": 2, "tiers": [{"above_input_tokens": 100, "input": 3,
                                                                            "output": 5}],
                                        "service_tiers": {"batch": {"input": 0.5, "output": 1}}}}})
    assert cost(book, input_tokens=100, output_tokens=10)[0] == (100 * 1 + 10 * 2) * MTOK
    assert cost(book, input_tokens=101, output_tokens=10)[0] == (101 * 3 + 10 * 5) * MTOK
    assert cost(book, input_tokens=100, output_tokens=10, service_tier="batch")[0] == (50 + 10) * MTOK


def test_billing_rules_round_then_minimum():
    doc = {"models": {"m": {**TABLE["models"]["m"], "round_to_usd": 0.01, "min_charge_usd": 0.02,
                            "operations": {"embeddings": {"min_charge_usd": 0.0, "round_to_usd": 0.001}}}}}
    book = build_book(doc)
    assert usd(cost(book, input_tokens=1000, output_tokens=500)[0]) == 0.02  # $0.006 → $0.01 → min $0.02
    assert usd(cost(book, input_tokens=1000, output_tokens=3000)[0]) == 0.03  # $0.026 → $0.03
    assert usd(cost(book, input_tokens=10_000)[0]) == 0.02  # exactly $0.02 stays
    assert usd(cost(book, input_tokens=1000, operation="embeddings")[0]) == 0.002


def test_rules_only_override_keeps_the_source_prices(shipped):
    book = build_book({"models": {"gpt-4o": {"min_charge_usd": 0.01}}})
    assert usd(cost(book, model="gpt-4o", input_tokens=10)[0]) == 0.01
    assert cost(book, model="gpt-4o", input_tokens=10**6)[0] == cost(shipped, model="gpt-4o", input_tokens=10**6)[0]


def test_effective_from_picks_price_in_force():
    book = build_book({"models": {"m": [{"input": 4.0, "output": 8.0},
                                        {"input": 2.0, "output": 8.0, "effective_from": "2026-06-01"}]}})
    june = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    assert cost(book, input_tokens=1000, timestamp=june - 1)[0] == 4000 * MTOK
    assert cost(book, input_tokens=1000, timestamp=june)[0] == 2000 * MTOK
    with pytest.raises(PricingError, match="effective_from"):
        build_book({"models": {"m": [{"input": 1, "output": 1, "effective_from": "June"}]}})


@pytest.mark.parametrize(("ref", "canonical"), [
    ("gpt-4o-2024-08-06", "gpt-4o"), ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"), ("gpt-4o-mini", "gpt-4o-mini"),
    ("gpt-5.1", "gpt-5.1"), ("gpt-5.1-2025-11-13", "gpt-5.1"), ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("models/gemini-2.5-flash", "gemini-2.5-flash"), ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
])
def test_dated_snapshots_map_to_their_model(shipped, ref, canonical):
    assert shipped.resolve(ref, None).model == canonical


@pytest.mark.parametrize("ref", ["gpt-4o-ultra", "gpt-5.9-preview-x", "claude-sonnet-9", "my-llama"])
def test_a_different_model_never_borrows_a_label(shipped, ref):
    assert shipped.resolve(ref, None) is None


def test_unknown_model_costs_zero_with_a_warning(shipped):
    units, warning = cost(shipped, model="my-llama", input_tokens=1000)
    assert units == 0 and warning[0] == "model" and "my-llama" in warning[1]


def test_precedence_cost_usd_then_sku_then_price():
    book = build_book({**TABLE, "skus": {"report": {"price_usd": 0.5}}})
    assert cost(book, input_tokens=1000, cost_usd=0.1, sku="report")[0] == USD // 10
    assert cost(book, input_tokens=1000, sku="report")[0] == USD // 2
    assert cost(book, input_tokens=1000, sku="nope")[0] == 2000 * MTOK


def test_cache_savings_and_write_premium(shipped):
    # claude-sonnet-4-5: reads $0.30 vs input $3 → 9000 reads save 9000 × 2.7 = 24300 per M;
    # 1000 5-minute writes cost 1000 × 0.75 extra = 750 per M
    ev = event(model="claude-sonnet-4-5", input_tokens=12_000, cache_read_tokens=9000, cache_write_tokens=1000)
    _, saved, extra, _ = shipped.cost(ev, shipped.resolve(ev.model, None))
    assert (saved, extra) == (24300 * MTOK, 750 * MTOK)


def test_override_file_merges_over_the_source(tmp_path):
    user = tmp_path / "prices.yaml"
    user.write_text("models:\n  gpt-4o: {provider: azure.ai.openai, input: 1, output: 1}\n"
                    "  my-model: {input: 3, output: 4, aliases: [my-model-v2]}\nskus:\n  report: {price_usd: 0.5}\n")
    book = load_price_book(str(user))
    assert cost(book, model="gpt-4o", input_tokens=10**6)[0] == USD
    assert book.resolve("gpt-4o", None).provider == "azure.ai.openai"
    assert book.resolve("my-model-v2", None).model == "my-model"
    assert cost(book, model="claude-sonnet-4-5", input_tokens=10**5)[0] == 3 * USD // 10  # the source, untouched
    assert book.skus["report"] == USD // 2


@pytest.mark.parametrize("doc", [
    {"models": {"m": {"input": -1, "output": 1}}},
    {"models": {"m": {"input": 1}}},
    {"models": {"m": {"input": 1, "output": 1, "colour": 3}}},
    {"models": {"m": {"input": "cheap", "output": 1}}},
    {"prices": {}},
    {"skus": {"x": {"usd": 1}}},
])
def test_malformed_overrides_name_the_problem(doc):
    with pytest.raises(PricingError, match=r"models\.m|top-level|skus\.x"):
        build_book(doc)


def test_shipped_source_is_large_and_current(shipped):
    assert shipped.priced_models > 1000
    assert {"openai", "anthropic", "gcp.gemini", "aws.bedrock", "mistral_ai"} <= shipped.providers


@pytest.mark.parametrize(("ref", "base"), [("us.anthropic.claude-3-5-sonnet-20240620-v1:0", "claude-3-5-sonnet"),
                                           ("gpt-4-0613", "gpt-4"), ("gemini-1.5-pro-002", "gemini-1.5-pro"),
                                           ("gpt-5.1", "gpt-5.1"), ("gpt-4o-mini", "gpt-4o-mini")])
def test_base_name_strips_only_snapshot_marks(ref, base):
    assert base_name(ref) == base
