"""Validation of every event field, good and bad, timestamp forms and token estimation."""

from __future__ import annotations

import math
import time

import pytest

from exporter.core.events import Event, FieldError, Limits, convert_batch, parse_timestamp, validate_event

NOW = 1_790_000_000.0
LIMITS = Limits(max_age_s=24 * 3600, max_future_s=300, max_label_length=128)


def good(**overrides):
    event = {"id": "e1", "timestamp": NOW - 10, "tenant": "acme", "customer": "c1", "model": "gpt-4o",
             "input_tokens": 100, "output_tokens": 20, "duration_ms": 1500, "status": "ok"}
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def fields_of(result) -> set[str]:
    assert isinstance(result, list), f"expected errors, got {result}"
    return {e.field for e in result}


def test_minimal_event_is_valid_with_defaults():
    event = validate_event(good(), NOW, LIMITS)
    assert isinstance(event, Event)
    assert (event.operation, event.provider, event.cost_usd, event.ttft_ms) == ("chat", None, None, None)
    assert event.duration_ms == 1500 and event.input_tokens == 100 and event.output_tokens == 20


@pytest.mark.parametrize("field", ["id", "timestamp", "tenant", "customer", "model", "duration_ms", "status"])
def test_required_fields(field):
    assert field in fields_of(validate_event(good(**{field: ...}), NOW, LIMITS))


def test_tokens_required_unless_text_or_chars():
    assert "input_tokens" in fields_of(validate_event(good(input_tokens=...), NOW, LIMITS))


@pytest.mark.parametrize(("chars", "tokens"), [(0, 0), (1, 1), (4, 1), (5, 2), (8, 2), (401, 101)])
def test_tokens_from_chars_round_up(chars, tokens):
    event = validate_event(good(input_tokens=..., input_chars=chars, output_tokens=..., output_text="x" * chars),
                           NOW, LIMITS)
    assert (event.input_tokens, event.output_tokens) == (tokens, tokens)


def test_explicit_tokens_win_over_text():
    event = validate_event(good(input_tokens=7, input_text="x" * 400), NOW, LIMITS)
    assert event.input_tokens == 7


@pytest.mark.parametrize("value", [-1, 1.5, "10", True, None.__class__, [1], 10**11])
def test_bad_token_counts(value):
    raw = good(input_tokens=value if value is not None.__class__ else {"n": 1})
    assert "input_tokens" in fields_of(validate_event(raw, NOW, LIMITS))


@pytest.mark.parametrize("field", ["cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "llm_calls",
                                   "tool_calls", "cache_write_1h_tokens", "audio_input_tokens",
                                   "audio_output_tokens"])
def test_optional_counts_reject_negative(field):
    assert field in fields_of(validate_event(good(**{field: -3}), NOW, LIMITS))


def test_cache_tokens_are_part_of_input():
    assert isinstance(validate_event(good(cache_read_tokens=60, cache_write_tokens=40), NOW, LIMITS), Event)
    errors = validate_event(good(cache_read_tokens=60, cache_write_tokens=41), NOW, LIMITS)
    assert "cache_read_tokens" in fields_of(errors)


def test_reasoning_tokens_are_part_of_output():
    assert isinstance(validate_event(good(reasoning_tokens=20), NOW, LIMITS), Event)
    assert "reasoning_tokens" in fields_of(validate_event(good(reasoning_tokens=21), NOW, LIMITS))


def test_one_hour_cache_writes_are_part_of_cache_writes():
    event = validate_event(good(cache_write_tokens=40, cache_write_1h_tokens=40), NOW, LIMITS)
    assert isinstance(event, Event) and event.cache_write_1h_tokens == 40
    errors = validate_event(good(cache_write_tokens=40, cache_write_1h_tokens=41), NOW, LIMITS)
    assert fields_of(errors) == {"cache_write_1h_tokens"}
    assert "part of cache_write_tokens" in errors[0].message


def test_audio_tokens_are_part_of_input_and_output():
    event = validate_event(good(audio_input_tokens=100, audio_output_tokens=20), NOW, LIMITS)
    assert (event.audio_input_tokens, event.audio_output_tokens) == (100, 20)
    errors = validate_event(good(audio_input_tokens=101, audio_output_tokens=21), NOW, LIMITS)
    assert fields_of(errors) == {"audio_input_tokens", "audio_output_tokens"}


@pytest.mark.parametrize(("sent", "kept"), [(..., "default"), ("auto", "default"), ("standard", "default"),
                                            ("flex", "flex"), ("Batch", "batch"), ("priority", "priority"),
                                            ("scale", "priority"), ("turbo", "turbo")])
def test_service_tier_normalised_unknown_kept_for_a_warning(sent, kept):
    assert validate_event(good(service_tier=sent), NOW, LIMITS).service_tier == kept


@pytest.mark.parametrize("value", ["", 7, "x" * 129])
def test_bad_service_tier(value):
    assert fields_of(validate_event(good(service_tier=value), NOW, LIMITS)) == {"service_tier"}


@pytest.mark.parametrize("value", ["", "   ", 5, ["a"], "x" * 129])
def test_bad_labels(value):
    assert "customer" in fields_of(validate_event(good(customer=value), NOW, LIMITS))


@pytest.mark.parametrize("value", ["", "x" * 129, 12])
def test_bad_ids(value):
    assert "id" in fields_of(validate_event(good(id=value), NOW, LIMITS))


