"""The fast path (msgspec decodes a whole batch into :class:`Event`, then the compiled ``_finish``)
and the slow path (:func:`validate_event`, field by field) are derived from one statement of the
rules (``RULES``, ``TOKEN_PARTS``, ``NOT_ABOVE``); these properties hold them equal:

- for one raw event, ``convert_batch([e])`` and ``decode_batch(orjson.dumps({"events": [e]}))``
  accept exactly when ``validate_event(e)`` returns an Event, and then the Events are equal field
  by field, except where the fast path gives up by design (:func:`slow_path_only` names the reason:
  the slow path then decides, so a client never sees the difference);
- for batches of up to three events, a batch the fast path accepts is the slow path's Events.

Values are generated from the rule table itself: for every rule, the edges of its kind (0, the
maximum, maximum + 1, 100.0 and 3.5 for counts, blank / over-long / reserved labels, string and
number timestamps at the edges of the ingest window, ``null``...), plus the cross-field edges
(ttft = duration and just above it, token parts equal to their whole and one above), ``status``
ok/error with and without ``error_type``, token estimation, vendor usage objects and unknown fields.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.core import events as rules
from exporter.core.events import (
    NOT_ABOVE, OVERFLOW_LABEL, RULES, TOKEN_PARTS, Event, Limits, convert_batch, decode_batch, validate_event,
)

NOW = 1_790_000_000.0
LIMITS = (Limits(max_age_s=86400, max_future_s=300, max_label_length=16),
          Limits(max_age_s=3600, max_future_s=60, max_label_length=128),
          Limits(max_age_s=86400, max_future_s=300, max_label_length=2000))  # above the 1024 hard ceiling
OUTCOMES: Counter[str] = Counter()


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def edges(rule: rules.Rule, limits: Limits) -> st.SearchStrategy[Any]:
    """Values at and around the edges of what ``rule`` accepts, good and bad."""
    kind, top = rule.kind, rule.maximum
    junk = st.sampled_from([None, True, [], {"a": 1}, "12", 7])
    if kind == "id":
        return st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["", " ", "x" * 128, "x" * 129]), junk)
    if kind == "timestamp":
        low, high = NOW - limits.max_age_s, NOW + limits.max_future_s
        inside = st.floats(low, high)
        return st.one_of(inside, inside.map(rfc3339), inside.map(lambda t: rfc3339(t).lower()),
                         inside.map(lambda t: rfc3339(t)[:-1]), inside.map(int),
                         st.sampled_from([low, high, low - 1, high + 1, rfc3339(low - 1), rfc3339(high + 1),
                                          NOW * 1000, -1, 0, math.nan, math.inf, "yesterday", "", 10**400]), junk)
    if kind == "label":
        n = limits.max_label_length
        return st.one_of(st.text(max_size=8), st.sampled_from(
            ["acme", " ", "\t\n", " a ", "", OVERFLOW_LABEL, " __other__", "x" * n, "x" * (n + 1), "x" * 1024,
             "x" * 1025, "auto", "Flex", "scale", "timeout", "weird"]), junk)
    if kind in ("tokens", "count"):
        top = int(top)
        return st.one_of(st.integers(0, 5000), st.sampled_from(
            [0, 1, top, top + 1, -1, 100.0, 3.5, 0.0, float(top), float(top + 1), 1e30, -0.0, math.nan, math.inf,
             2**64]), junk)
    if kind == "number":
        return st.one_of(st.floats(0, top), st.integers(0, 10**6), st.sampled_from(
            [0, -0.0, top, float(top) + 1, -1, -1e-300, 3.5, 100, math.nan, math.inf, 10**30]), junk)
    if kind == "choice":
        return st.one_of(st.sampled_from([*rule.choices, "x", " chat", "OK", ""]), junk)
    if kind == "text":
        return st.one_of(st.text(max_size=300), st.sampled_from(["", "m" * 201]), junk)
    return st.sampled_from([None, "openai", "cohere"])  # vendor


def base_event(limits: Limits) -> st.SearchStrategy[dict[str, Any]]:
    """A valid event (what most traffic is)."""
    return st.fixed_dictionaries(
        {"id": st.text(min_size=1, max_size=20), "timestamp": st.floats(NOW - limits.max_age_s + 1, NOW + 1),
         "tenant": st.sampled_from(["acme", "globex"]), "customer": st.text(min_size=1, max_size=8).filter(str.strip),
         "model": st.sampled_from(["gpt-4o", "mystery"]), "input_tokens": st.integers(100, 10_000),
         "output_tokens": st.integers(100, 5000), "duration_ms": st.floats(1000, 60_000),
         "status": st.sampled_from(["ok", "error"]), "error_type": st.sampled_from(["timeout", "odd"])},
        optional={"cache_read_tokens": st.integers(0, 50), "reasoning_tokens": st.integers(0, 50),
                  "cache_write_tokens": st.integers(0, 40), "cache_write_1h_tokens": st.integers(0, 20),
                  "audio_input_tokens": st.integers(0, 60), "audio_output_tokens": st.integers(0, 60),
                  "service_tier": st.sampled_from(["default", "auto", "flex", "batch", "priority", "odd"]),
                  "ttft_ms": st.floats(0, 900), "cost_usd": st.floats(0, 5), "error_message": st.text(max_size=300),
                  "operation": st.sampled_from(["chat", "agent_run", "embeddings"]), "provider": st.just("openai"),
                  "sku": st.just("search"), "llm_calls": st.integers(0, 9), "x_unknown": st.just({"a": [1]})})


@st.composite
def cross_edges(draw: st.DrawFn) -> dict[str, Any]:
    """One cross-field rule at its edge: equal (valid) or one above (refused)."""
    over = draw(st.sampled_from([0, 1]))
    if draw(st.booleans()):
        parts, whole = draw(st.sampled_from(TOKEN_PARTS))
        total = draw(st.integers(0, 1000))
        split = draw(st.integers(0, total))
        values = dict(zip(parts, [split, total - split] if len(parts) == 2 else [total]))
        return {**values, parts[0]: values[parts[0]] + over, whole: total}
    field, bound, _ = draw(st.sampled_from(NOT_ABOVE))
    value = draw(st.floats(0, 10_000))
    return {bound: value, field: value + over}


@st.composite
def raw_event(draw: st.DrawFn) -> tuple[dict[str, Any], Limits]:
    limits = draw(st.sampled_from(LIMITS))
    event = draw(base_event(limits))
    for rule in draw(st.lists(st.sampled_from(RULES), max_size=3, unique=True)):
        if draw(st.integers(0, 9)) == 0:
            event.pop(rule.name, None)  # absent
        else:
            event[rule.name] = draw(edges(rule, limits))
    if draw(st.integers(0, 3)) == 0:
        event.update(draw(cross_edges()))
    if draw(st.integers(0, 9)) == 0:  # tokens estimated from text or chars instead
        kind = draw(st.sampled_from(["input", "output"]))
        event.pop(f"{kind}_tokens", None)
        event[draw(st.sampled_from([f"{kind}_text", f"{kind}_chars"]))] = draw(
            st.one_of(st.text(max_size=40), st.integers(-1, 400), st.none()))
    if event.get("usage_format") is not None:
        event["usage"] = draw(st.sampled_from([{"prompt_tokens": 10, "completion_tokens": 2}, {}, "x"]))
    return event, limits


def _fits(rule: rules.Rule, value: Any) -> bool:
    """Whether msgspec's annotation of the rule (the one Event is generated with) takes the value."""
    try:
        msgspec.convert(value, rules._annotation(rule))
    except (msgspec.ValidationError, TypeError, ValueError):
        return False
    return True


