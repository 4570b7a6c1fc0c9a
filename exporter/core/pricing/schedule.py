"""A model's prices over time and by service tier, compiled for a constant-time lookup.

The price source states prices as periods (a start date, optionally a daily time window such as
off-peak hours) and request variants (``service_tier``, batch processing). Both are resolved once
here with the source's own resolution (:meth:`genai_prices.types.ModelInfo.get_prices`) at every
boundary, so the hot path is a bisect on the event's timestamp and a dict lookup on its tier.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Mapping

from genai_prices import types as gp

from .rates import Rates, TieredRates, compile_price

DAY = 86400

# Our service_tier value → the source's request context. "batch" is a processing mode in the
# source (Batch APIs), the others are OpenAI-style service tiers.
def tier_context(tier: str) -> dict[str, str]:
    return {"processing": "batch"} if tier == "batch" else {"service_tier": tier}


@dataclass(frozen=True, slots=True)
class BillingRule:
    """Optional per-model billing rules from the override file (the source has none)."""

    min_charge: int = 0  # atto-dollars
    round_to: int = 0  # atto-dollars; 0 = no rounding

    def apply(self, cost: int) -> int:
        if self.round_to:
            cost = -(-cost // self.round_to) * self.round_to
        return max(cost, self.min_charge)


NO_RULE = BillingRule()


@dataclass(slots=True)
class Schedule:
    """Everything needed to price one canonical model."""

    model: str  # the canonical id: the `model` label
    provider: str  # the source's provider id (or the override's provider label)
    source: str  # "genai-prices" or the override file
    starts: list[float]  # interval start timestamps; starts[0] = -inf
    day_windows: list[int]  # seconds-of-day boundaries; [0] when prices do not depend on the hour
    # table[interval][window] = {tier: TieredRates}; a tier missing there falls back to "default"
    table: list[list[dict[str, TieredRates]]]
    billing: BillingRule = NO_RULE
    operations: Mapping[str, BillingRule] = field(default_factory=dict)
    name: str | None = None
    rules: bool = field(init=False)  # any billing rule that changes a cost (most models have none)
    # The latest interval's tiers when they hold all day: what nearly every live event is priced at.
    current: dict[str, TieredRates] | None = field(init=False)

    def __post_init__(self) -> None:
        self.rules = any(rule.round_to or rule.min_charge for rule in (self.billing, *self.operations.values()))
        self.current = self.table[-1][0] if len(self.table[-1]) == 1 else None

    def at(self, timestamp: float, tier: str) -> tuple[TieredRates, bool]:
        """The rates in force at ``timestamp`` for ``tier``, and whether that tier had to fall back
        to the default tier's prices."""
        starts, tiers = self.starts, self.current
        if tiers is None or timestamp < starts[-1]:
            interval = self.table[bisect.bisect_right(starts, timestamp) - 1 if len(starts) > 1 else 0]
            tiers = interval[bisect.bisect_right(self.day_windows, timestamp % DAY) - 1] if len(interval) > 1 \
                else interval[0]
        rates = tiers.get(tier)
        if rates is None:
            return tiers["default"], tier != "default"
        return rates, False

    def tiers(self) -> list[str]:
        return sorted({tier for interval in self.table for window in interval for tier in window})

    def rule(self, operation: str) -> BillingRule:
        return self.operations.get(operation, self.billing)


def _day_start(d: date) -> float:
    return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()


def _seconds(t: time) -> int:
    if t.tzinfo is not None:
        t = datetime.combine(date(1970, 1, 1), t).astimezone(UTC).time()
    return t.hour * 3600 + t.minute * 60 + t.second


def _constraints(model: gp.ModelInfo) -> list[Any]:
    found = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    found += [v.constraint for v in model.price_variants or ()]
    return [c for c in found if c is not None]


def compile_model(model: gp.ModelInfo, provider: str, source: str, intern: dict[Any, Any]) -> Schedule:
    """Resolve ``model``'s prices at every date and time-of-day boundary, for every tier it names."""
    constraints = _constraints(model)
    dates = sorted({c.start_date for c in constraints if isinstance(c, gp.StartDateConstraint)})
    windows = sorted({0, *(_seconds(t) for c in constraints if isinstance(c, gp.TimeOfDateConstraint)
                           for t in (c.start_time, c.end_time))})
    tiers = {"default"}
    for variant in model.price_variants or ():
        if set(variant.when) == {"service_tier"}:
            tiers.add(variant.when["service_tier"])
        elif variant.when == {"processing": "batch"}:
            tiers.add("batch")
    # The first interval is "before every start date": the source then uses its first price.
    first = (dates[0] - timedelta(days=1)) if dates else date(2000, 1, 1)
    day_starts = [first, *dates]
    table = []
    for day in day_starts:
        row = []
        for window in windows:
            instant = datetime.combine(day, time(), tzinfo=UTC) + timedelta(seconds=window)
            standard = model.get_prices(instant)
            by_tier: dict[str, TieredRates] = {"default": compile_price(standard.__dict__, intern)}
            for tier in tiers - {"default"}:
                context = tier_context(tier)
                if not _variant_applies(model, instant, context):
                    continue  # no price for this tier then: the lookup falls back and warns
                by_tier[tier] = compile_price(model.get_prices(instant, context).__dict__, intern)
            row.append(by_tier)
        table.append(row)
    starts = [float("-inf"), *(_day_start(d) for d in dates)]
    return Schedule(model=model.id, provider=provider, source=source, starts=starts, day_windows=windows,
                    table=table, name=model.name)


def _variant_applies(model: gp.ModelInfo, instant: datetime, context: dict[str, str]) -> bool:
    return any((v.constraint is None or v.constraint.active(instant))
               and all(context.get(k) == value for k, value in v.when.items())
               for v in model.price_variants or ())


def has_token_price(schedule: Schedule) -> bool:
    return any(any(rates.coef) or rates.fee for interval in schedule.table for window in interval
               for tiered in window.values() for rates in tiered.rates)


__all__ = ["BillingRule", "NO_RULE", "Rates", "Schedule", "compile_model", "has_token_price", "tier_context"]
