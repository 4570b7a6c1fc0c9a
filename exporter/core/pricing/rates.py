"""Compiled rates: one price set turned into integer coefficients over the event's token fields.

Money is an exact integer number of atto-dollars (1e-18 USD). Why so fine: list prices are
decimals per million tokens (``$0.075/MTok`` is 75,000,000,000 atto-dollars per token), so every
price with up to 12 decimals per MTok is an exact integer per token, and a sum of a million tiny
calls is exact; Python integers do not overflow. Conversion to float dollars happens once, at
exposition and in the read API (:func:`usd`), and both use the same correctly rounded division.

The formula is genai-prices' own ("leaf" decomposition over its unit registry): a detail count
(cache reads, 1 h cache writes, audio, reasoning) that has its own price is taken out of its parent
(input or output) and billed at that price; one that has no price of its own stays in the parent
and is billed at the parent's price. So details are *parts of* totals, never billed on top.
Because that decomposition is linear, a price set compiles to one coefficient per event field,
computed here once; the hot path is a dot product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Mapping, Sequence

from genai_prices.units import UnitDef, _get_registry  # the unit registry that defines the formula

from ..metrics import USD_UNITS as UNITS_PER_USD
_UNITS = Decimal(UNITS_PER_USD)

# (event attribute, genai-prices usage key, component name in `prices explain`)
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("input_tokens", "input_tokens", "input"),
    ("cache_read_tokens", "cache_read_tokens", "cache_read"),
    ("cache_write_tokens", "cache_write_tokens", "cache_write"),
    ("cache_write_1h_tokens", "cache_write_1h_tokens", "cache_write_1h"),
    ("audio_input_tokens", "input_audio_tokens", "audio_input"),
    ("output_tokens", "output_tokens", "output"),
    ("reasoning_tokens", "output_reasoning_tokens", "reasoning"),
    ("audio_output_tokens", "output_audio_tokens", "audio_output"),
)
EVENT_FIELDS = tuple(f[0] for f in FIELDS)
_USAGE_INDEX = {usage_key: i for i, (_, usage_key, _) in enumerate(FIELDS)}
_NAME = {usage_key: name for _, usage_key, name in FIELDS}
_CR, _CW, _CW1H = 1, 2, 3


def usd(units: int) -> float:
    """Integer atto-dollars → float USD, correctly rounded (int / int); the one conversion."""
    return units / UNITS_PER_USD


def to_units(usd_value: float | Decimal | str) -> int:
    """A USD amount (float as the client wrote it, Decimal or str) → exact atto-dollars."""
    value = usd_value if isinstance(usd_value, Decimal) else Decimal(repr(usd_value) if isinstance(usd_value, float)
                                                                    else usd_value)
    return int((value * _UNITS).to_integral_value(ROUND_HALF_EVEN))


@dataclass(frozen=True, slots=True)
class Component:
    """One priced unit of a rate set: what `prices explain` prints."""

    name: str  # input, cache_read, ..., request
    price: Decimal  # USD per `per` units, as the source states it
    per: int  # 1_000_000 for tokens, 1_000 for requests
    leaf: tuple[int, ...]  # the count billed at this price = leaf · event fields


@dataclass(frozen=True, slots=True)
class Rates:
    """Coefficients in atto-dollars per event field, plus a per-request fee; one tier of one price set."""

    coef: tuple[int, ...]
    fee: int
    components: tuple[Component, ...]

    def cost(self, counts: Sequence[int]) -> int:
        c = self.coef
        return (c[0] * counts[0] + c[1] * counts[1] + c[2] * counts[2] + c[3] * counts[3] + c[4] * counts[4]
                + c[5] * counts[5] + c[6] * counts[6] + c[7] * counts[7] + self.fee)

    def price(self, counts: Sequence[int]) -> tuple[int, int, int]:
        """(:meth:`cost`, then :meth:`cache_savings`) in one call: the hot path's form."""
        cost = self.cost(counts)
        if not (counts[_CR] or counts[_CW]):
            return cost, 0, 0
        saved, extra = self.cache_savings(counts)
        return cost, saved, extra

    def cache_savings(self, counts: Sequence[int]) -> tuple[int, int]:
        """(saved by cache reads, extra paid for cache writes) versus billing those tokens as plain
        input, both >= 0. Moving n cache-read tokens back to plain input changes the cost by
        -coef[cache_read] × n, so that is the saving; likewise for writes."""
        saved = -self.coef[_CR] * counts[_CR]
        extra = self.coef[_CW] * counts[_CW] + self.coef[_CW1H] * counts[_CW1H]
        return max(saved, 0), max(extra, 0)


