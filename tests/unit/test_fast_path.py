"""The fast path (msgspec converts a whole batch, then the cross-field checks) never disagrees with
the authoritative per-event validator: when it accepts a batch, validating each event on its own
gives the same Events; when it gives up, the slow path decides."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

import orjson

from exporter.core.events import Event, Limits, convert_batch, decode_batch, validate_event

NOW = 1_790_000_000.0
LIMITS = Limits(max_age_s=86400, max_future_s=300, max_label_length=16)

label = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.just(" "), st.just("acme"), st.just("x" * 17))
count = st.one_of(st.integers(-5, 5000), st.floats(allow_nan=True), st.none(), st.booleans(), st.just(10**12),
                  st.text(max_size=3))
number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**7), st.none(), st.booleans())
timestamp = st.one_of(st.floats(NOW - 100_000, NOW + 1000), st.integers(0, 2 * 10**11), st.just("2026-09-21T12:00:00Z"),
                      st.text(max_size=30), st.none(), st.just(math.nan))
ADVERSARIAL = {"id": st.one_of(st.text(max_size=130), st.integers()), "timestamp": timestamp, "tenant": label,
               "customer": label, "model": label, "input_tokens": count, "output_tokens": count,
               "duration_ms": number, "status": st.sampled_from(["ok", "error", "bogus", None]), "provider": label,
               "operation": st.one_of(st.sampled_from(["chat", "agent_run", "x"]), st.lists(st.none())),
               "cache_read_tokens": count, "cache_write_tokens": count, "reasoning_tokens": count,
               "cost_usd": number, "ttft_ms": number, "error_type": label, "error_message": label,
               "llm_calls": count, "tool_calls": count, "sku": label, "input_text": label, "input_chars": count,
               "usage_format": st.sampled_from(["openai", None]), "cache_write_1h_tokens": count,
               "audio_input_tokens": count, "audio_output_tokens": count,
               "service_tier": st.one_of(label, st.sampled_from(["auto", "Flex", "batch", "priority", "scale"]))}
valid_event = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=20), "timestamp": st.floats(NOW - 80_000, NOW + 200),
     "tenant": st.sampled_from(["acme", "globex"]), "customer": st.text(min_size=1, max_size=8).filter(str.strip),
     "model": st.sampled_from(["gpt-4o", "mystery"]), "input_tokens": st.integers(100, 10_000),
     "output_tokens": st.integers(100, 5000), "duration_ms": st.floats(1000, 60_000),
     "status": st.sampled_from(["ok", "error"]), "error_type": st.sampled_from(["timeout", "odd"])},
    optional={"cache_read_tokens": st.integers(0, 50), "reasoning_tokens": st.integers(0, 50),
              "cache_write_tokens": st.integers(0, 40), "cache_write_1h_tokens": st.integers(0, 20),
              "audio_input_tokens": st.integers(0, 60), "audio_output_tokens": st.integers(0, 60),
              "service_tier": st.sampled_from(["default", "auto", "flex", "batch", "priority", "odd"]),
              "ttft_ms": st.floats(0, 900), "cost_usd": st.floats(0, 5), "error_message": st.text(max_size=300),
              "operation": st.sampled_from(["chat", "agent_run", "embeddings"]), "provider": st.just("openai")})
# Mostly valid events with zero to two adversarial fields: both the accept and the give-up side get exercised.
event = st.builds(lambda base, bad: {**base, **bad}, valid_event,
                  st.dictionaries(st.sampled_from(sorted(ADVERSARIAL)), st.none(), max_size=2).flatmap(
                      lambda keys: st.fixed_dictionaries({k: ADVERSARIAL[k] for k in keys})))


@settings(max_examples=3000, deadline=None)
@given(st.lists(event, min_size=1, max_size=3))
def test_fast_path_agrees_with_the_validator(raws):
    fast = convert_batch(raws, NOW, LIMITS)
    event_strategy_hits.append(fast is not None)
    slow = [validate_event(raw, NOW, LIMITS) for raw in raws]
    if fast is not None:
        assert all(isinstance(e, Event) for e in slow), f"fast path accepted what the validator rejects: {slow}"
        assert fast == slow
        try:
            body = orjson.dumps({"events": raws})
        except TypeError:  # NaN-free but not JSON-serialisable (e.g. huge ints): nothing to compare
            return
        assert decode_batch(body, NOW, LIMITS) == slow


event_strategy_hits: list[bool] = []


def test_the_property_exercised_both_sides():
    """Runs after the property test (file order): it must have seen accepted and refused batches."""
    assert any(event_strategy_hits) and not all(event_strategy_hits), event_strategy_hits.count(True)


def test_fast_path_takes_the_common_case():
    raw = {"id": "a", "timestamp": NOW, "tenant": "t", "customer": "c", "model": "m", "input_tokens": 5,
           "output_tokens": 1, "duration_ms": 10, "status": "ok", "ttft_ms": 2, "cache_read_tokens": 1}
    assert convert_batch([raw], NOW, LIMITS) == [validate_event(raw, NOW, LIMITS)]
    assert convert_batch([dict(raw, timestamp="2026-09-21T12:00:00Z")], NOW, LIMITS) is not None
    assert decode_batch(orjson.dumps({"events": [raw]}), NOW, LIMITS) is not None
    assert decode_batch(orjson.dumps({"events": [dict(raw, input_tokens=-1)]}), NOW, LIMITS) is None
