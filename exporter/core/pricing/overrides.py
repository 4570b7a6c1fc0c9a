"""The override file (``pricing.file``): self-hosted models, negotiated prices, billing rules, SKUs.

Format (USD per 1M tokens unless said otherwise)::

    models:
      my-llama:                      # a model the source does not know, or one to re-price whole
        provider: vllm
        input: 0.2
        output: 0.6
        cache_read: 0.02             # optional; absent → billed as input (same for every detail)
        cache_write: 0.25            # 5-minute (or only) cache writes
        cache_write_1h: 0.4          # optional, 1-hour cache writes
        audio_input: 4               # optional
        audio_output: 16             # optional
        reasoning: 0.6               # optional; absent → billed as output
        request_fee: 0.001           # optional, USD per request
        tiers: [{above_input_tokens: 200000, input: 0.4, output: 1.2}]   # long-context prices
        service_tiers: {batch: {input: 0.1, output: 0.3}, flex: {...}}   # partial overrides
        aliases: [my-llama-2026-01]
        min_charge_usd / round_to_usd / operations.<op>.{min_charge_usd,round_to_usd}
      gpt-4o: {round_to_usd: 0.0001} # no prices: keep the source's, add billing rules
    skus:
      report: {price_usd: 0.5}       # fixed price per event that names `sku: report`

A model may be a list of such mappings with ``effective_from: YYYY-MM-DD`` (price changes).
The entries compile with the same code as the source's data, so the formula is the same.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Mapping

from genai_prices import types as gp

from .rates import to_units
from .schedule import BillingRule

_TOKEN_KEYS = {"input": "input_mtok", "output": "output_mtok", "cache_read": "cache_read_mtok",
               "cache_write": "cache_write_mtok", "cache_write_1h": "cache_write_1h_mtok",
               "audio_input": "input_audio_mtok", "audio_output": "output_audio_mtok",
               "reasoning": "output_reasoning_mtok"}
_RULE_KEYS = {"min_charge_usd", "round_to_usd", "operations"}
_MODEL_KEYS = {*_TOKEN_KEYS, *_RULE_KEYS, "provider", "request_fee", "aliases", "effective_from", "tiers",
               "service_tiers"}


class PricingError(ValueError):
    """The override file is malformed; the message names the model and key."""


def _decimal(where: str, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise PricingError(f"{where}: must be a number >= 0, got {value!r}")
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _prices(where: str, spec: Mapping[str, Any], partial: bool) -> dict[str, Any]:
    prices: dict[str, Any] = {}
    for key, price_key in _TOKEN_KEYS.items():
        if key in spec:
            prices[price_key] = _decimal(f"{where}.{key}", spec[key])
    if "request_fee" in spec:
        prices["requests_kcount"] = _decimal(f"{where}.request_fee", spec["request_fee"]) * 1000
    if not partial:
        missing = [key for key in ("input", "output") if key not in spec]
        if missing:
            raise PricingError(f"{where}: missing {', '.join(missing)}")
    return prices


def _with_tiers(where: str, prices: dict[str, Any], tiers: Any) -> dict[str, Any]:
    if tiers is None:
        return prices
    if not isinstance(tiers, list):
        raise PricingError(f"{where}.tiers: must be a list of {{above_input_tokens, prices...}}")
    for i, tier in enumerate(tiers):
        if not isinstance(tier, Mapping) or not isinstance(tier.get("above_input_tokens"), int):
            raise PricingError(f"{where}.tiers[{i}]: needs above_input_tokens (an integer)")
        unknown = set(tier) - {"above_input_tokens", *_TOKEN_KEYS}
        if unknown:
            raise PricingError(f"{where}.tiers[{i}]: unknown keys {sorted(unknown)}")
        for key, price in _prices(f"{where}.tiers[{i}]", tier, partial=True).items():
            base = prices.get(key)
            if base is None:
                raise PricingError(f"{where}.tiers[{i}].{key}: has no base price")
            if not isinstance(base, gp.TieredPrices):
                base = prices[key] = gp.TieredPrices(base=base, tiers=[])
            base.tiers.append(gp.Tier(start=tier["above_input_tokens"], price=price))
            base.tiers.sort(key=lambda t: t.start)
    return prices


def _effective_from(where: str, value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise PricingError(f"{where}.effective_from: must be a date like 2026-01-01, got {value!r}")


def _rule(where: str, spec: Mapping[str, Any]) -> BillingRule:
    return BillingRule(min_charge=to_units(_decimal(f"{where}.min_charge_usd", spec.get("min_charge_usd", 0))),
                       round_to=to_units(_decimal(f"{where}.round_to_usd", spec.get("round_to_usd", 0))))


def parse_rules(name: str, specs: list[Mapping[str, Any]]) -> tuple[BillingRule, dict[str, BillingRule]]:
    """Billing rules of a model: the last period that states them wins (they belong to the model)."""
    billing, operations = BillingRule(), {}
    for spec in specs:
        if {"min_charge_usd", "round_to_usd"} & set(spec):
            billing = _rule(f"models.{name}", spec)
        ops = spec.get("operations") or {}
        if not isinstance(ops, Mapping):
            raise PricingError(f"models.{name}.operations: must be a mapping of operation to billing rules")
        for op, rule in ops.items():
            operations[str(op)] = _rule(f"models.{name}.operations.{op}", rule or {})
    return billing, operations


def is_rules_only(specs: list[Mapping[str, Any]]) -> bool:
    return all(set(spec) <= _RULE_KEYS for spec in specs)


def model_info(name: str, specs: list[Any]) -> tuple[gp.ModelInfo, str | None, list[str]]:
    """One override model → a genai-prices ModelInfo (so it compiles like the source), its provider
    label and its aliases."""
    if not specs:
        raise PricingError(f"models.{name}: empty list of price periods")
    conditional: list[gp.ConditionalPrice] = []
    variants: list[tuple[date, gp.PriceVariant]] = []
    provider, aliases = None, []
    for spec in specs:
        where = f"models.{name}"
        if not isinstance(spec, Mapping):
            raise PricingError(f"{where}: must be a mapping of prices")
        unknown = set(spec) - _MODEL_KEYS
        if unknown:
            raise PricingError(f"{where}: unknown keys {sorted(unknown)}")
        prices = _with_tiers(where, _prices(where, spec, partial=False), spec.get("tiers"))
        start = _effective_from(where, spec.get("effective_from"))
        constraint = gp.StartDateConstraint(start_date=start) if start else None
        conditional.append(gp.ConditionalPrice(constraint=constraint, prices=gp.ModelPrice(**prices)))
        tiers = spec.get("service_tiers") or {}
        if not isinstance(tiers, Mapping):
            raise PricingError(f"{where}.service_tiers: must be a mapping of tier to prices")
        for tier, tier_spec in tiers.items():
            if not isinstance(tier_spec, Mapping):
                raise PricingError(f"{where}.service_tiers.{tier}: must be a mapping of prices")
            when = {"processing": "batch"} if tier == "batch" else {"service_tier": str(tier)}
            variants.append((start or date.min, gp.PriceVariant(when=when, constraint=constraint, prices=gp.ModelPrice(
                **_prices(f"{where}.service_tiers.{tier}", tier_spec, partial=True)))))
        provider = str(spec["provider"]) if spec.get("provider") else provider
        aliases += [str(a) for a in spec.get("aliases") or ()]
    conditional.sort(key=lambda c: c.constraint.start_date if c.constraint else date.min)
    # The source resolves variants first to last; the latest period's must win once it starts.
    ordered = [variant for _, variant in sorted(variants, key=lambda item: item[0], reverse=True)]
    model = gp.ModelInfo(id=name, match=gp.ClauseEquals(equals=name), name=name, prices=conditional,
                         price_variants=ordered or None)
    return model, provider, aliases


def sku_units(sku: str, spec: Any) -> int:
    if not isinstance(spec, Mapping) or "price_usd" not in spec:
        raise PricingError(f"skus.{sku}: must be a mapping with price_usd")
    return to_units(_decimal(f"skus.{sku}.price_usd", spec["price_usd"]))
