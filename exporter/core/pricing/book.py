"""The price book: the one entry point for cost. It owns the precedence

    the event's ``cost_usd``  >  a known ``sku``  >  the model's price (override file, then the
    shipped source)  >  unpriced (counted at $0, with a warning)

and returns integer atto-dollars (see :mod:`.rates`). ``aggregate.py`` only calls
:meth:`PriceBook.resolve` (once per label combination) and :meth:`PriceBook.cost` (per event).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import yaml
from genai_prices.data_snapshot import get_snapshot

from ..events import Event
from . import overrides, source
from .matching import could_be_honest, is_honest
from .rates import TieredRates, to_units
from .schedule import Schedule, compile_model, has_token_price

_RESOLVE_CACHE_MAX = 50_000  # distinct (model, provider) references remembered; client data, so capped

Warning = tuple[str, str] | None  # (field, message)


class PriceBook:
    def __init__(self, schedules: dict[int, Schedule], by_name: dict[str, Schedule], skus: Mapping[str, int],
                 override_file: str = "") -> None:
        self._source = schedules
        self._by_name = by_name  # override models and their aliases (lower case)
        self.skus = dict(skus)
        self.override_file = override_file
        self.version = source.source_version()
        self._cache: dict[tuple[str, str | None], Schedule | None] = {}
        known = [*schedules.values(), *by_name.values()]
        self.models = frozenset(s.model for s in known if has_token_price(s))
        self.providers = frozenset(s.provider for s in known)

    @property
    def priced_models(self) -> int:
        return len(self.models)

    def __contains__(self, model: str) -> bool:
        return model in self.models

    # --- model matching -----------------------------------------------------------------------
    def resolve(self, model: str, provider: str | None) -> Schedule | None:
        """The canonical model's schedule for a client's model reference (and provider label), or
        None when neither the override file nor the source knows it honestly."""
        key = (model, provider)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._by_name.get(model.lower()) or self._from_source(model, provider)
        if len(self._cache) >= _RESOLVE_CACHE_MAX:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _from_source(self, model: str, provider: str | None) -> Schedule | None:
        """The source's matcher with the event's provider, then by model name alone; then (when the
        model name does not identify its provider, e.g. ``text-embedding-3-small``) each provider's
        own model list, first-party vendors first. Every candidate must pass :func:`is_honest`."""
        if not could_be_honest(model, source.honest_names()):
            return None
        snapshot = get_snapshot()
        provider_id = source.source_provider_id(provider)
        for pid in ((provider_id, None) if provider_id else (None,)):
            try:
                _, info = snapshot.find_provider_model(model, None, pid, None)
            except LookupError:
                continue
            if is_honest(model, info):
                return self._source.get(id(info))
            return None  # the source's best match is a different model: never relabel
        for candidate in source.providers_by_priority():
            info = candidate.find_model(model)
            if info is not None:
                return self._source.get(id(info)) if is_honest(model, info) else None
        if "/" in model:  # a path the source does not know (``models/gemini-2.5-pro``): its last part
            return self._from_source(model.rsplit("/", 1)[-1], provider)
        return None

    def nearest(self, model: str) -> str | None:
        """The source's own match (even a dishonest one), for the warning message."""
        try:
            return get_snapshot().find_provider_model(model, None, None, None)[1].id
        except LookupError:
            return None

    # --- cost ----------------------------------------------------------------------------------
    def cost(self, event: Event, schedule: Schedule | None) -> tuple[int, int, int, Warning]:
        """(cost, saved by cache reads, extra paid for cache writes, warning), money in atto-dollars."""
        if event.cost_usd is not None:
            return to_units(event.cost_usd), 0, 0, None
        if event.sku is not None:
            sku = self.skus.get(event.sku)
            if sku is not None:
                return sku, 0, 0, None
        if schedule is None:
            return 0, 0, 0, ("model", f"no price for model {event.model!r}: counted at $0")
        tiered, fell_back = schedule.at(event.timestamp, event.service_tier)  # type: ignore[arg-type]
        input_tokens, output_tokens = event.input_tokens, event.output_tokens
        rates = tiered.flat or tiered.pick(input_tokens)  # type: ignore[arg-type]
        cache_read, cache_write = event.cache_read_tokens, event.cache_write_tokens
        if cache_read or cache_write or event.reasoning_tokens or event.audio_input_tokens \
                or event.audio_output_tokens:
            cost, saved, extra = rates.price((input_tokens, cache_read, cache_write,  # type: ignore[arg-type]
                                              event.cache_write_1h_tokens, event.audio_input_tokens, output_tokens,
                                              event.reasoning_tokens, event.audio_output_tokens))
        else:  # Rates.cost, unrolled for the common event (no details): this runs once per event
            coef = rates.coef
            cost, saved, extra = coef[0] * input_tokens + coef[5] * output_tokens + rates.fee, 0, 0  # type: ignore[operator]
        if schedule.rules:
            rule = schedule.operations.get(event.operation, schedule.billing)  # type: ignore[arg-type]
            cost = rule.apply(cost)
        if fell_back:
            return cost, saved, extra, ("service_tier", f"no {event.service_tier!r} price for {schedule.model!r} "
                                                        "at that time: priced at the default tier")
        return cost, saved, extra, None

    def rates_at(self, schedule: Schedule, timestamp: float, tier: str) -> tuple[TieredRates, bool]:
        return schedule.at(timestamp, tier)


