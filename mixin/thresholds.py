"""``prometheus/thresholds.yml``, the one file where alert thresholds are written down.

Both generators read it: :mod:`mixin.rules` renders the alerts from it, :mod:`mixin.dashboards`
colours panels at the same values, so a panel turns red exactly where the alert fires.
:func:`validate` lists every problem at once, so a bad edit is fixed in one round trip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.config import parse_duration
from mixin import THRESHOLDS_FILE
from mixin.promql import MAX_DURATION_BUCKET, MAX_TTFT_BUCKET

ALERT_NAMES = (
    "LLMExporterDown",
    "LLMExporterHighRejectionRatio",
    "LLMExporterRequestsRefused",
    "LLMUnpricedModel",
    "LLMExporterCardinalityOverflow",
    "LLMExporterConfigReloadFailed",
    "LLMTenantSilent",
    "LLMTenantHighErrorRatio",
    "LLMModelHighErrorRatio",
    "LLMModelHighLatency",
    "LLMModelHighTimeToFirstToken",
    "LLMTenantBudgetNearlyExhausted",
    "LLMTenantBudgetExceeded",
    "LLMTenantBudgetBurnRateHigh",
    "LLMTenantCostAnomaly",
    "LLMAgentHighFailureRatio",
)


LATENCY_ALERTS = {"LLMModelHighLatency": MAX_DURATION_BUCKET, "LLMModelHighTimeToFirstToken": MAX_TTFT_BUCKET}
DEFAULT_CLASS = "default"  # the model_class label of models in no class
_CLASS_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class LatencyClass:
    """One model class of a latency alert: which models (PromQL matchers) and their p95 limit."""

    name: str
    matchers: tuple[str, ...]  # on the model label: this class's patterns, minus earlier classes'
    patterns: tuple[str, ...]  # the class's own patterns (empty for the default class)
    p95_seconds: float


def _alternation(patterns: list[str] | tuple[str, ...]) -> str:
    """Patterns as one PromQL regex string body (backslashes and quotes escaped)."""
    return "|".join(patterns).replace("\\", "\\\\").replace('"', '\\"')


def latency_classes(cfg: dict[str, Any], alert: str) -> list[LatencyClass]:
    """The classes of a latency alert, in match order, the default class (models in no class) last.

    A model belongs to the first class that matches it, so each class also excludes the
    patterns of the classes before it; a class without its own threshold for this alert uses
    the alert's ``p95_seconds``."""
    conf = cfg["alerts"][alert]
    default = float(conf["p95_seconds"])
    own = conf.get("class_p95_seconds") or {}
    classes: list[LatencyClass] = []
    earlier: list[str] = []
    for name, patterns in (cfg.get("model_classes") or {}).items():
        matchers = [f'model=~"{_alternation(patterns)}"']
        if earlier:
            matchers.append(f'model!~"{_alternation(earlier)}"')
        classes.append(LatencyClass(name, tuple(matchers), tuple(patterns), float(own.get(name, default))))
        earlier += patterns
    rest = (f'model!~"{_alternation(earlier)}"',) if earlier else ()
    return classes + [LatencyClass(DEFAULT_CLASS, rest, (), default)]


