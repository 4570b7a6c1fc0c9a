"""PromQL builders and metric-name checks shared by the rule and dashboard generators.

One set of builders, so that a recording rule and the panel that reads the same ratio are
written the same way (``ratio_or_zero`` is 0, not absent, before the first error), and one
list of what the exporter exposes, read from :mod:`exporter.core.metrics`, so that a rule or
a panel naming a metric that does not exist fails ``--check`` instead of showing "No data".
"""

from __future__ import annotations

import re
from typing import Sequence

from exporter.core import metrics

# Series that Prometheus itself writes, not the exporter.
PROMETHEUS_SERIES = ("up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS")

# Largest finite bucket bounds: histogram_quantile never returns more than these, so a
# latency threshold at or above them could never fire.
MAX_DURATION_BUCKET = max(metrics.DURATION.buckets)
MAX_TTFT_BUCKET = max(metrics.TTFT.buckets)


def exported_metric_names() -> set[str]:
    """Every series name the exporter exposes (histograms as their _bucket/_sum/_count)."""
    names: set[str] = set()
    for metric in metrics.ALL_METRICS:
        if metric.kind == "histogram":
            names.update(metric.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(metric.exposed_name)
    return names


def number(value: float) -> str:
    """A threshold as it appears in PromQL (0.05, 3, 1800): no trailing ``.0``."""
    return f"{value:g}" if float(value) != int(value) else str(int(value))


def sel(metric: str, *matchers: str) -> str:
    """``metric{m1, m2}``; empty matchers are dropped."""
    used = [m for m in matchers if m]
    return f"{metric}{{{', '.join(used)}}}" if used else metric


def closing_paren(expr: str, open_at: int) -> int:
    """Index of the parenthesis closing the one at ``open_at`` (-1: unbalanced); quotes respected."""
    depth, quoted = 0, False
    for i in range(open_at, len(expr)):
        ch = expr[i]
        if ch == '"' and expr[i - 1] != "\\":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _is_atomic(expr: str) -> bool:
    """True for a selector or a single call (``sum by (x) (...)``) that needs no parentheses."""
    expr = expr.strip()
    if re.fullmatch(r"[\w:]+(\{[^{}]*\})?", expr):
        return True
    match = re.match(r"^[\w:]+(?: by \([\w, ]*\))? ?\(", expr)
    if not match:
        return expr.startswith("(") and closing_paren(expr, 0) == len(expr) - 1
    return closing_paren(expr, match.end() - 1) == len(expr) - 1


def paren(expr: str) -> str:
    return expr if _is_atomic(expr) else f"({expr})"


def agg(op: str, expr: str, *labels: str) -> str:
    if not labels:
        return f"{op}({expr})"
    return f"{op} by ({', '.join(labels)}) ({expr})"


def rate(selector: str, window: str) -> str:
    return f"rate({selector}[{window}])"


def increase(selector: str, window: str) -> str:
    return f"increase({selector}[{window}])"


def sum_rate(metric: str, matchers: Sequence[str], by: Sequence[str], window: str) -> str:
    return agg("sum", rate(sel(metric, *matchers), window), *by)


def sum_increase(metric: str, matchers: Sequence[str], by: Sequence[str], window: str) -> str:
    return agg("sum", increase(sel(metric, *matchers), window), *by)


def ratio(num: str, den: str, *, block: bool = False) -> str:
    """``num / den``, with no result (instead of NaN or Inf) while the denominator is 0.

    ``block`` lays it out on lines, for rule files read in review; panels keep one line."""
    if block:
        return f"{num}\n/\n({den} > 0)\n"
    return f"{paren(num)} / ({den} > 0)"


def ratio_or_zero(num: str, den: str, *, block: bool = False) -> str:
    """Like ``ratio``, but 0 where the numerator has no series yet (no error ever seen, say)."""
    if block:
        return f"(\n  {num}\n  or\n  0 * {den}\n)\n/\n({den} > 0)\n"
    return f"({num} or 0 * {paren(den)}) / ({den} > 0)"


def quantile(q: float | str, metric: str, matchers: Sequence[str], by: Sequence[str], window: str) -> str:
    """``histogram_quantile`` over ``sum by (<by>, le) (rate(<metric>_bucket[window]))``."""
    inner = agg("sum", rate(sel(metric + "_bucket", *matchers), window), *by, "le")
    return f"histogram_quantile({q}, {inner})"


_METRIC_TOKEN = re.compile(r"\b([a-zA-Z_][\w]*:[\w:]*[\w]|llm_\w+)\b|\b([a-zA-Z_][\w]*)\{")
_KEYWORDS = {"sum", "by", "rate", "increase", "histogram_quantile", "or", "and", "unless", "on",
             "ignoring", "group_left", "group_right", "topk", "sort_desc", "max", "min", "count",
             "time", "vector", "label_values", "avg", "absent"}


def metrics_in(expr: str) -> list[str]:
    """Metric and recording-rule names an expression reads, in order of first use."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values never name metrics
    found: list[str] = []
    for a, b in _METRIC_TOKEN.findall(expr):
        name = a or b
        if name and name not in _KEYWORDS and name not in found:
            found.append(name)
    return found


def unknown_names(expr: str, recording_rules: set[str]) -> list[str]:
    """Names in ``expr`` that neither the exporter, Prometheus nor a recording rule provides."""
    known = exported_metric_names() | set(PROMETHEUS_SERIES)
    return [name for name in metrics_in(expr)
            if name not in (recording_rules if ":" in name else known)]