def _read_override(path: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise overrides.PricingError(f"pricing.file: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise overrides.PricingError(f"pricing.file: {path} is not valid YAML: {exc}") from exc
    return document


def build_book(*documents: Mapping[str, Any], override_file: str = "") -> PriceBook:
    """The source compiled, with each override document merged over it in order (later wins)."""
    schedules, intern = source.compile_source()
    merged_models: dict[str, Any] = {}
    merged_skus: dict[str, Any] = {}
    for document in documents:
        if not isinstance(document, Mapping):
            raise overrides.PricingError("price file must be a mapping with `models:` (and optional `skus:`)")
        unknown = set(document) - {"models", "skus"}
        if unknown:
            raise overrides.PricingError(f"price file: unknown top-level keys {sorted(unknown)}")
        merged_models.update(document.get("models") or {})
        merged_skus.update(document.get("skus") or {})
    origin = override_file or "override"
    by_name: dict[str, Schedule] = {}
    snapshot = get_snapshot()
    for raw_name, spec in merged_models.items():
        name = str(raw_name)
        specs = spec if isinstance(spec, list) else [spec]
        if any(not isinstance(item, Mapping) for item in specs):
            raise overrides.PricingError(f"models.{name}: must be a mapping of prices")
        billing, operations = overrides.parse_rules(name, specs)
        if specs and overrides.is_rules_only(specs):  # billing rules on top of the source's prices
            try:
                _, info = snapshot.find_provider_model(name, None, None, None)
            except LookupError:
                raise overrides.PricingError(f"models.{name}: no prices given and the price source does not "
                                             "know this model") from None
            base = schedules[id(info)]
            schedule = Schedule(model=base.model, provider=base.provider, source=base.source, starts=base.starts,
                                day_windows=base.day_windows, table=base.table, billing=billing,
                                operations=operations, name=base.name)
            aliases: list[str] = []
        else:
            info, provider, aliases = overrides.model_info(name, specs)
            schedule = replace(compile_model(info, provider or "unknown", origin, intern), billing=billing,
                               operations=operations)  # a new Schedule: its derived fields follow
        for key in (name, *aliases):
            by_name[key.lower()] = schedule
    skus = {str(sku): overrides.sku_units(str(sku), spec) for sku, spec in merged_skus.items()}
    return PriceBook(schedules, by_name, skus, override_file)


def load_price_book(user_file: str = "") -> PriceBook:
    """The shipped source, with ``user_file`` (``pricing.file``) merged over it when given."""
    return build_book(*([_read_override(user_file)] if user_file else []), override_file=user_file)
