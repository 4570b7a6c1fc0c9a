"""Count event rows into the usage state, a batch of rows at a time.

Why a batch and numpy: counting one event means ~20 updates to series that, on high-cardinality
traffic (thousands of label sets), are scattered through memory, so counting row by row was mostly
cache misses (~8 µs per event when the state was cold, half of all ingest time). Here the rows are
grouped first: every row of one label group (tenant, customer, model, provider, operation, status,
error type, UTC day) is summed by numpy in one pass over contiguous columns, and each series is then
touched once per group, or, for histograms, once per series. The more rows a fold holds the fewer
touches per event, which is why :class:`~exporter.core.aggregate.Aggregator` folds its pending rows
only when something reads the state or enough have piled up.

Exactness, so that counting the same rows grouped differently (live in several folds, after a
restart in one replay) gives the same state to the last digit and no series ever moves backwards:
token and call counts are summed as int64 (each value is at most 1e10, see exporter/core/events.py,
so a fold is far below the 9.2e18 limit), money as Python ints (atto-dollars outgrow int64), sums of
seconds as integer nanoseconds (:data:`exporter.core.metrics.NANOS`), bucket counts as integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import metrics as m

DAY = 86400
# Positions in a row (see aggregate.ROW_FIELDS) and in customer/daily rows.
(_TENANT, _CUSTOMER, _MODEL, _PROVIDER, _OPERATION, _STATUS, _ERROR_TYPE, _INPUT_TOKENS, _OUTPUT_TOKENS,
 _CACHE_READ, _CACHE_WRITE, _REASONING, _COST, _SAVED, _EXTRA, _LLM_CALLS, _TOOL_CALLS, _TIMESTAMP,
 _DURATION, _TTFT) = range(20)
# Customer rows (the read API's): events, input_tokens, output_tokens, cost (atto-USD), errors,
# latest_timestamp; daily rows (per tenant, UTC day, customer) are the first five slots.
EVENTS, INPUT, OUTPUT, COST, ERRORS, LATEST = range(6)
_NOT_SIZED = ("agent_run", "tool_call")  # operations without a request-size histogram


def fold(rows: Sequence[Sequence[Any]], series: dict[str, dict[Any, Any]], customers: dict[Any, list[Any]],
         daily: dict[Any, list[Any]]) -> None:
    """Count ``rows`` into ``series`` (metric name → label values → value), ``customers`` and
    ``daily``; the one place that says which series an event touches. Counters and histograms are
    defaultdicts (see aggregate._new_series). Series are created as one event at a time would
    create them: the optional ones (cache parts, savings, agent calls) only by a non-zero value."""
    if not rows:
        return
    columns = [[row[i] for row in rows] for i in range(len(rows[0]))]  # 2x faster than zip(*rows) here
    timestamps = np.fromiter(columns[_TIMESTAMP], np.float64, len(rows))
    days = (timestamps // DAY).astype(np.int64).tolist()
    index: dict[tuple[Any, ...], int] = {}
    setdefault = index.setdefault
    group_of = np.fromiter((setdefault(key, len(index)) for key in zip(*columns[:_INPUT_TOKENS], days)),
                           np.int64, len(rows))
    order = np.argsort(group_of, kind="stable")
    sorted_groups = group_of[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_groups[1:] != sorted_groups[:-1])))
    counts = np.diff(np.append(starts, len(rows))).tolist()

    def total(position: int, dtype: Any = np.int64) -> list[Any]:
        values = np.fromiter(columns[position], dtype, len(rows)) if dtype is not object \
            else np.array(columns[position], dtype=object)
        return np.add.reduceat(values[order], starts).tolist()

    inputs, outputs = total(_INPUT_TOKENS), total(_OUTPUT_TOKENS)
    cache_reads, cache_writes, reasonings = total(_CACHE_READ), total(_CACHE_WRITE), total(_REASONING)
    llm_calls, tool_calls = total(_LLM_CALLS), total(_TOOL_CALLS)
    costs, savings, extras = total(_COST, object), total(_SAVED, object), total(_EXTRA, object)
    latest = np.maximum.reduceat(timestamps[order], starts).tolist()

    requests, errors, tokens = series[m.REQUESTS.name], series[m.ERRORS.name], series[m.TOKENS.name]
    details, cost_series = series[m.TOKEN_DETAILS.name], series[m.COST.name]
    saving_series, premiums = series[m.CACHE_SAVINGS.name], series[m.CACHE_WRITE_PREMIUM.name]
    run_costs, calls, last = series[m.AGENT_RUN_COST.name], series[m.AGENT_CALLS.name], series[m.LAST_EVENT.name]
    sizes = series[m.REQUEST_TOKENS.name]
    for g, (tenant, customer, model, provider, operation, status, error_type, day) in enumerate(index):
        n, input_tokens, output_tokens, cost = counts[g], inputs[g], outputs[g], costs[g]
        requests[tenant, customer, model, provider, operation, status] += n
        tokens[tenant, customer, model, provider, "input"] += input_tokens
        tokens[tenant, customer, model, provider, "output"] += output_tokens
        cost_series[tenant, customer, model, provider] += cost
        failed = 0
        if status == "error":
            errors[tenant, model, provider, operation, error_type] += n
            failed = n
        if cache_reads[g]:
            details[tenant, model, provider, "cache_read"] += cache_reads[g]
        if cache_writes[g]:
            details[tenant, model, provider, "cache_write"] += cache_writes[g]
        if reasonings[g]:
            details[tenant, model, provider, "reasoning"] += reasonings[g]
        if savings[g]:
            saving_series[tenant, model, provider] += savings[g]
        if extras[g]:
            premiums[tenant, model, provider] += extras[g]
        if operation == "agent_run":
            run_costs[tenant, model, status] += cost
        if llm_calls[g]:
            calls[tenant, model, "llm"] += llm_calls[g]
        if tool_calls[g]:
            calls[tenant, model, "tool"] += tool_calls[g]
        newest = latest[g]
        if newest > last.get((tenant,), 0.0):
            last[(tenant,)] = newest
        if operation not in _NOT_SIZED:  # the size histograms' sums are the token totals
            sizes[tenant, model, provider, "input"][0] += input_tokens
            sizes[tenant, model, provider, "output"][0] += output_tokens
        row = customers[tenant, customer]
        row[EVENTS] += n
        row[INPUT] += input_tokens
        row[OUTPUT] += output_tokens
        row[COST] += cost
        row[ERRORS] += failed
        if newest > row[LATEST]:
            row[LATEST] = newest
        row = daily[tenant, day, customer]
        row[EVENTS] += n
        row[INPUT] += input_tokens
        row[OUTPUT] += output_tokens
        row[COST] += cost
        row[ERRORS] += failed

    _fold_histograms(columns, group_of, list(index), series)


def _fold_histograms(columns: list[list[Any]], group_of: np.ndarray, groups: list[tuple[Any, ...]],
                     series: dict[str, dict[Any, Any]]) -> None:
    """Bucket counts per histogram series: each row's series index from its group, then one
    ``bincount`` over (series, bucket) cells. Sums of seconds are added as integer nanoseconds (each
    row rounded on its own, so the total does not depend on how rows were grouped); the
    request-size sums were added from the groups' token totals."""
    n = len(group_of)
    durations = np.fromiter(columns[_DURATION], np.float64, n)
    ttft_column = columns[_TTFT]
    has_ttft = np.fromiter((value is not None for value in ttft_column), np.bool_, n)
    ttfts = np.fromiter((0.0 if value is None else value for value in ttft_column), np.float64, n)
    outputs = np.fromiter(columns[_OUTPUT_TOKENS], np.int64, n)
    sized = np.array([group[_OPERATION] not in _NOT_SIZED for group in groups], np.bool_)[group_of]

    def add(spec: m.MetricSpec, key_of_group: Any, values: np.ndarray, mask: np.ndarray | None) -> None:
        keys: dict[tuple[Any, ...], int] = {}
        series_of_group = np.array([keys.setdefault(key_of_group(group), len(keys)) for group in groups], np.int64)
        rows_series = series_of_group[group_of]
        if mask is not None:
            rows_series, values = rows_series[mask], values[mask]
        if not len(values):
            return
        width = len(spec.buckets) + 1
        buckets = np.searchsorted(np.asarray(spec.buckets, np.float64), values, side="left")
        cells = np.bincount(rows_series * width + buckets, minlength=len(keys) * width).reshape(len(keys), width)
        sums = _exact_sums(rows_series, np.rint(values * spec.divisor).astype(np.int64), len(keys)) \
            if spec.divisor != 1 else None
        state = series[spec.name]
        for key, s in keys.items():
            counts = cells[s]
            filled = np.flatnonzero(counts).tolist()
            if not filled:
                continue
            hist = state[key]
            if sums is not None:
                hist[0] += sums[s]
            for bucket in filled:
                hist[bucket + 1] += int(counts[bucket])

    add(m.DURATION, lambda g: (g[_TENANT], g[_MODEL], g[_PROVIDER], g[_OPERATION]), durations, None)
    add(m.TTFT, lambda g: (g[_TENANT], g[_MODEL], g[_PROVIDER]), ttfts, has_ttft)
    streamed = has_ttft & (outputs > 1)
    per_token = np.divide(durations - ttfts, outputs - 1, out=np.zeros(n), where=streamed)
    add(m.TPOT, lambda g: (g[_TENANT], g[_MODEL], g[_PROVIDER]), per_token, streamed)
    inputs = np.fromiter(columns[_INPUT_TOKENS], np.int64, n).astype(np.float64)
    add(m.REQUEST_TOKENS, lambda g: (g[_TENANT], g[_MODEL], g[_PROVIDER], "input"), inputs, sized)
    add(m.REQUEST_TOKENS, lambda g: (g[_TENANT], g[_MODEL], g[_PROVIDER], "output"), outputs.astype(np.float64),
        sized)


def _exact_sums(index: np.ndarray, values: np.ndarray, size: int) -> list[int]:
    """Per-index sums of non-negative int64 ``values`` as Python ints: in int64 when no sum can
    overflow it (always, short of thousands of week-long requests in one fold), else in Python ints."""
    if not len(values) or float(values.max()) * len(values) < 2.0**63:
        sums = np.zeros(size, np.int64)
        np.add.at(sums, index, values)
        return sums.tolist()
    exact = [0] * size
    for i, value in zip(index.tolist(), values.tolist()):
        exact[i] += value
    return exact
