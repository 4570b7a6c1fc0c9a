"""The shipped price source: genai-prices' bundled data, compiled at start-up (no network)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from typing import Any

from genai_prices import types as gp

from .schedule import Schedule, compile_model

SOURCE = "genai-prices"

# genai-prices provider id ↔ the OpenTelemetry gen_ai.provider.name values our provider label uses.
PROVIDER_LABELS = {"openai": "openai", "anthropic": "anthropic", "google": "gcp.gemini", "aws": "aws.bedrock",
                   "azure": "azure.ai.openai", "mistral": "mistral_ai", "x-ai": "x_ai", "deepseek": "deepseek",
                   "groq": "groq", "cohere": "cohere", "perplexity": "perplexity"}
_SOURCE_IDS = {label: pid for pid, label in PROVIDER_LABELS.items()} | {
    "gcp.vertex_ai": "google", "gcp.gen_ai": "google", "azure.ai.inference": "azure", "azure.ai.openai": "azure"}


def source_version() -> str:
    return version("genai-prices")


def source_provider_id(label: str | None) -> str | None:
    """Our provider label → the source's provider id (None: let the source pick by model name)."""
    if label is None:
        return None
    return _SOURCE_IDS.get(label, label)


def provider_label(provider_id: str) -> str:
    return PROVIDER_LABELS.get(provider_id, provider_id)


def providers() -> list[gp.Provider]:
    from genai_prices.data_snapshot import get_snapshot

    return get_snapshot().providers


@cache
def compile_source() -> tuple[dict[int, Schedule], dict[Any, Any]]:
    """Every model of every provider → its :class:`Schedule`, keyed by ``id(ModelInfo)`` (the
    source's matcher returns the ModelInfo object). A model whose prices the source's own rules
    reject is left out (it cannot be priced by the source either). Compiled once per process (the
    bundled data cannot change while it runs); returns the rate intern table for the overrides too."""
    intern: dict[Any, Any] = {}
    compiled: dict[int, Schedule] = {}
    for provider in providers():
        for model in provider.models:
            try:
                compiled[id(model)] = compile_model(model, provider_label(provider.id), SOURCE, intern)
            except ValueError:
                continue
    return compiled, intern


_FIRST_PARTY = ("openai", "anthropic", "aws", "google", "mistral", "x-ai", "deepseek", "cohere", "groq", "perplexity")


@cache
def providers_by_priority() -> tuple[gp.Provider, ...]:
    """Providers for a model name that names none: model vendors first, then resellers."""
    everyone = providers()
    first = [p for pid in _FIRST_PARTY for p in everyone if p.id == pid]
    return (*first, *(p for p in everyone if p not in first))


@cache
def honest_names() -> frozenset[str]:
    from .matching import name_index

    return name_index([model for provider in providers() for model in provider.models])
