"""Price table: USD per 1M tokens per model, with cache and reasoning rates and billing rules.

Cost is computed in integer micro-dollars (1e-6 USD, the contract's rounding step) so that
counters add up exactly: a month of events summed in Prometheus equals the ledger to the cent,
which float dollars summed per event do not guarantee.

Cached tokens are *part of* input tokens and reasoning tokens *part of* output tokens; billing them
on top is the most common cost bug in this field (LiteLLM #6215, Agenta #5711), so the formula
subtracts them from the plain rate's share.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from .events import Event

MICROS_PER_USD = 1_000_000
_PRICE_KEYS = ("input", "output", "cache_read", "cache_write")
_MODEL_KEYS = {*_PRICE_KEYS, "provider", "reasoning", "request_fee", "aliases", "effective_from",
               "min_charge_usd", "round_to_usd", "operations"}


class PricingError(ValueError):
    """The price table is malformed; the message names the model and key."""


@dataclass(frozen=True, slots=True)
class BillingRule:
    min_charge_usd: float = 0.0
    round_to_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Prices in USD per 1M tokens for one model over one period."""

    model: str
    provider: str | None
    input: float
    output: float
    cache_read: float
    cache_write: float
    reasoning: float
    request_fee: float = 0.0
    effective_from: float = 0.0
    billing: BillingRule = BillingRule()
    operations: Mapping[str, BillingRule] = field(default_factory=dict)

    def cost_micros(self, event: Event) -> int:
        """The contract formula, rounded to 1e-6 USD, then the billing rules (round, then minimum)."""
        plain_input = event.input_tokens - event.cache_read_tokens - event.cache_write_tokens  # type: ignore[operator]
        plain_output = event.output_tokens - event.reasoning_tokens  # type: ignore[operator]
        # tokens × USD per million tokens = micro-dollars
        micros = round(plain_input * self.input + event.cache_read_tokens * self.cache_read
                       + event.cache_write_tokens * self.cache_write + plain_output * self.output
                       + event.reasoning_tokens * self.reasoning + self.request_fee * MICROS_PER_USD)
        rule = self.operations.get(event.operation, self.billing)
        if rule.round_to_usd > 0:
            step = round(rule.round_to_usd * MICROS_PER_USD)
            micros = -(-micros // step) * step
        return max(micros, round(rule.min_charge_usd * MICROS_PER_USD))


class PriceTable:
    """Model (or alias) → price periods sorted by ``effective_from``; plus fixed-price SKUs."""

    def __init__(self, models: Mapping[str, list[ModelPrice]], skus: Mapping[str, float]) -> None:
        self._periods = {name: sorted(periods, key=lambda p: p.effective_from) for name, periods in models.items()}
        self._starts = {name: [p.effective_from for p in periods] for name, periods in self._periods.items()}
        self.skus = dict(skus)
        self.providers = frozenset(p.provider for ps in self._periods.values() for p in ps if p.provider)

    def __contains__(self, model: str) -> bool:
        return model in self._periods

    @property
    def models(self) -> list[str]:
        return sorted({periods[0].model for periods in self._periods.values()})

    def lookup(self, model: str, timestamp: float) -> ModelPrice | None:
        """The price in force at ``timestamp`` (the earliest period if the event predates all)."""
        periods = self._periods.get(model)
        if periods is None:
            return None
        index = bisect.bisect_right(self._starts[model], timestamp) - 1
        return periods[max(index, 0)]

    def sku_micros(self, sku: str | None) -> int | None:
        if sku is None or sku not in self.skus:
            return None
        return round(self.skus[sku] * MICROS_PER_USD)


def _number(model: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PricingError(f"models.{model}.{key}: must be a number >= 0, got {value!r}")
    return float(value)


def _rule(model: str, spec: Mapping[str, Any], where: str) -> BillingRule:
    return BillingRule(
        min_charge_usd=_number(model, f"{where}min_charge_usd", spec.get("min_charge_usd", 0)),
        round_to_usd=_number(model, f"{where}round_to_usd", spec.get("round_to_usd", 0)),
    )


def _effective_from(model: str, value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, datetime):
        return value.replace(tzinfo=value.tzinfo or timezone.utc).timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    if isinstance(value, str):
        try:
            return _effective_from(model, date.fromisoformat(value.strip()))
        except ValueError:
            pass
    raise PricingError(f"models.{model}.effective_from: must be a date like 2026-01-01, got {value!r}")


def _parse_period(model: str, spec: Any) -> ModelPrice:
    if not isinstance(spec, Mapping):
        raise PricingError(f"models.{model}: must be a mapping of prices")
    unknown = set(spec) - _MODEL_KEYS
    if unknown:
        raise PricingError(f"models.{model}: unknown keys {sorted(unknown)}")
    missing = [key for key in ("input", "output") if key not in spec]
    if missing:
        raise PricingError(f"models.{model}: missing {', '.join(missing)}")
    prices = {key: _number(model, key, spec.get(key, spec["input"])) for key in _PRICE_KEYS}
    operations = spec.get("operations") or {}
    if not isinstance(operations, Mapping):
        raise PricingError(f"models.{model}.operations: must be a mapping of operation to billing rules")
    return ModelPrice(
        model=model,
        provider=str(spec["provider"]) if spec.get("provider") else None,
        reasoning=_number(model, "reasoning", spec.get("reasoning", prices["output"])),
        request_fee=_number(model, "request_fee", spec.get("request_fee", 0)),
        effective_from=_effective_from(model, spec.get("effective_from")),
        billing=_rule(model, spec, ""),
        operations={str(op): _rule(model, rule or {}, f"operations.{op}.") for op, rule in operations.items()},
        **prices,
    )


def parse_price_table(*documents: Mapping[str, Any]) -> PriceTable:
    """Merge documents in order (later wins per model and per sku) into a :class:`PriceTable`."""
    merged_models: dict[str, Any] = {}
    merged_skus: dict[str, Any] = {}
    for document in documents:
        if not isinstance(document, Mapping):
            raise PricingError("price table must be a mapping with `models:` (and optional `skus:`)")
        unknown = set(document) - {"models", "skus"}
        if unknown:
            raise PricingError(f"price table: unknown top-level keys {sorted(unknown)}")
        merged_models.update(document.get("models") or {})
        merged_skus.update(document.get("skus") or {})
    models: dict[str, list[ModelPrice]] = {}
    for name, spec in merged_models.items():
        specs = spec if isinstance(spec, list) else [spec]
        periods = [_parse_period(str(name), item) for item in specs]
        if not periods:
            raise PricingError(f"models.{name}: empty list of price periods")
        aliases = {alias for item in specs if isinstance(item, Mapping) for alias in item.get("aliases") or ()}
        for key in (str(name), *map(str, aliases)):
            models[key] = periods
    skus = {}
    for sku, spec in merged_skus.items():
        if not isinstance(spec, Mapping) or "price_usd" not in spec:
            raise PricingError(f"skus.{sku}: must be a mapping with price_usd")
        skus[str(sku)] = _number(f"sku {sku}", "price_usd", spec["price_usd"])
    return PriceTable(models, skus)


def default_price_document() -> dict[str, Any]:
    return yaml.safe_load(resources.files("exporter").joinpath("core/prices/default.yaml").read_text(encoding="utf-8"))


def load_price_table(user_file: str = "") -> PriceTable:
    """The shipped table, with ``user_file`` merged over it when given."""
    documents = [default_price_document()]
    if user_file:
        try:
            documents.append(yaml.safe_load(Path(user_file).read_text(encoding="utf-8")) or {})
        except OSError as exc:
            raise PricingError(f"pricing.file: cannot read {user_file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise PricingError(f"pricing.file: {user_file} is not valid YAML: {exc}") from exc
    return parse_price_table(*documents)
