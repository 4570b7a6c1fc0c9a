"""Ground truth computed by the tests themselves, independently of the exporter's code."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
from genai_prices import Usage

DURATION_BOUNDS = [round(0.01 * 2 ** i, 6) for i in range(17)]
# Our provider labels → genai-prices provider ids, written out here on their own.
PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic", "gcp.gemini": "google", "aws.bedrock": "aws",
                "groq": "groq"}
# Models whose name does not tell genai-prices their provider.
FALLBACK_PROVIDERS = ("openai", "groq")


def genai_usage(event: dict) -> Usage:
    """The event's token fields in genai-prices' usage vocabulary (zeros spelled out)."""
    get = event.get
    return Usage(input_tokens=get("input_tokens", 0), output_tokens=get("output_tokens", 0),
                 cache_read_tokens=get("cache_read_tokens", 0), cache_write_tokens=get("cache_write_tokens", 0),
                 cache_write_1h_tokens=get("cache_write_1h_tokens", 0),
                 input_audio_tokens=get("audio_input_tokens", 0), output_audio_tokens=get("audio_output_tokens", 0),
                 output_reasoning_tokens=get("reasoning_tokens", 0))


def _when(event: dict) -> datetime:
    ts = event["timestamp"]
    if isinstance(ts, str):
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return datetime.fromtimestamp(ts, tz=UTC)


def expected_cost_decimal(event: dict) -> Decimal:
    """genai-prices' own calculator on the event (its ``cost_usd`` wins, as in the contract)."""
    if "cost_usd" in event:
        return Decimal(repr(event["cost_usd"]))
    tier = event.get("service_tier")
    context = None if tier in (None, "default") else (
        {"processing": "batch"} if tier == "batch" else {"service_tier": tier})
    provider = PROVIDER_IDS.get(event.get("provider") or "")
    candidates = (provider,) if provider else (None, *FALLBACK_PROVIDERS)
    for provider_id in candidates:
        try:
            result = genai_prices.calc_price(genai_usage(event), event["model"], provider_id=provider_id,
                                             genai_request_timestamp=_when(event), price_context=context)
        except LookupError:
            continue
        return result.total_price
    raise LookupError(f"genai-prices does not know {event['model']!r}")


def expected_cost(event: dict) -> float:
    return float(expected_cost_decimal(event))


def bucket_around(value: float, bounds: list[float] = DURATION_BOUNDS) -> tuple[float, float]:
    """The (lower, upper] histogram bucket that holds ``value``: where histogram_quantile must land."""
    for index, upper in enumerate(bounds):
        if value <= upper:
            return (bounds[index - 1] if index else 0.0), upper
    return bounds[-1], float("inf")


def true_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