def load(path: Path = THRESHOLDS_FILE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def prometheus_duration(value: Any) -> float:
    """Seconds in a duration that Prometheus also accepts in ``for:`` (``15m``, not ``15`` or ``1.5h``).

    The exporter's own parser reads it; the extra rule is only that Prometheus wants a unit and
    no fraction."""
    text = str(value)
    try:
        if not isinstance(value, str) or "." in text:
            raise ValueError(text)
        return parse_duration(text)
    except ValueError:
        raise ValueError(f"not a Prometheus duration (use e.g. 30s, 5m, 1h): {value!r}") from None


def validate(cfg: Any) -> list[str]:
    """Every problem in thresholds.yml at once (empty list: valid)."""
    if not isinstance(cfg, dict):
        return ["thresholds.yml must be a mapping"]
    errors: list[str] = []
    for key in ("selector", "runbook_url", "alerts"):
        if key not in cfg:
            errors.append(f"missing top-level key {key!r}")
    alerts = cfg.get("alerts")
    if not isinstance(alerts, dict):
        return errors + ["'alerts' must be a mapping of alert name to settings"]
    for name in sorted(set(ALERT_NAMES) - set(alerts)):
        errors.append(f"alerts.{name}: missing")
    for name in sorted(set(alerts) - set(ALERT_NAMES)):
        errors.append(f"alerts.{name}: unknown alert (the generator knows {', '.join(ALERT_NAMES)})")

    def get(path: str) -> Any:
        node: Any = alerts
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                errors.append(f"alerts.{path}: missing")
                return None
            node = node[part]
        return node

    def duration(path: str) -> None:
        value = get(path)
        if value is not None:
            try:
                prometheus_duration(value)
            except ValueError as exc:
                errors.append(f"alerts.{path}: {exc}")

    def positive(path: str, upper: float | None = None, strict_upper: bool = False) -> float | None:
        value = get(path)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            errors.append(f"alerts.{path}: must be a number > 0, got {value!r}")
            return None
        if upper is not None and (value >= upper if strict_upper else value > upper):
            errors.append(f"alerts.{path}: must be {'<' if strict_upper else '<='} {upper:g}, got {value!r}")
            return None
        return float(value)

    present = set(alerts) & set(ALERT_NAMES)
    for name in sorted(present):
        if name in ("LLMTenantHighErrorRatio", "LLMModelHighErrorRatio"):
            duration(f"{name}.warning.for")
            duration(f"{name}.critical.for")
            warn = positive(f"{name}.warning.ratio", 1)
            crit = positive(f"{name}.critical.ratio", 1)
            positive(f"{name}.min_request_rate")
            if warn is not None and crit is not None and warn >= crit:
                errors.append(f"alerts.{name}: warning.ratio must be below critical.ratio")
            try:
                if (prometheus_duration(alerts[name]["warning"]["for"])
                        < prometheus_duration(alerts[name]["critical"]["for"])):
                    errors.append(f"alerts.{name}: warning.for must not be shorter than critical.for (the critical "
                                  "alert must fire first for Alertmanager to inhibit the warning)")
            except (KeyError, TypeError, ValueError):
                pass  # reported above
        else:
            duration(f"{name}.for")
    if "LLMExporterHighRejectionRatio" in present:
        positive("LLMExporterHighRejectionRatio.ratio", 1)
        positive("LLMExporterHighRejectionRatio.min_event_rate")
    if "LLMExporterRequestsRefused" in present:
        positive("LLMExporterRequestsRefused.min_refused_per_second")
    if "LLMTenantSilent" in present:
        duration("LLMTenantSilent.silent_for")
        positive("LLMTenantSilent.min_requests_1d")
    classes = _validate_model_classes(cfg.get("model_classes"), errors)
    for name, bucket in LATENCY_ALERTS.items():
        if name not in present:
            continue
        own = alerts[name].get("class_p95_seconds") if isinstance(alerts[name], dict) else None
        if own is None:
            continue
        if not isinstance(own, dict):
            errors.append(f"alerts.{name}.class_p95_seconds: must map a model class to seconds")
            continue
        for cls in own:
            if cls not in classes:
                errors.append(f"alerts.{name}.class_p95_seconds.{cls}: not a class of model_classes "
                              f"({', '.join(classes) or 'none defined'})")
            else:
                positive(f"{name}.class_p95_seconds.{cls}", bucket, strict_upper=True)
    if "LLMModelHighLatency" in present:
        positive("LLMModelHighLatency.p95_seconds", MAX_DURATION_BUCKET, strict_upper=True)
        ops = get("LLMModelHighLatency.excluded_operations")
        if ops is not None and (not isinstance(ops, list) or not all(isinstance(o, str) for o in ops)):
            errors.append("alerts.LLMModelHighLatency.excluded_operations: must be a list of operations")
    if "LLMModelHighTimeToFirstToken" in present:
        positive("LLMModelHighTimeToFirstToken.p95_seconds", MAX_TTFT_BUCKET, strict_upper=True)
    near = positive("LLMTenantBudgetNearlyExhausted.ratio") if "LLMTenantBudgetNearlyExhausted" in present else None
    over = positive("LLMTenantBudgetExceeded.ratio") if "LLMTenantBudgetExceeded" in present else None
    if near is not None and over is not None and near >= over:
        errors.append("alerts.LLMTenantBudgetNearlyExhausted.ratio must be below LLMTenantBudgetExceeded.ratio")
    if "LLMTenantBudgetBurnRateHigh" in present:
        positive("LLMTenantBudgetBurnRateHigh.burn_rate")
    if "LLMTenantCostAnomaly" in present:
        positive("LLMTenantCostAnomaly.factor")
        positive("LLMTenantCostAnomaly.min_hourly_spend_usd")
    if "LLMAgentHighFailureRatio" in present:
        positive("LLMAgentHighFailureRatio.ratio", 1)
        positive("LLMAgentHighFailureRatio.min_runs_1h")
    return errors


def _validate_model_classes(classes: Any, errors: list[str]) -> list[str]:
    """Problems of ``model_classes`` go to ``errors``; returns the class names."""
    if classes is None:
        return []
    if not isinstance(classes, dict):
        errors.append("model_classes: must map a class name to a list of model-name patterns")
        return []
    for name, patterns in classes.items():
        if not isinstance(name, str) or not _CLASS_NAME.match(name) or name == DEFAULT_CLASS:
            errors.append(f"model_classes.{name}: a class name is lower-case letters, digits and _ "
                          f"(and not {DEFAULT_CLASS!r}, the label of models in no class)")
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
            errors.append(f"model_classes.{name}: must be a non-empty list of regular expressions")
            continue
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                errors.append(f"model_classes.{name}: {pattern!r} is not a regular expression: {exc}")
    return [name for name in classes if isinstance(name, str)]