@dataclass(frozen=True, slots=True)
class TieredRates:
    """Long-context tiers: ``thresholds[i]`` is the input-token count that must be *exceeded* for
    ``rates[i]`` to apply to all tokens of the request (thresholds[0] = -1: the base rates)."""

    thresholds: tuple[int, ...]
    rates: tuple[Rates, ...]
    flat: Rates | None = field(init=False, compare=False)  # the only rates, when there are no tiers

    def __post_init__(self) -> None:
        object.__setattr__(self, "flat", self.rates[0] if len(self.rates) == 1 else None)

    def pick(self, input_tokens: int) -> Rates:
        """The tier for a request of ``input_tokens``; ``flat or pick(...)`` skips the call for most models."""
        if self.flat is not None:
            return self.flat
        rates = self.rates
        chosen = rates[0]
        for threshold, candidate in zip(self.thresholds, rates):
            if input_tokens > threshold:
                chosen = candidate
        return chosen


def _leaf_vectors(priced: list[UnitDef]) -> dict[str, list[int]]:
    """genai-prices' decomposition, symbolically: the most specific units first, each unit's count
    minus the leaves of its priced descendants. Units the event has no field for count 0."""
    order = sorted(priced, key=lambda unit: (-len(unit.dimensions), unit.usage_key))
    leaves: dict[str, list[int]] = {}
    for unit in order:
        vector = [0] * len(FIELDS)
        index = _USAGE_INDEX.get(unit.usage_key)
        if index is not None:
            vector[index] = 1
        for other in order:
            if other is not unit and other.usage_key in leaves and unit.dimensions.items() <= other.dimensions.items():
                vector = [a - b for a, b in zip(vector, leaves[other.usage_key])]
        leaves[unit.usage_key] = vector
    return leaves


def _per_unit(price: Decimal, per: int) -> int:
    return int((price * _UNITS / per).to_integral_value(ROUND_HALF_EVEN))


def compile_price(prices: Mapping[str, Any], intern: dict[Any, Any] | None = None) -> TieredRates:
    """A genai-prices price mapping (price key → Decimal or TieredPrices) → :class:`TieredRates`.

    Raises ValueError for price keys the registry does not know."""
    registry = _get_registry()
    units: list[tuple[UnitDef, Any]] = []
    for key, value in prices.items():
        if value is None:
            continue
        try:
            units.append((registry.unit_for_price_key(key), value))
        except KeyError:
            raise ValueError(f"unknown price key {key!r}") from None
    token_units = [(u, v) for u, v in units if u.usage_key != "requests"]
    leaves = _leaf_vectors([u for u, _ in token_units])
    thresholds = sorted({tier.start for _, v in units if hasattr(v, "tiers") for tier in v.tiers})
    tiers: list[Rates] = []
    for threshold in [-1, *thresholds]:
        coef = [0] * len(FIELDS)
        fee = 0
        components = []
        for unit, value in units:
            price = value
            if hasattr(value, "tiers"):
                price = value.base
                for tier in value.tiers:
                    if threshold >= tier.start:
                        price = tier.price
            if unit.usage_key == "requests":  # genai-prices counts one request per call
                fee += _per_unit(price, unit.per)
                components.append(Component("request", price, unit.per, ()))
                continue
            leaf = leaves[unit.usage_key]
            if not any(leaf):
                continue  # a unit the event cannot report (images, web searches…): never billed here
            per_token = _per_unit(price, unit.per)
            coef = [c + per_token * n for c, n in zip(coef, leaf)]
            components.append(Component(_NAME.get(unit.usage_key, unit.usage_key), price, unit.per, tuple(leaf)))
        rates = Rates(tuple(coef), fee, tuple(components))
        if intern is not None:
            rates = intern.setdefault(rates, rates)
        tiers.append(rates)
    result = TieredRates((-1, *thresholds), tuple(tiers))
    return intern.setdefault(result, result) if intern is not None else result
