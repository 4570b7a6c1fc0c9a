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
from itertools import count, repeat
from operator import itemgetter
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
_LABELS = itemgetter(_TENANT, _CUSTOMER, _MODEL, _PROVIDER, _OPERATION, _STATUS, _ERROR_TYPE)


def fold(rows: Sequence[Sequence[Any]], series: dict[str, dict[Any, Any]], customers: dict[Any, list[Any]],
         daily: dict[Any, list[Any]]) -> None:
    """Count ``rows`` into ``series`` (metric name → label values → value), ``customers`` and
    ``daily``; the one place that says which series an event touches. Counters and histograms are
    defaultdicts (see aggregate._new_series). Series are created as one event at a time would
    create them: the optional ones (cache parts, savings, agent calls) only by a non-zero value."""
    if not rows:
        return
    n = len(rows)

    def column(position: int, dtype: Any = np.int64) -> np.ndarray:
        return np.fromiter(map(itemgetter(position), rows), dtype, n)  # one C pass over the rows

    timestamps = column(_TIMESTAMP, np.float64)
    day_column = (timestamps // DAY).astype(np.int64)
    first_day = int(day_column[0])
    index: dict[tuple[Any, ...], int] = {}
    # Each row's group: a key's id is the row number it was first seen at; one stable sort by it
    # numbers the groups 0..groups-1 in the order of first sight, the order of ``index``. Rows of
    # one UTC day (nearly every live fold) are keyed by their labels alone, without a (labels, day)
    # pair per row.
    one_day = bool((day_column == first_day).all())
    keys = map(_LABELS, rows) if one_day else zip(map(_LABELS, rows), day_column.tolist())
    first_seen = np.fromiter(map(index.setdefault, keys, count()), np.int64, n)
    order = np.argsort(first_seen, kind="stable")  # rows by group, groups in order of first sight
    boundary = np.concatenate(([True], np.diff(first_seen[order]) != 0))
    starts = np.flatnonzero(boundary)
    group_of = np.empty(n, np.int64)
    group_of[order] = np.cumsum(boundary) - 1
    counts = np.diff(np.append(starts, n)).tolist()

    def total(values: np.ndarray) -> list[Any]:
        return np.add.reduceat(values[order], starts).tolist()

    inputs, outputs = column(_INPUT_TOKENS), column(_OUTPUT_TOKENS)
    input_totals, output_totals = total(inputs), total(outputs)
    parts = [total(column(position)) for position in (_CACHE_READ, _CACHE_WRITE, _REASONING, _LLM_CALLS, _TOOL_CALLS)]
    money = [total(column(position, object)) for position in (_COST, _SAVED, _EXTRA)]
    latest = np.maximum.reduceat(timestamps[order], starts).tolist()

    requests, errors, tokens = series[m.REQUESTS.name], series[m.ERRORS.name], series[m.TOKENS.name]
    details, cost_series = series[m.TOKEN_DETAILS.name], series[m.COST.name]
    saving_series, premiums = series[m.CACHE_SAVINGS.name], series[m.CACHE_WRITE_PREMIUM.name]
    run_costs, calls, last = series[m.AGENT_RUN_COST.name], series[m.AGENT_CALLS.name], series[m.LAST_EVENT.name]
    # The groups' labels and UTC days, in the order of ``index`` (whose keys hold the day only when
    # the fold spans midnight).
    group_labels = list(index) if one_day else [labels for labels, _ in index]
    group_days = repeat(first_day) if one_day else [day for _, day in index]
    for (tenant, customer, model, provider, operation, status, error_type), day, events, input_tokens, \
            output_tokens, cache_read, cache_write, reasoning, llm_calls, tool_calls, cost, saved, extra, newest \
            in zip(group_labels, group_days, counts, input_totals, output_totals, *parts, *money, latest):
        requests[tenant, customer, model, provider, operation, status] += events
        tokens[tenant, customer, model, provider, "input"] += input_tokens
        tokens[tenant, customer, model, provider, "output"] += output_tokens
        cost_series[tenant, customer, model, provider] += cost
        failed = 0
        if status == "error":
            errors[tenant, model, provider, operation, error_type] += events
            failed = events
        if cache_read:
            details[tenant, model, provider, "cache_read"] += cache_read
        if cache_write:
            details[tenant, model, provider, "cache_write"] += cache_write
        if reasoning:
            details[tenant, model, provider, "reasoning"] += reasoning
        if saved:
            saving_series[tenant, model, provider] += saved
        if extra:
            premiums[tenant, model, provider] += extra
        if operation == "agent_run":
            run_costs[tenant, model, status] += cost
        if llm_calls:
            calls[tenant, model, "llm"] += llm_calls
        if tool_calls:
            calls[tenant, model, "tool"] += tool_calls
        if newest > last.get((tenant,), 0.0):
            last[(tenant,)] = newest
        row = customers[tenant, customer]
        row[EVENTS] += events
        row[INPUT] += input_tokens
        row[OUTPUT] += output_tokens
        row[COST] += cost
        row[ERRORS] += failed
        if newest > row[LATEST]:
            row[LATEST] = newest
        row = daily[tenant, day, customer]
        row[EVENTS] += events
        row[INPUT] += input_tokens
        row[OUTPUT] += output_tokens
        row[COST] += cost
        row[ERRORS] += failed

    ttft_column = column(_TTFT, object)
    _fold_histograms(series, group_labels, group_of, column(_DURATION, np.float64), ttft_column != None,  # noqa: E711
                     ttft_column, inputs, outputs)


def _fold_histograms(series: dict[str, dict[Any, Any]], groups: list[tuple[Any, ...]], group_of: np.ndarray,
                     durations: np.ndarray, has_ttft: np.ndarray, ttft_column: np.ndarray, inputs: np.ndarray,
                     outputs: np.ndarray) -> None:
    """Bucket counts per histogram series: each row's series index from its group, then one
    ``bincount`` over (series, bucket) cells, and each series' sum: of seconds as integer nanoseconds
    (each row rounded on its own, so the total does not depend on how rows were grouped), of
    request sizes as token counts (exact: a token count is at most 1e10, well inside float64)."""
    n = len(group_of)
    ttfts = np.where(has_ttft, ttft_column, 0.0).astype(np.float64)
    sized = np.array([group[_OPERATION] not in _NOT_SIZED for group in groups], np.bool_)[group_of]

    def series_of(labels: Any) -> tuple[list[tuple[Any, ...]], np.ndarray]:
        """The distinct label values ``labels`` picks from the groups, and each row's index among them."""
        keys: dict[tuple[Any, ...], int] = {}
        first_seen = np.fromiter(map(keys.setdefault, map(labels, groups), count()), np.int64, len(groups))
        return list(keys), np.unique(first_seen, return_inverse=True)[1][group_of]

    def add(spec: m.MetricSpec, of: tuple[list[tuple[Any, ...]], np.ndarray], values: np.ndarray,
            mask: np.ndarray | None, suffix: tuple[str, ...] = ()) -> None:
        keys, rows_series = of
        if mask is not None:
            rows_series, values = rows_series[mask], values[mask]
        if not len(values):
            return
        width = len(spec.buckets) + 1
        buckets = np.searchsorted(np.asarray(spec.buckets, np.float64), values, side="left")
        cells = np.bincount(rows_series * width + buckets, minlength=len(keys) * width).reshape(len(keys), width)
        sums = _exact_sums(rows_series, np.rint(values * spec.divisor).astype(np.int64), len(keys))
        state = series[spec.name]
        for s, key in enumerate(keys):
            counts = cells[s]
            filled = np.flatnonzero(counts).tolist()
            if not filled:
                continue
            hist = state[key + suffix]
            hist[0] += sums[s]
            for bucket in filled:
                hist[bucket + 1] += int(counts[bucket])

    by_model = series_of(itemgetter(_TENANT, _MODEL, _PROVIDER))
    add(m.DURATION, series_of(itemgetter(_TENANT, _MODEL, _PROVIDER, _OPERATION)), durations, None)
    add(m.TTFT, by_model, ttfts, has_ttft)
    streamed = has_ttft & (outputs > 1)
    per_token = np.divide(durations - ttfts, outputs - 1, out=np.zeros(n), where=streamed)
    add(m.TPOT, by_model, per_token, streamed)
    add(m.REQUEST_TOKENS, by_model, inputs.astype(np.float64), sized, ("input",))
    add(m.REQUEST_TOKENS, by_model, outputs.astype(np.float64), sized, ("output",))


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
