"""The fast validator never disagrees with the authoritative one: when it returns an Event, the slow
path returns the same Event; when it gives up, the slow path decides."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.events import Event, Limits, fast_validate, validate_event

NOW = 1_790_000_000.0
LIMITS = Limits(max_age_s=86400, max_future_s=300, max_label_length=16)

label = st.one_of(st.text(max_size=20), st.integers(), st.none(), st.just(" "), st.just("acme"))
count = st.one_of(st.integers(-5, 5000), st.floats(allow_nan=True), st.none(), st.booleans(), st.just(10**12),
                  st.text(max_size=3))
number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**7), st.none(), st.booleans())
timestamp = st.one_of(st.floats(NOW - 100_000, NOW + 1000), st.integers(0, 2 * 10**11), st.just("2026-09-21T12:00:00Z"),
                      st.text(max_size=30), st.none(), st.just(math.nan))
event = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=130), st.integers()), "timestamp": timestamp, "tenant": label,
     "customer": label, "model": label, "input_tokens": count, "output_tokens": count, "duration_ms": number,
     "status": st.sampled_from(["ok", "error", "bogus", None])},
    optional={"provider": label, "operation": st.one_of(st.sampled_from(["chat", "agent_run", "x"]), st.lists(st.none())),
              "cache_read_tokens": count, "cache_write_tokens": count, "reasoning_tokens": count,
              "cost_usd": number, "ttft_ms": number, "error_type": label, "error_message": label,
              "llm_calls": count, "tool_calls": count, "sku": label, "input_text": label, "input_chars": count})


@settings(max_examples=3000, deadline=None)
@given(event)
def test_fast_path_agrees_with_the_validator(raw):
    fast = fast_validate(raw, NOW, LIMITS)
    slow = validate_event(raw, NOW, LIMITS)
    if fast is not None:
        assert isinstance(slow, Event), f"fast path accepted what the validator rejects: {slow}"
        assert fast == slow


def test_fast_path_takes_the_common_case():
    raw = {"id": "a", "timestamp": NOW, "tenant": "t", "customer": "c", "model": "m", "input_tokens": 5,
           "output_tokens": 1, "duration_ms": 10, "status": "ok", "ttft_ms": 2, "cache_read_tokens": 1}
    assert fast_validate(raw, NOW, LIMITS) == validate_event(raw, NOW, LIMITS)
    assert fast_validate(dict(raw, timestamp="2026-09-21T12:00:00Z"), NOW, LIMITS) is not None