def slow_path_only(raw: dict[str, Any]) -> str | None:
    """Why the fast path leaves an event the slow path accepts to the slow path, if it does: the
    cases the rules' module docstring lists, and nothing else."""
    if raw.get("usage_format") is not None:
        return "vendor usage object"
    for rule in RULES:
        value = raw.get(rule.name)
        if rule.kind == "tokens" and value is None:
            return "tokens estimated from text"
        if rule.name not in raw or _fits(rule, value):
            continue
        if value is None:
            return "null for a field with a default"
        if rule.kind in ("tokens", "count") and isinstance(value, float):
            return "integral float count"
        if rule.when is not None and raw.get(rule.when[0]) != rule.when[1]:
            return f"{rule.name} not read unless {rule.when[0]}={rule.when[1]}"
    return None


def _dumps(value: Any) -> bytes | None:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers past 64 bits, lone surrogates: no JSON body to compare
        return None


def check(raw: dict[str, Any], fast: list[Any] | None, limits: Limits, path: str) -> None:
    slow = validate_event(raw, NOW, limits)
    if not isinstance(slow, Event):
        assert fast is None, f"{path} accepted what the slow path refuses: {slow}"
        OUTCOMES["both refuse"] += 1
        return
    if fast is not None:
        assert fast == [slow], path
        for field in Event.__struct_fields__:  # field by field, types too (float timestamp, int counts)
            assert type(getattr(fast[0], field)) is type(getattr(slow, field)), (path, field)
        OUTCOMES["both accept"] += 1
        return
    reason = slow_path_only(raw)
    assert reason is not None, f"{path} gave up on a valid event for no stated reason: {raw}"
    OUTCOMES[f"slow path only: {reason}"] += 1


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_event())
def test_one_event_fast_and_slow_paths_agree(case):
    raw, limits = case
    check(raw, convert_batch([raw], NOW, limits), limits, "convert_batch")
    body = _dumps({"events": [raw]})
    if body is not None:  # what a client sends (orjson writes NaN as null): that is the slow path's input too
        check(orjson.loads(body)["events"][0], decode_batch(body, NOW, limits), limits, "decode_batch")


