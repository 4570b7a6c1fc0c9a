"""``prometheus/thresholds.yml``, the one file where alert thresholds are written down.

Both generators read it: :mod:`mixin.rules` renders the alerts from it, :mod:`mixin.dashboards`
colours panels at the same values, so a panel turns red exactly where the alert fires.
:func:`validate` lists every problem at once, so a bad edit is fixed in one round trip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from exporter.config import parse_duration
from mixin import THRESHOLDS_FILE
from mixin.promql import MAX_DURATION_BUCKET, MAX_TTFT_BUCKET

ALERT_NAMES = (
    "LLMExporterDown",
    "LLMExporterHighRejectionRatio",
    "LLMUnpricedModel",
    "LLMExporterCardinalityOverflow",
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
    if "LLMTenantSilent" in present:
        duration("LLMTenantSilent.silent_for")
        positive("LLMTenantSilent.min_requests_1d")
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
