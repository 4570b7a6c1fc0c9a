"""The one ingest path: raw events → validated, deduplicated, priced, pre-aggregated series.

The HTTP API, the simulator, import and backfill all call :meth:`Aggregator.ingest`. Each accepted
event becomes one compact row (labels capped, money priced); the request's rows are committed to
the state store's log in one transaction, then queued to be counted and acknowledged. Queued rows
are counted in bulk (:mod:`exporter.core.fold`, which start-up replay runs too) before anything
reads the state, so a reader never misses an acknowledged event. A failed commit leaves memory
untouched: nothing is half-counted. Why rows and not per-series deltas: on
high-cardinality traffic nearly every event has its own label set, so reducing a batch to deltas
first costs as much as counting it, and then memory has to merge the deltas again.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict, deque
from functools import partial
from itertools import repeat, starmap
from operator import itemgetter
from dataclasses import dataclass, field, replace
from typing import Any, Generator, Iterable, Iterator, Mapping, Sequence

from . import metrics as m
from ..config import Config
from .fold import COST as _COST, DAY, ERRORS as _ERRORS, EVENTS as _EVENTS, INPUT as _INPUT, LATEST as _LATEST, \
    OUTPUT as _OUTPUT, fold as fold_rows
from .events import OVERFLOW_LABEL, Event, FieldError, Limits, convert_batch, validate_event
from .pricing import PriceBook, Schedule, usd
from .store import Checkpoint, StateStore, StoreUnavailable
from .telemetry import Telemetry

OTHER = OVERFLOW_LABEL
_KEY = itemgetter(0)  # the key of a (key, time accepted) item
UNKNOWN_PROVIDER = "unknown"
# OpenTelemetry gen_ai.provider.name well-known values: always accepted as label values.
KNOWN_PROVIDERS = frozenset({
    "openai", "anthropic", "aws.bedrock", "azure.ai.inference", "azure.ai.openai", "cohere", "deepseek",
    "gcp.gemini", "gcp.gen_ai", "gcp.vertex_ai", "groq", "ibm.watsonx.ai", "mistral_ai", "perplexity", "x_ai",
    UNKNOWN_PROVIDER,
})


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    # Accepted events counted with a caveat (unknown model priced at $0, unknown service tier priced
    # at the default tier): same shape as ``errors``, ``[{index, id, field, message}]``.
    warnings: list[dict[str, Any]] = field(default_factory=list)
    rejection_reasons: list[str] = field(default_factory=list)
    rejected_tenants: list[Any] = field(default_factory=list)  # the raw tenant of each rejection, for its label

    def warn(self, index: int, event_id: str | None, field_name: str, message: str) -> None:
        self.warnings.append({"index": index, "id": event_id, "field": field_name, "message": message})

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected,
                "errors": self.errors, "warnings": self.warnings}


class LabelCaps:
    """Folds label values past their cap into ``__other__``: memory and series stay bounded whatever
    clients send. First come, first kept; the kept sets are rebuilt from the store on restart."""

    def __init__(self, config: Config, prices: PriceBook) -> None:
        self.configure(config, prices)
        self.tenants: set[str] = set()
        self.customers: dict[str, set[str]] = {}
        self.combinations: dict[str, set[tuple[str, str, str]]] = {}
        self.unknown_models: set[str] = set()
        self.unknown_providers: set[str] = set()

    def configure(self, config: Config, prices: PriceBook) -> None:
        """The caps and the price table (start-up, or a reload: values already kept stay kept)."""
        self.fixed_tenants = frozenset(config.tenants) if config.auth_required and config.tenants else None
        self.max_tenants = config.limits_max_tenants
        self.max_customers = config.limits_max_customers_per_tenant
        self.max_combinations = config.limits_max_combinations_per_tenant
        self.max_unknown = config.limits_max_unknown_models
        self.max_label_length = config.limits_max_label_length
        self.prices = prices

    def remember(self, tenant: str, customer: str) -> None:
        self.tenants.add(tenant)
        self.customers.setdefault(tenant, set()).add(customer)

    def tenant(self, value: str, overflow: list[str]) -> str:
        if value in self.tenants or (self.fixed_tenants is not None and value in self.fixed_tenants):
            self.tenants.add(value)
            return value
        if self.fixed_tenants is None and len(self.tenants) < self.max_tenants:
            self.tenants.add(value)
            return value
        overflow.append("tenant")
        return OTHER

    def tenant_of_rejection(self, value: Any) -> str:
        """The tenant label of a rejection self-metric: decided like an accepted event's (so the label
        stays within the same cap), ``__other__`` for a value no event could carry, "" for none."""
        if value is None:
            return ""
        if not isinstance(value, str) or not value.strip() or len(value) > self.max_label_length:
            return OTHER
        return self.tenant(value, [])

    def customer(self, tenant: str, value: str, overflow: list[str]) -> str:
        seen = self.customers.get(tenant)
        if seen is None:
            seen = self.customers[tenant] = set()
        return self._keep(seen, self.max_customers, value, "customer", overflow)

    @staticmethod
    def _keep(seen: set[str], cap: int, value: str, label: str, overflow: list[str]) -> str:
        """``value`` if already kept or ``seen`` is below ``cap`` (then kept), else ``__other__``."""
        if value in seen:
            return value
        if len(seen) < cap:
            seen.add(value)
            return value
        overflow.append(label)
        return OTHER

    def combination(self, tenant: str, customer: str, model: str, provider: str, overflow: list[str]) -> str:
        """The customer label, or ``__other__`` when the tenant already has its cap of
        (customer, model, provider) combinations: each label is capped, and so is their product."""
        seen = self.combinations.get(tenant)
        if seen is None:
            seen = self.combinations[tenant] = set()
        combination = (customer, model, provider)
        if combination in seen or customer == OTHER:
            return customer
        if len(seen) < self.max_combinations:
            seen.add(combination)
            return customer
        overflow.append("series")
        return OTHER

    def model(self, value: str, overflow: list[str]) -> str:
        if value in self.prices:
            return value
        return self._keep(self.unknown_models, self.max_unknown, value, "model", overflow)

    def provider(self, value: str, overflow: list[str]) -> str:
        if value in KNOWN_PROVIDERS or value in self.prices.providers:
            return value
        return self._keep(self.unknown_providers, self.max_unknown, value, "provider", overflow)


class DedupeWindow:
    """One tenant's remembered ids (key → time accepted), oldest first, with its own size and age.

    ``order`` holds the same keys in the same order: forgetting the oldest is a ``popleft``. Finding
    them by iterating ``seen`` from its start instead costs a skip over every slot deleted since the
    dict last resized (tens of thousands in a full window), on every batch: 3 µs per event once the
    windows were full, more than all of pricing."""

    __slots__ = ("name", "max_entries", "max_age", "seen", "order")

    def __init__(self, name: str, max_entries: int, max_age: float) -> None:
        self.name, self.max_entries, self.max_age = name, max_entries, max_age
        self.seen: dict[str, float] = {}
        self.order: deque[str] = deque()

    def __len__(self) -> int:
        return len(self.seen)

    def forget_oldest(self, count: int) -> None:
        """Drop the ``count`` oldest keys: pops and deletes chained in C (a full window forgets as
        many keys as each batch brings, so a Python loop here cost ~2 % of ingest)."""
        deque(map(self.seen.__delitem__, starmap(self.order.popleft, repeat((), count))), maxlen=0)

    def expired(self, cutoff: float) -> int:
        """How many of the oldest keys were accepted before ``cutoff``."""
        seen, order = self.seen, self.order
        count = 0
        for key in order:
            if seen[key] >= cutoff:
                break
            count += 1
        return count


class DedupeWindows:
    """Accepted (tenant, id) keys remembered for idempotency, in one window per tenant, so a tenant
    flooding new ids evicts its own oldest ids and never another tenant's.

    Each window keeps at most its tenant's ``dedupe_max_entries`` for its ``dedupe_max_age`` (the
    config's per-tenant settings, else the ``dedupe.*`` defaults). Past the window an id is
    forgotten: one forgotten for *age* would be refused anyway as too old (max-age >= ingest.max-age
    is enforced), one evicted for *size* would be counted again if retried, which
    ``llm_exporter_dedupe_evictions_total{tenant,reason="size"}`` shows. Memory is bounded twice: at
    most ``limits.max-tenants`` windows (later tenants share the ``__other__`` window), and at most
    ``dedupe.max-entries`` keys in all: past it, the *largest* window gives up its oldest ids, so a
    flood still only costs the flooder. The store keeps ``tenant\x00id`` keys as a journal of
    accepted keys (see :meth:`Aggregator.checkpoint`); windows are rebuilt from it on load.
    """

    def __init__(self, config: Config) -> None:
        self.max_total = config.dedupe_max_entries
        self.max_windows = config.limits_max_tenants if not (config.auth_required and config.tenants) \
            else len(config.tenants)
        self.default = (config.dedupe_max_entries_per_tenant, config.dedupe_max_age)
        # Never shorter than the ingest window (the config enforces it; backfill/import widen that window).
        self.settings = {name: (t.dedupe_max_entries or self.default[0],
                                max(t.dedupe_max_age or self.default[1], config.ingest_max_age))
                         for name, t in config.tenants.items()}
        self.windows: dict[str, DedupeWindow] = {}
        self.seen_of: dict[str, dict[str, float]] = {}  # tenant → its window's keys, for the hot loop
        self.overflow = DedupeWindow(OTHER, *self.default)
        self.total = 0

    def window_of(self, tenant: str) -> DedupeWindow:
        window = self.windows.get(tenant)
        if window is None:
            if len(self.windows) >= self.max_windows and tenant not in self.settings:
                return self.overflow
            window = self.windows[tenant] = DedupeWindow(tenant, *self.settings.get(tenant, self.default))
            self.seen_of[tenant] = window.seen
        return window

    def __contains__(self, key: str) -> bool:
        return key in self.seen_of.get(key.partition("\x00")[0], self.overflow.seen)

    def __len__(self) -> int:
        return self.total

    def load(self, keys: Iterable[tuple[str, float]], now: float) -> None:
        """Keys from the store in the order they were accepted (a key accepted again after it was
        forgotten appears twice; the later counts), then bounded as live ingest bounds them: the
        journal also holds keys forgotten since, and the bounds may have changed."""
        self.add(now, by_tenant(keys))

    def items(self) -> list[tuple[str, float]]:
        """Every remembered key with the time it was accepted, each window's oldest first."""
        return [item for window in (*self.windows.values(), self.overflow) for item in window.seen.items()]

    def add(self, now: float, new_keys: Mapping[str, dict[str, float]], unseen: bool = False
            ) -> tuple[list[tuple[str, float]], Counter[tuple[str, str]]]:
        """Remember ``new_keys`` (tenant → {key: time accepted}, see :func:`by_tenant`) and forget what
        the bounds require: (keys kept, forgotten or never kept per (window, reason)). Forgotten keys
        need no record: the store's journal forgets them again on replay. A batch larger than its
        window keeps its newest. ``unseen``: the caller already checked every key against its window
        (live ingest does, to count duplicates), so they are not looked up again; a replay's may be
        remembered already."""
        by_window: dict[int, tuple[DedupeWindow, list[tuple[str, float]]]] = {}
        for tenant, keys in new_keys.items():
            if keys:
                window = self.window_of(tenant)
                by_window.setdefault(id(window), (window, []))[1].extend(keys.items())
        added: list[tuple[str, float]] = []
        counts: Counter[tuple[str, str]] = Counter()
        for window, items in by_window.values():
            cutoff, seen = now - window.max_age, window.seen
            expired = window.expired(cutoff)
            if not unseen:
                items = [item for item in items if item[0] not in seen]
            if not items:
                continue
            if items[0][1] < cutoff:  # only when loading: keys accepted longer ago than the window
                fresh = [item for item in items if item[1] >= cutoff]
                counts[(window.name, "age")] += len(items) - len(fresh)
                items = fresh
                if not items:
                    continue
            over = max(len(seen) - expired + len(items) - window.max_entries, 0)
            by_size = min(over, len(seen) - expired)
            kept = items[over - by_size:]
            window.forget_oldest(expired + by_size)
            seen.update(kept)
            window.order.extend(map(_KEY, kept))
            added += kept
            self.total += len(kept) - expired - by_size
            counts[(window.name, "age")] += expired
            counts[(window.name, "size")] += over
        while self.total > self.max_total:  # the shared budget: the largest window pays
            largest = max((*self.windows.values(), self.overflow), key=len)
            drop = min(self.total - self.max_total, len(largest))
            largest.forget_oldest(drop)
            self.total -= drop
            counts[(largest.name, "size")] += drop
        return added, counts