def test_the_property_saw_every_outcome():
    """Runs after the property (file order): the generator reached both sides and the slow-only cases."""
    assert OUTCOMES["both accept"] > 100 and OUTCOMES["both refuse"] > 100, OUTCOMES
    assert sum(v for k, v in OUTCOMES.items() if k.startswith("slow path only")) > 10, OUTCOMES
    print(f"\nfast vs slow path: {dict(OUTCOMES)}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_event(), min_size=1, max_size=3))
def test_a_batch_the_fast_path_accepts_is_the_slow_paths_events(cases):
    limits = cases[0][1]
    raws = [raw for raw, _ in cases]
    fast = convert_batch(raws, NOW, limits)
    if fast is not None:
        assert fast == [validate_event(raw, NOW, limits) for raw in raws]


def test_fast_path_takes_the_common_case():
    limits = LIMITS[0]
    raw = {"id": "a", "timestamp": NOW, "tenant": "t", "customer": "c", "model": "m", "input_tokens": 5,
           "output_tokens": 1, "duration_ms": 10, "status": "ok", "ttft_ms": 2, "cache_read_tokens": 1}
    assert convert_batch([raw], NOW, limits) == [validate_event(raw, NOW, limits)]
    assert convert_batch([dict(raw, timestamp="2026-09-21T12:00:00Z")], NOW, limits) is not None
    assert decode_batch(orjson.dumps({"events": [raw]}), NOW, limits) is not None
    assert decode_batch(orjson.dumps({"events": [dict(raw, input_tokens=-1)]}), NOW, limits) is None


def test_the_event_struct_is_the_rule_table():
    """Every rule is a field of Event and nothing else is; required rules have no default."""
    assert Event.__struct_fields__ == tuple(rule.name for rule in RULES)
    info = {f.name: f for f in msgspec.inspect.type_info(Event).fields}
    for rule in RULES:
        assert info[rule.name].required == (rule.required and rule.when is None), rule.name
