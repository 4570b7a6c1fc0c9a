""":func:`exporter.core.fold.fold` counts rows in bulk (grouped, numpy sums); these properties hold it
equal, to the last digit, to counting the same rows one event at a time, the definition written out plainly below
(:func:`one_by_one`), however the rows are cut into folds.

Rows are drawn at the edges that change which series an event touches or what it adds: errors with
and without a type, agent runs and tool calls (no size histogram, run cost), no TTFT, one or zero
output tokens (no TPOT), zero and non-zero cache/reasoning/savings/call counts, money above 2^63
atto-dollars (it must stay exact), durations on a bucket bound and past the last one, timestamps on
both sides of a UTC midnight, and few label values so groups repeat.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from functools import partial
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core import metrics as m
from exporter.core.aggregate import ROW_FIELDS, _new_series
from exporter.core.fold import DAY, fold

MIDNIGHT = 20_000.0 * DAY
_SPECS = {spec.name: spec for spec in m.USAGE_METRICS if spec.kind == "histogram"}


State = tuple[dict[str, dict[Any, Any]], dict[Any, list[Any]], dict[Any, list[Any]]]


def new_state() -> State:
    return ({spec.name: _new_series(spec) for spec in m.USAGE_METRICS},
            defaultdict(partial(list, (0, 0, 0, 0, 0, 0.0))), defaultdict(partial(list, (0, 0, 0, 0, 0))))


def one_by_one(rows: list[tuple[Any, ...]]) -> State:
    """What each event counts, one event at a time (the README's metrics table in code)."""
    series, customers, daily = new_state()
    s = series

    def observe(name: str, key: tuple[str, ...], value: float) -> None:
        hist, spec = s[name][key], _SPECS[name]
        hist[0] += round(value * spec.divisor) if spec.divisor != 1 else value  # seconds: integer nanoseconds
        hist[bisect_left(spec.buckets, value) + 1] += 1

    for row in rows:
        r = dict(zip(ROW_FIELDS, row))
        t, c, mo, p, op, st_ = r["tenant"], r["customer"], r["model"], r["provider"], r["operation"], r["status"]
        s["llm_requests"][t, c, mo, p, op, st_] += 1
        s["llm_tokens"][t, c, mo, p, "input"] += r["input_tokens"]
        s["llm_tokens"][t, c, mo, p, "output"] += r["output_tokens"]
        s["llm_cost_usd"][t, c, mo, p] += r["cost"]
        if st_ == "error":
            s["llm_request_errors"][t, mo, p, op, r["error_type"]] += 1
        for field, token_type in (("cache_read_tokens", "cache_read"), ("cache_write_tokens", "cache_write"),
                                  ("reasoning_tokens", "reasoning")):
            if r[field]:
                s["llm_token_details"][t, mo, p, token_type] += r[field]
        if r["cache_saved"]:
            s["llm_cache_savings_usd"][t, mo, p] += r["cache_saved"]
        if r["cache_extra"]:
            s["llm_cache_write_premium_usd"][t, mo, p] += r["cache_extra"]
        if op == "agent_run":
            s["llm_agent_run_cost_usd"][t, mo, st_] += r["cost"]
        if r["llm_calls"]:
            s["llm_agent_calls"][t, mo, "llm"] += r["llm_calls"]
        if r["tool_calls"]:
            s["llm_agent_calls"][t, mo, "tool"] += r["tool_calls"]
        last = s["llm_last_event_timestamp_seconds"]
        last[(t,)] = max(last.get((t,), 0.0), r["timestamp"])
        observe("llm_request_duration_seconds", (t, mo, p, op), r["duration_s"])
        if r["ttft_s"] is not None:
            observe("llm_time_to_first_token_seconds", (t, mo, p), r["ttft_s"])
            if r["output_tokens"] > 1:
                observe("llm_time_per_output_token_seconds", (t, mo, p),
                        (r["duration_s"] - r["ttft_s"]) / (r["output_tokens"] - 1))
        if op not in ("agent_run", "tool_call"):
            observe("llm_request_tokens", (t, mo, p, "input"), r["input_tokens"])
            observe("llm_request_tokens", (t, mo, p, "output"), r["output_tokens"])
        failed = int(st_ == "error")
        for row_state in (customers[t, c], daily[t, int(r["timestamp"] // DAY), c]):
            for slot, add in enumerate((1, r["input_tokens"], r["output_tokens"], r["cost"], failed)):
                row_state[slot] += add
        customers[t, c][5] = max(customers[t, c][5], r["timestamp"])
    return series, customers, daily


def same(a: Any, b: Any) -> bool:
    """Equal to the last digit, and of the same type (a numpy scalar in the state would break
    encoding): however rows are grouped, the sums are the same, so no series moves backwards when a
    restart replays rows in other groups than live counting did."""
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


money = st.one_of(st.just(0), st.integers(1, 10**18), st.integers(2**63 - 10, 10**24))
rows_strategy = st.lists(st.builds(
    lambda tenant, customer, model, op, error, tokens, parts, cost, saved, extra, calls, ts, duration, ttft: (
        tenant, customer, model, "prov", op, "error" if error else "ok", error or "", tokens[0], tokens[1],
        *parts, cost, saved, extra, *calls, ts, duration, None if ttft is None else min(ttft, duration)),
    st.sampled_from(["a", "b"]), st.sampled_from(["c1", "c2", "c3"]), st.sampled_from(["m1", "m2"]),
    st.sampled_from(["chat", "embeddings", "agent_run", "tool_call"]),
    st.sampled_from([None, "timeout", "rate_limited"]),
    st.tuples(st.sampled_from([0, 1, 2, 4, 5, 10**10]), st.sampled_from([0, 1, 2, 64, 10**10])),
    st.tuples(*[st.sampled_from([0, 0, 3]) for _ in range(3)]),
    money, money, money, st.tuples(st.sampled_from([0, 2]), st.sampled_from([0, 0, 1])),
    st.sampled_from([MIDNIGHT - 0.5, MIDNIGHT, MIDNIGHT + 100.25]),
    st.sampled_from([0.0, 0.01, 0.015, 655.36, 700.0, 2.5]),
    st.sampled_from([None, 0.0, 0.001, 0.3, 10.0, 20.0])), max_size=60)


@settings(max_examples=300, deadline=None)
@given(rows=rows_strategy, cuts=st.lists(st.integers(0, 60), max_size=4))
def test_fold_counts_what_one_event_at_a_time_counts(rows, cuts):
    expected = one_by_one(rows)
    got = new_state()
    bounds = sorted({0, len(rows), *(c for c in cuts if c <= len(rows))})
    for start, end in zip(bounds, bounds[1:]):
        fold(rows[start:end], *got)
    for name in expected[0]:
        assert set(got[0][name]) == set(expected[0][name]), name  # no series missing, none created by a zero
        for key, value in expected[0][name].items():
            assert same(got[0][name][key], value), (name, key, got[0][name][key], value)
    for mine, theirs in zip(got[1:], expected[1:]):
        assert set(mine) == set(theirs)
        assert all(same(mine[key], theirs[key]) for key in theirs)


def test_money_past_64_bits_is_summed_exactly():
    row = ("a", "c", "m", "p", "chat", "ok", "", 1, 1, 0, 0, 0, 10**24 + 7, 0, 0, 0, 0, MIDNIGHT, 1.0, None)
    series, customers, _ = new_state()
    fold([row] * 3, series, customers, new_state()[2])
    assert series["llm_cost_usd"][("a", "c", "m", "p")] == 3 * (10**24 + 7)
    assert customers[("a", "c")][3] == 3 * (10**24 + 7)
