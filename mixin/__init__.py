"""The monitoring mixin of llm-usage-exporter: Grafana dashboards and Prometheus rules as code.

    python -m mixin dashboards [--check]   # grafana/dashboards/*.json
    python -m mixin rules [--check]        # prometheus/rules/{recording,alerts}.yml

Development tooling, not part of the exporter wheel: it renders files that are committed and
shipped as files (mounted by docker-compose, copied by operators). It reads the metric contract
(names, buckets) from :mod:`exporter.core.metrics` and durations with
:func:`exporter.config.parse_duration`, so the generated files cannot drift from the exporter.

Modules: :mod:`mixin.promql` (PromQL builders and metric-name checks shared by both generators),
:mod:`mixin.thresholds` (``prometheus/thresholds.yml``: loading, validation, per-model-class
latency limits), :mod:`mixin.rules`, :mod:`mixin.dashboards`, and :mod:`mixin.schema` (every
dashboard through grafana-foundation-sdk's Grafana 11.6 models and Grafana's registries,
``grafana_11_6.yml``).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS_FILE = ROOT / "prometheus" / "thresholds.yml"
RULES_DIR = ROOT / "prometheus" / "rules"
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