def by_tenant(keys: Iterable[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """``tenant\x00id`` keys in acceptance order, grouped by tenant as :meth:`DedupeWindows.add` takes
    them; a key that appears twice keeps its later place (it was accepted again after it was forgotten)."""
    grouped: dict[str, dict[str, float]] = {}
    for key, seen_at in keys:
        keys_of = grouped.get(key.partition("\x00")[0])
        if keys_of is None:
            keys_of = grouped[key.partition("\x00")[0]] = {}
        elif key in keys_of:
            del keys_of[key]
        keys_of[key] = seen_at
    return grouped


def _new_series(spec: m.MetricSpec) -> dict[tuple[str, ...], Any]:
    """A metric's state: label values → value. Counters and histograms are defaultdicts, so
    :func:`exporter.core.fold.fold` adds with one subscript (half the time of ``get`` and a store);
    reading code uses ``get``/``items`` and never creates a series by looking."""
    if spec.kind == "counter":
        return defaultdict(int)
    if spec.kind == "histogram":
        return defaultdict(partial(list, (0,) * (len(spec.buckets) + 2)))
    return {}


def _changed(current: dict[Any, Any], written: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """The items of ``current`` whose value differs from ``written`` (absent counts as different)."""
    get = written.get
    return [(key, value) for key, value in current.items() if get(key) != value]


def _rejection_reason(errors: list[FieldError]) -> str:
    for error in errors:
        if error.field == "timestamp" and "older" in error.message:
            return "too_old"
        if error.field == "timestamp" and "future" in error.message:
            return "in_future"
    return "invalid_field"


# One accepted event as the log stores it and memory applies it: labels already capped, money priced
# (atto-dollars), durations in seconds. Replaying a row gives the same counts whatever the price table
# or the caps are by then.
ROW_FIELDS = ("tenant", "customer", "model", "provider", "operation", "status", "error_type",
              "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
              "cost", "cache_saved", "cache_extra", "llm_calls", "tool_calls", "timestamp", "duration_s", "ttft_s")
_KINDS = {spec.name: spec.kind for spec in m.USAGE_METRICS}
_LABEL_CACHE_MAX = 50_000
# Rows wait to be folded in bulk (fewer touches of the state per event the more wait) until the state
# is read or a checkpoint runs, or this many wait: one fold of them blocks the loop ~50 ms.
FOLD_MAX_EVENTS = 20_000
# A checkpoint runs on the event loop and its cost grows with the events since the last one (their
# ids, their log rows), so under heavy ingest it runs after this many events rather than every
# ``checkpoint_every`` seconds: one stall stays near 100 ms instead of growing with the ingest rate
# (at 30k events/s a 5 s checkpoint blocked the loop ~440 ms, past the 250 ms fairness bound). A
# whole number of folds: a checkpoint then finds few rows or none left to fold, where 50,000 (20k + 20k +
# a 10k fold in the checkpoint) paid a third fold's per-group cost every 50k events.
CHECKPOINT_MAX_EVENTS = 3 * FOLD_MAX_EVENTS
JOURNAL_SLACK = 100_000  # dedupe journal entries allowed beyond twice the remembered ids
STEP_EVENTS = 500  # events between pauses of Aggregator.ingest_steps: a few ms of work


def _run(steps: Generator[None, None, IngestResult]) -> IngestResult:
    """Drive :meth:`Aggregator.ingest_steps` to the end without pausing."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


class Aggregator:
    """Owns the usage state (series, customer totals, dedupe window) and the ingest function."""

    def __init__(self, config: Config, prices: PriceBook, store: StateStore, telemetry: Telemetry,
                 checkpoint_every: float = 5.0) -> None:
        self.config = config
        self.prices = prices
        self.store = store
        self.telemetry = telemetry
        self.limits = Limits(config.ingest_max_age, config.ingest_max_future, config.limits_max_label_length)
        self.caps = LabelCaps(config, prices)
        self.dedupe = DedupeWindows(config)
        self._series: dict[str, dict[tuple[str, ...], Any]] = {spec.name: _new_series(spec) for spec in m.USAGE_METRICS}
        self._customers: dict[tuple[str, str], list[Any]] = defaultdict(partial(list, (0, 0, 0, 0, 0, 0.0)))
        self.recent_errors: dict[str, deque[dict[str, Any]]] = {}
        # (tenant, UTC day number, customer) → [events, input, output, cost (atto-USD), errors]; customers are
        # the capped label values, days are the last usage.daily-days: bounded like the metrics.
        self._daily: dict[tuple[str, int, str], list[int]] = defaultdict(partial(list, (0, 0, 0, 0, 0)))
        self.daily_days = config.usage_daily_days
        self.sources: set[str] = set()
        self.meta: dict[str, Any] = {}
        self.checkpoint_every = checkpoint_every
        self.checkpoint_max_events = CHECKPOINT_MAX_EVENTS
        self._labels: dict[tuple[Any, ...], tuple[str, str, str, str, tuple[str, ...], Schedule | None]] = {}
        # Series counted since the last checkpoint: it rewrites every metric (one blob each).
        self._series_changed = False
        self._drop_series_table = False  # loaded from schema 0-3's series table
        # What the store's customer and daily tables hold (lists copied): a checkpoint writes what differs.
        self._written_customers: dict[Any, Any] = {}
        self._written_daily: dict[Any, Any] = {}
        self._daily_horizon = 0
        self._dedupe_added: list[tuple[str, float]] = []  # accepted since the last checkpoint, in order
        self._journal_keys = 0  # keys in the store's dedupe journal, forgotten ones included
        self._rewrite_journal = False
        self._last_checkpoint = time.monotonic()
        self._checkpointed_seq = 0
        self._events_since_checkpoint = 0
        self._pending: list[Sequence[Any]] = []  # rows durable and acknowledged, not yet folded in
        self._fold_lock = threading.Lock()

    def reconfigure(self, config: Config, prices: PriceBook) -> None:
        """Apply a reloaded configuration (see :mod:`exporter.server.reload`): tenants, caps, label
        length and prices count from the next event on; series already counted keep their labels and
        values. The ingest window and the dedupe window keep their start-up sizes."""
        self.config = config
        self.prices = prices
        self.limits = replace(self.limits, max_label_length=config.limits_max_label_length)
        self.caps.configure(config, prices)
        self._labels = {}  # labels resolve through the price table and the caps

    # --- state ------------------------------------------------------------------------------------
    def load(self) -> None:
        """Restore the snapshot and replay the log, so counters continue and old duplicates stay refused."""
        snapshot = self.store.load()
        for metric, values in snapshot.series.items():
            if metric in self._series:
                self._series[metric].update(values)
        self._series_changed = self._drop_series_table = snapshot.series_legacy
        self._customers.update(snapshot.customers)
        self._written_customers.update((key, row.copy()) for key, row in snapshot.customers.items())
        self._daily.update(snapshot.daily)
        self._written_daily.update((key, row.copy()) for key, row in snapshot.daily.items())
        self.meta = snapshot.meta
        self.sources = set(snapshot.meta.get("sources", ()))
        self.dedupe.load(snapshot.dedupe, time.time())
        self._journal_keys = len(snapshot.dedupe)
        self._rewrite_journal = snapshot.dedupe_legacy
        for record in snapshot.log:
            self._replay(record)
        for tenant, customer in self.customers:
            self.caps.remember(tenant, customer)
        for tenant, customer, model, provider in self.series[m.COST.name]:
            if customer != OTHER:
                self.caps.combinations.setdefault(tenant, set()).add((customer, model, provider))
            if model not in self.prices and model != OTHER:
                self.caps.unknown_models.add(model)
            if provider not in KNOWN_PROVIDERS and provider not in self.prices.providers and provider != OTHER:
                self.caps.unknown_providers.add(provider)
        self.telemetry.dedupe_entries.set(len(self.dedupe))
        self.telemetry.store_up.set(1)
        if snapshot.log or snapshot.dedupe_legacy:
            self.checkpoint()

    def _replay(self, record: dict[str, Any]) -> None:
        """Fold one log record left from before a restart into memory: its event rows (records
        written before schema 3 carry per-series deltas instead) and its dedupe ids."""
        rows = record.get("e")
        if rows is not None:
            self._count_rows(rows)
        else:
            self._apply_deltas(record)
        self._dedupe_added.extend(self.dedupe.add(record["t"], by_tenant(record["k"]))[0])

    def _count_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Queue event rows to be counted (live after their record is durable, and on replay); they
        are folded into the state in bulk (:func:`exporter.core.fold.fold`) by the next read of the
        state, the next checkpoint, or once :data:`FOLD_MAX_EVENTS` are waiting."""
        with self._fold_lock:
            self._pending.extend(rows)
            full = len(self._pending) >= FOLD_MAX_EVENTS
        if full:
            self.fold()

    def fold(self) -> None:
        """Count the queued rows into the series, customer and daily state. Every reader of the
        state comes through here first (the ``series``/``customers``/``daily`` properties), so
        what was acknowledged is what is read. A reader on another thread (a registry collected
        by an embedding application) may fold too: the lock keeps one fold at a time and no row
        queued while a fold takes the queue."""
        if not self._pending:
            return
        with self._fold_lock:
            pending, self._pending = self._pending, []
            if pending:
                fold_rows(pending, self._series, self._customers, self._daily)
                self._series_changed = True

    @property
    def series(self) -> dict[str, dict[tuple[str, ...], Any]]:
        """Metric name → label values → value (counters, gauges, histogram lists), rows folded in."""
        self.fold()
        return self._series

    @property
    def customers(self) -> dict[tuple[str, str], list[Any]]:
        """(tenant, customer) → [events, input, output, cost (atto-USD), errors, latest timestamp]."""
        self.fold()
        return self._customers

    @property
    def daily(self) -> dict[tuple[str, int, str], list[int]]:
        """(tenant, UTC day number, customer) → [events, input, output, cost (atto-USD), errors]."""
        self.fold()
        return self._daily

    def _apply_deltas(self, record: dict[str, Any]) -> None:
        """A log record written before schema 3: per-series deltas (``"v"`` columns per metric, or
        ``"s"`` triples), customer and daily deltas. Read only when replaying an older state's log,
        which the first checkpoint after start-up folds away."""
        columns = record.get("v")
        if columns is None:
            deltas = record["s"]
            grouped: dict[str, tuple[list[Any], list[Any]]] = {}
            for metric, labels, delta in (deltas if type(deltas) is list else (
                    (metric, labels, delta) for metric, items in deltas.items() for labels, delta in items)):
                column = grouped.setdefault(metric, ([], []))
                column[0].append(labels)
                column[1].append(delta)
            columns = grouped
        self._series_changed = True
        for metric, (keys, values) in columns.items():
            store = self._series[metric]
            kind = _KINDS[metric]
            for labels, delta in zip(keys, values):  # in today's units (store._load_record)
                key = tuple(labels)
                old = store.get(key)
                if old is None:
                    store[key] = delta
                elif kind == "counter":
                    store[key] = old + delta
                elif kind == "histogram":
                    store[key] = [a + b for a, b in zip(old, delta)]
                elif delta > old:  # gauges keep the max
                    store[key] = delta
        for tenant, customer, delta in record["c"]:
            old = self._customers.get((tenant, customer))
            if old is None:
                self._customers[(tenant, customer)] = list(delta)
            else:
                old[:_LATEST] = [a + b for a, b in zip(old[:_LATEST], delta[:_LATEST])]
                old[_LATEST] = max(old[_LATEST], delta[_LATEST])
        for tenant, day, customer, delta in record.get("d", ()):
            old = self._daily.get((tenant, day, customer))
            self._daily[(tenant, day, customer)] = list(delta) if old is None else [a + b for a, b in zip(old, delta)]

    def _prune_daily(self) -> int | None:
        """Forget daily rows older than the rollup's horizon (checked once per new day); the new horizon
        when it moved, so the checkpoint deletes the same rows from the store."""
        horizon = int(time.time() // DAY) - self.daily_days + 1
        if horizon <= self._daily_horizon:
            return None
        self._daily_horizon = horizon
        for key in [key for key in self._daily if key[1] < horizon]:
            del self._daily[key]
            self._written_daily.pop(key, None)
        return horizon

    def checkpoint(self) -> None:
        """Write the metrics (each whole, as one blob) if any series was counted since the last
        checkpoint, the customer and daily rows that changed (found by comparing with what was
        written, a pass every few seconds that keeps change tracking out of the per-event path), and
        the ids accepted since; fold the log away.

        Dedupe ids are a journal: each checkpoint appends the ids accepted since (one blob, not a
        row per id) and nothing is deleted when an id is forgotten, since replaying the journal
        through the same bounds forgets it again. When the journal holds more than twice the ids
        remembered (plus :data:`JOURNAL_SLACK`), it is rewritten as the remembered ids alone, so
        its size and the start-up replay stay bounded by ``dedupe.max-entries``."""
        self.fold()
        horizon = self._prune_daily()
        customers = _changed(self._customers, self._written_customers)
        daily = _changed(self._daily, self._written_daily)
        if not (self._series_changed or customers or daily or self._dedupe_added or horizon is not None
                or self._rewrite_journal or self.store.last_seq > self._checkpointed_seq):
            return
        metrics = {name: list(values.items()) for name, values in self._series.items() if values} \
            if self._series_changed else {}
        upto_seq = self.store.last_seq
        rewrite = self._rewrite_journal or (
            self._journal_keys + len(self._dedupe_added) > 2 * len(self.dedupe) + JOURNAL_SLACK)
        dedupe_keys = self.dedupe.items() if rewrite else self._dedupe_added
        self.store.checkpoint(Checkpoint(
            upto_seq=upto_seq, metrics=metrics, drop_series_table=self._drop_series_table, customers=customers,
            daily=daily, daily_before=horizon, dedupe_keys=dedupe_keys, dedupe_rewrite=rewrite))
        self._series_changed = self._drop_series_table = False
        self._written_customers.update((key, row.copy()) for key, row in customers)
        self._written_daily.update((key, row.copy()) for key, row in daily)
        self._checkpointed_seq = upto_seq
        self._events_since_checkpoint = 0
        self._journal_keys = len(dedupe_keys) + (0 if rewrite else self._journal_keys)
        self._rewrite_journal = False
        self._dedupe_added = []
        self._last_checkpoint = time.monotonic()

    # --- ingest -----------------------------------------------------------------------------------
    def _resolve(self, tenant: str, customer: str, model: str,
                 provider: str | None) -> tuple[str, str, str, str, tuple[str, ...], Schedule | None]:
        """Capped label values, the labels that overflowed and the model's price schedule; cached,
        since a value once kept stays kept and a cap once full stays full. The model label is the
        price source's canonical id (see pricing.matching), or the reference as sent when unknown."""
        overflow: list[str] = []
        caps = self.caps
        schedule = self.prices.resolve(model, provider)
        tenant_label = caps.tenant(tenant, overflow)
        customer_label = caps.customer(tenant_label, customer, overflow)
        model_label = schedule.model if schedule is not None else caps.model(model, overflow)
        provider_label = caps.provider(provider or (schedule.provider if schedule else None) or UNKNOWN_PROVIDER,
                                       overflow)
        customer_label = caps.combination(tenant_label, customer_label, model_label, provider_label, overflow)
        return tenant_label, customer_label, model_label, provider_label, tuple(overflow), schedule

    def ingest(self, raw_events: Sequence[Any], source: str, now: float | None = None) -> IngestResult:
        """Validate, dedupe, price and count ``raw_events``; raises StoreUnavailable (nothing counted).

        A batch that is valid as a whole takes the fast path (msgspec converts and type-checks it in
        C); otherwise every event is validated on its own so each problem is reported."""
        return _run(self.ingest_steps(raw_events, source, now))

    def ingest_valid(self, events: list[Event], source: str, now: float) -> IngestResult:
        """Count events already validated by :func:`exporter.core.events.decode_batch` / ``convert_batch``."""
        return _run(self.ingest_steps((), source, now, valid=events))

    def ingest_steps(self, raw_events: Sequence[Any], source: str, now: float | None = None,
                     valid: list[Event] | None = None) -> Generator[None, None, IngestResult]:
        """:meth:`ingest` (or :meth:`ingest_valid` when ``valid`` is given) as a generator that pauses
        every :data:`STEP_EVENTS` events, so the server can answer other requests in between; the
        batch is still one transaction, committed after the last step. The caller must not let two
        runs that share a tenant interleave (the dedupe check of one would miss the other's ids)."""
        now = time.time() if now is None else now
        events = valid if valid is not None else convert_batch(raw_events, now, self.limits)
        if events is not None:
            return (yield from self._accumulate(enumerate(events), IngestResult(), source, now))
        result = IngestResult()  # the slow path yields (index in the batch, event or None if refused)
        return (yield from self._accumulate(self._validate_each(raw_events, now, result), result, source, now))

    def _validate_each(self, raw_events: Sequence[Any], now: float,
                       result: IngestResult) -> Iterator[tuple[int, Event | None]]:
        """The events of a mixed batch, None for those refused (they become errors and rejections in
        ``result``): None still passes through, so the caller's pauses count refused events too."""
        limits = self.limits
        for index, raw in enumerate(raw_events):
            event = validate_event(raw, now, limits)
            if type(event) is Event:
                yield index, event
                continue
            yield index, None
            result.rejected += 1
            result.rejection_reasons.append(_rejection_reason(event))  # type: ignore[arg-type]
            result.rejected_tenants.append(raw.get("tenant") if isinstance(raw, dict) else None)
            event_id = raw.get("id") if isinstance(raw, dict) else None
            for error in event:  # type: ignore[union-attr]
                result.errors.append({"index": index, "id": event_id if isinstance(event_id, str) else None,
                                      "field": error.field, "message": error.message})

    def _accumulate(self, events: Iterable[tuple[int, Event | None]], result: IngestResult, source: str,
                    now: float) -> Generator[None, None, IngestResult]:
        """Dedupe, resolve labels and price each event into one compact row (:data:`ROW_FIELDS`); the
        request's rows and ids are then one log record, durable before memory applies them."""
        prices, label_cache = self.prices, self._labels
        seen_of, other_seen = self.dedupe.seen_of, self.dedupe.overflow.seen  # per-tenant windows
        rows: list[tuple[Any, ...]] = []
        append = rows.append
        new_keys: dict[str, dict[str, float]] = {}  # tenant → this batch's new keys, as the windows take them
        overflow: list[str] = []
        unpriced: list[str] = []
        new_errors: list[tuple[str, dict[str, Any]]] = []

        pause_at = STEP_EVENTS
        for index, event in events:
            if index >= pause_at:
                pause_at = index + STEP_EVENTS
                yield
            if event is None:
                continue
            sent_tenant = event.tenant
            fresh = new_keys.get(sent_tenant)
            if fresh is None:
                fresh = new_keys[sent_tenant] = {}
            key = f"{sent_tenant}\x00{event.id}"
            if key in seen_of.get(sent_tenant, other_seen) or key in fresh:
                result.duplicates += 1
                continue
            fresh[key] = now

            cache_key = (event.tenant, event.customer, event.model, event.provider)
            labels = label_cache.get(cache_key)
            if labels is None:
                if len(label_cache) >= _LABEL_CACHE_MAX:
                    label_cache.clear()
                labels = label_cache[cache_key] = self._resolve(*cache_key)
            tenant, customer, model, provider, folded, schedule = labels
            if folded:
                overflow.extend(folded)
            cost, saved, extra, warning = prices.cost(event, schedule)
            if warning is not None:
                if warning[0] == "model":
                    unpriced.append(model)
                result.warn(index, event.id, *warning)
            ttft_ms = event.ttft_ms
            append((tenant, customer, model, provider, event.operation, event.status, event.error_type,
                    event.input_tokens, event.output_tokens, event.cache_read_tokens, event.cache_write_tokens,
                    event.reasoning_tokens, cost, saved, extra, event.llm_calls, event.tool_calls, event.timestamp,
                    event.duration_ms / 1000.0, None if ttft_ms is None else ttft_ms / 1000.0))
            if event.status == "error":
                new_errors.append((tenant, {"timestamp": event.timestamp, "customer": customer, "model": model,
                                            "error_type": event.error_type, "error_message": event.error_message}))
        result.accepted = len(rows)

        if rows:
            record = {"t": now, "k": [item for keys in new_keys.values() for item in keys.items()], "e": rows}
            try:
                if source not in self.sources:  # recorded before the events: a state never hides a source
                    self.store.set_meta("sources", sorted(self.sources | {source}))
                    self.sources.add(source)
                self.store.append(record)
            except StoreUnavailable:  # nothing below happens: nothing is counted, the client retries
                self.telemetry.store_up.set(0)
                raise
            added, forgotten = self.dedupe.add(now, new_keys, unseen=True)
            self._dedupe_added.extend(added)
            self._count_dedupe(forgotten)
            self._count_rows(rows)  # no pause from the log append to here: nothing is ever half counted
            self._events_since_checkpoint += len(rows)
            if (self._events_since_checkpoint >= self.checkpoint_max_events
                    or time.monotonic() - self._last_checkpoint >= self.checkpoint_every):
                self._checkpoint_quietly()
        self._count(result, source, overflow, unpriced, new_errors)
        return result

    def _checkpoint_quietly(self) -> None:
        """A failed checkpoint loses nothing (the log still holds every record): retry next time."""
        try:
            self.checkpoint()
        except StoreUnavailable:
            self._last_checkpoint = time.monotonic()

    def _count_dedupe(self, forgotten: Counter[tuple[str, str]]) -> None:
        self.telemetry.dedupe_entries.set(len(self.dedupe))
        for (window, reason), count in forgotten.items():
            if count:
                self.telemetry.dedupe_evictions.labels(window, reason).inc(count)

    def _count(self, result: IngestResult, source: str, overflow: list[str], unpriced: list[str],
               new_errors: list[tuple[str, dict[str, Any]]]) -> None:
        t = self.telemetry
        t.store_up.set(1 if self.store.healthy else 0)
        for result_name, count in (("accepted", result.accepted), ("duplicate", result.duplicates),
                                   ("rejected", result.rejected)):
            if count:
                t.events.labels(source, result_name).inc(count)
        for reason, tenant in zip(result.rejection_reasons, result.rejected_tenants):
            t.rejections.labels(reason, self.caps.tenant_of_rejection(tenant)).inc()
        for label in overflow:
            t.overflow.labels(label).inc()
        for model in unpriced:
            t.unpriced.labels(model).inc()
        for tenant, error in new_errors:
            ring = self.recent_errors.get(tenant)
            if ring is None:
                ring = self.recent_errors[tenant] = deque(maxlen=self.config.errors_ring_size)
            ring.append(error)

    def customer_rows(self, tenant: str, sort: str, descending: bool, limit: int) -> list[dict[str, Any]]:
        rows = [{"customer": customer, "events": row[_EVENTS], "input_tokens": row[_INPUT],
                 "output_tokens": row[_OUTPUT], "cost_usd": usd(row[_COST]), "errors": row[_ERRORS],
                 "latest_timestamp": row[_LATEST]}
                for (row_tenant, customer), row in self.customers.items() if row_tenant == tenant]
        rows.sort(key=lambda r: (r[sort], r["customer"]), reverse=descending)
        return rows[:limit]

    def daily_rows(self, tenant: str, customer: str | None, days: int, today: int | None = None) -> list[dict[str, Any]]:
        """Usage per UTC day, oldest first, for the last ``days`` days up to ``today`` (a day number):
        one customer's, or the tenant's total when ``customer`` is None. Days without usage are zeros, so
        a chart of the answer has one bar per day."""
        today = int(time.time() // DAY) if today is None else today
        first = today - days + 1
        totals = {day: [0, 0, 0, 0, 0] for day in range(first, today + 1)}
        for (row_tenant, day, row_customer), row in self.daily.items():
            if row_tenant == tenant and first <= day <= today and (customer is None or row_customer == customer):
                total = totals[day]
                for slot in range(5):
                    total[slot] += row[slot]
        return [{"day": time.strftime("%Y-%m-%d", time.gmtime(day * DAY)), "events": row[_EVENTS],
                 "input_tokens": row[_INPUT], "output_tokens": row[_OUTPUT], "cost_usd": usd(row[_COST]),
                 "errors": row[_ERRORS]} for day, row in totals.items()]

    def errors_of(self, tenant: str, limit: int) -> list[dict[str, Any]]:
        ring = self.recent_errors.get(tenant, ())
        return list(ring)[::-1][:limit]
