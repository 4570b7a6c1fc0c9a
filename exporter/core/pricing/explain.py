"""`prices show` and `prices explain`: a model's prices, and one request's cost component by
component, from the same compiled rates the exporter bills with, so a user can check a number
against an invoice."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from ..events import Event, normalize_service_tier
from .book import PriceBook
from .rates import EVENT_FIELDS, UNITS_PER_USD, Rates, TieredRates
from .schedule import Schedule

_COUNT_NAMES = dict(zip(EVENT_FIELDS, ("input", "cache_read", "cache_write", "cache_write_1h", "audio_input",
                                        "output", "reasoning", "audio_output")))
_ORDER = {name: i for i, name in enumerate([*_COUNT_NAMES.values(), "request"])}


def _ordered(rates: Rates) -> list:
    return sorted(rates.components, key=lambda c: _ORDER.get(c.name, len(_ORDER)))


def _usd(units: int | Decimal) -> str:
    return f"${Decimal(units) / UNITS_PER_USD:.12f}".rstrip("0").rstrip(".") if units else "$0"


def _price(component) -> str:
    unit = "1M tokens" if component.per == 1_000_000 else f"{component.per:,} requests"
    return f"${component.price.normalize():f} / {unit}"


def _day(timestamp: float) -> str:
    return "always" if timestamp == float("-inf") else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def _rates_lines(tiered: TieredRates, indent: str) -> list[str]:
    lines = []
    for threshold, rates in zip(tiered.thresholds, tiered.rates):
        if threshold >= 0:
            lines.append(f"{indent}when input tokens > {threshold:,} (all tokens of the request):")
        for component in _ordered(rates):
            lines.append(f"{indent}  {component.name:<15} {_price(component)}")
    return lines


def show(book: PriceBook, model: str, provider: str | None = None) -> str:
    schedule = book.resolve(model, provider)
    if schedule is None:
        nearest = book.nearest(model)
        hint = f" (the source's nearest match {nearest!r} is a different model)" if nearest else ""
        return f"{model}: no price{hint}; events for it are counted at $0 with a warning"
    lines = [f"{model} -> model={schedule.model} provider={schedule.provider} source={schedule.source}"
             + (f" {book.version}" if schedule.source == "genai-prices" else "")]
    previous = None
    for start, interval in zip(schedule.starts, schedule.table):
        if interval == previous:
            continue  # a boundary another tier or window needed; nothing changed here
        previous = interval
        for window_start, tiers in zip(schedule.day_windows, interval):
            when = f"from {_day(start)}" + (f", from {window_start // 3600:02d}:{window_start % 3600 // 60:02d} UTC"
                                             if len(interval) > 1 else "")
            lines.append(when + ":")
            for tier in sorted(tiers, key=lambda t: (t != "default", t)):
                lines.append(f"  service_tier={tier}")
                lines.extend(_rates_lines(tiers[tier], "    "))
    if schedule.billing.round_to or schedule.billing.min_charge or schedule.operations:
        lines.append(f"billing rules: round up to {_usd(schedule.billing.round_to)}, minimum "
                     f"{_usd(schedule.billing.min_charge)}; per operation: {sorted(schedule.operations)}")
    return "\n".join(lines)


def explain(book: PriceBook, model: str, counts: dict[str, int], service_tier: str = "default",
            at: float | None = None, provider: str | None = None, operation: str = "chat") -> str:
    """Each component (count × price = cost) and the total, as the exporter would bill the request."""
    schedule: Schedule | None = book.resolve(model, provider)
    timestamp = datetime.now(UTC).timestamp() if at is None else at
    event = Event(id="explain", timestamp=timestamp, tenant="-", customer="-", model=model, provider=provider,
                  duration_ms=0.0, status="ok", operation=operation,  # type: ignore[arg-type]
                  service_tier=normalize_service_tier(service_tier), **counts)
    total, saved, extra, warning = book.cost(event, schedule)
    if schedule is None:
        return show(book, model, provider)
    tiered, _ = schedule.at(timestamp, event.service_tier)
    rates: Rates = tiered.pick(event.input_tokens)  # type: ignore[arg-type]
    values = [getattr(event, name) for name in EVENT_FIELDS]
    lines = [f"model={schedule.model} provider={schedule.provider} service_tier={event.service_tier} "
             f"at {datetime.fromtimestamp(timestamp, UTC):%Y-%m-%d %H:%M} UTC"]
    threshold = max(t for t, r in zip(tiered.thresholds, tiered.rates) if r is rates)
    if threshold >= 0:
        lines.append(f"long-context tier: input tokens {event.input_tokens:,} > {threshold:,}, "
                     "its prices apply to all tokens")
    for component in _ordered(rates):
        if component.name == "request":
            count, cost = 1, rates.fee
        else:
            count = sum(a * b for a, b in zip(component.leaf, values))
            cost = count * int(component.price * UNITS_PER_USD / component.per)
        parts = [n for n, coefficient in zip(EVENT_FIELDS, component.leaf) if coefficient]
        how = " - ".join(_COUNT_NAMES[n] for n in parts) if len(parts) > 1 else component.name
        lines.append(f"  {component.name:<15} {count:>12,} x {_price(component):<24} = {_usd(cost):>18}   ({how})")
    computed = rates.cost(values)
    if computed != total:
        lines.append(f"  billing rules    {_usd(computed)} -> {_usd(total)}")
    lines.append(f"  {'total':<15} {'':>12}   {'':<24}   {_usd(total):>18}")
    if saved or extra:
        lines.append(f"  cache reads saved {_usd(saved)}; cache writes cost {_usd(extra)} more than input")
    if warning:
        lines.append(f"  warning: {warning[1]}")
    return "\n".join(lines)