def test_id_of_128_chars_is_fine():
    assert isinstance(validate_event(good(id="x" * 128), NOW, LIMITS), Event)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-25T10:00:00Z", 1795600800.0),
    ("2026-11-25T10:00:00.250Z", 1795600800.25),
    ("2026-11-25T11:00:00+01:00", 1795600800.0),
    ("2026-11-25T10:00:00z", 1795600800.0),
    (1795600800, 1795600800.0),
    (1795600800.5, 1795600800.5),
])
def test_timestamp_forms(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", ["2026-11-25T10:00:00", "yesterday", "", True, 1795600800000, -5, math.nan, []])
def test_bad_timestamps(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_future_and_too_old_timestamps_rejected_with_pointer_to_import():
    future = validate_event(good(timestamp=NOW + 301), NOW, LIMITS)
    assert any("future" in e.message for e in future)
    assert isinstance(validate_event(good(timestamp=NOW + 299), NOW, LIMITS), Event)
    old = validate_event(good(timestamp=NOW - 24 * 3600 - 1), NOW, LIMITS)
    assert any("llm-usage-exporter import FILE" in e.message for e in old)


@pytest.mark.parametrize(("field", "value"), [("duration_ms", -1), ("duration_ms", "5"), ("ttft_ms", -0.1),
                                              ("cost_usd", -0.01), ("cost_usd", math.inf), ("cost_usd", math.nan),
                                              ("duration_ms", 10**30)])
def test_bad_numbers(field, value):
    assert field in fields_of(validate_event(good(**{field: value}), NOW, LIMITS))


def test_ttft_cannot_exceed_duration():
    assert "ttft_ms" in fields_of(validate_event(good(ttft_ms=2000), NOW, LIMITS))
    assert validate_event(good(ttft_ms=250), NOW, LIMITS).ttft_ms == 250


def test_status_and_error_type():
    assert "status" in fields_of(validate_event(good(status="failed"), NOW, LIMITS))
    assert "error_type" in fields_of(validate_event(good(status="error"), NOW, LIMITS))
    assert validate_event(good(status="error", error_type="timeout"), NOW, LIMITS).error_type == "timeout"
    assert validate_event(good(status="error", error_type="weird"), NOW, LIMITS).error_type == "_OTHER"


def test_error_message_truncated_to_200():
    event = validate_event(good(status="error", error_type="auth", error_message="m" * 500), NOW, LIMITS)
    assert event.error_message == "m" * 200


def test_operation_must_be_known():
    assert "operation" in fields_of(validate_event(good(operation="fine_tune"), NOW, LIMITS))
    assert validate_event(good(operation="agent_run", llm_calls=3, tool_calls=5), NOW, LIMITS).llm_calls == 3


def test_unknown_fields_ignored_and_all_errors_reported():
    assert isinstance(validate_event(good(colour="blue"), NOW, LIMITS), Event)
    errors = validate_event({"id": 5, "status": "nope"}, NOW, LIMITS)
    assert {"id", "timestamp", "tenant", "customer", "model", "status", "duration_ms"} <= fields_of(errors)


def test_non_object_event():
    assert validate_event([1, 2], NOW, LIMITS) == [FieldError("", "event must be a JSON object")]


def test_vendor_usage_objects_replace_token_fields():
    openai = good(input_tokens=..., output_tokens=..., usage_format="openai", usage={
        "prompt_tokens": 1200, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1000},
        "completion_tokens_details": {"reasoning_tokens": 200}})
    event = validate_event(openai, NOW, LIMITS)
    assert (event.input_tokens, event.cache_read_tokens, event.output_tokens, event.reasoning_tokens) == (
        1200, 1000, 300, 200)
    anthropic = good(input_tokens=5, usage_format="anthropic", usage={
        "input_tokens": 100, "cache_read_input_tokens": 900, "cache_creation_input_tokens": 50, "output_tokens": 20})
    event = validate_event(anthropic, NOW, LIMITS)
    assert (event.input_tokens, event.cache_read_tokens, event.cache_write_tokens) == (1050, 900, 50)
    bad = validate_event(good(usage_format="cohere", usage={}), NOW, LIMITS)
    assert {e.field for e in bad} == {"usage_format"}


def _errors(**overrides):
    from helpers import ev

    result = validate_event(ev(**overrides), time.time(), Limits())
    return [] if isinstance(result, Event) else [(e.field, e.message) for e in result]


def test_input_messages_name_the_limit_and_the_rule():
    assert _errors(input_tokens=1e30) == [("input_tokens", "must be <= 10,000,000,000 (the limit for input_tokens)")]
    assert _errors(input_tokens=100.0, output_tokens=5.0) == [], "integral floats are whole numbers"
    from helpers import ev

    assert validate_event(ev(input_tokens=100.0), time.time(), Limits()).input_tokens == 100
    assert _errors(input_tokens=3.5) == [("input_tokens", "must be a whole number (got 3.5)")]
    assert ("status", 'is required ("ok" or "error")') in _errors(status=None)
    for field in ("id", "tenant", "customer", "model", "duration_ms", "timestamp"):
        assert (field, "is required") in _errors(**{field: None}), field


@pytest.mark.parametrize("field", ["tenant", "customer", "model", "provider"])
def test_the_overflow_bucket_name_is_refused_from_clients(field):
    from helpers import ev

    assert [f for f, _ in _errors(**{field: "__other__"})] == [field]
    assert "reserved" in _errors(**{field: "__other__"})[0][1]
    assert convert_batch([ev(**{field: "__other__"})], time.time(), Limits()) is None, "the fast path agrees"
