"""Ground truth computed by the tests themselves, independently of the exporter's code."""

from __future__ import annotations

import yaml

from harness import REPO

PRICES = yaml.safe_load((REPO / "exporter/core/prices/default.yaml").read_text())["models"]
DURATION_BOUNDS = [round(0.01 * 2 ** i, 6) for i in range(17)]


def expected_cost(event: dict) -> float:
    """The contract's formula written out on its own: tokens × USD per 1M tokens = micro-USD."""
    if "cost_usd" in event:
        return event["cost_usd"]
    p = PRICES[event["model"]]
    cr, cw, rs = (event.get(k, 0) for k in ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens"))
    micros = ((event["input_tokens"] - cr - cw) * p["input"] + cr * p["cache_read"] + cw * p["cache_write"]
              + (event["output_tokens"] - rs) * p["output"] + rs * p.get("reasoning", p["output"]))
    return round(micros) / 1e6


def bucket_around(value: float, bounds: list[float] = DURATION_BOUNDS) -> tuple[float, float]:
    """The (lower, upper] histogram bucket that holds ``value``: where histogram_quantile must land."""
    for index, upper in enumerate(bounds):
        if value <= upper:
            return (bounds[index - 1] if index else 0.0), upper
    return bounds[-1], float("inf")


def true_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
