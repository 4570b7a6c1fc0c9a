"""Generate the Grafana dashboards of llm-usage-exporter.

    python -m mixin dashboards           # (re)write grafana/dashboards/*.json  (make dashboards)
    python -m mixin dashboards --check   # exit 1 if the committed JSON is stale, a query names a
                                         # metric that does not exist, or Grafana 11.6's schema
                                         # would not take a dashboard as written

Every dashboard goes through grafana-foundation-sdk's models (the Grafana 11.6 build) on its
way to disk (:mod:`mixin.schema`): nothing may be lost or change type in that round trip, units,
transformations and matchers must be in Grafana 11.6's registries, every panel carries
``pluginVersion`` (the Grafana version of docker-compose.yml, so Grafana runs no legacy panel
migration) and ``schemaVersion`` is the SDK's, i.e. what Grafana 11.6 writes. The committed
JSON is the SDK's encoding with sorted keys, two-space indent and a trailing newline, so a
changed query is a one-line diff in review and ``--check`` compares bytes.

How the code is laid out: small PromQL builders (``sel``, ``sum_rate``, ``ratio``,
``quantile`` ...), panel builders (``timeseries``, ``stat``, ``gauge``, ``bargauge``, ``table``,
``heatmap``, ``barchart``), a ``Grid`` that places panels left to right in Grafana's 24 columns,
then one function per dashboard. Every panel description ends with the list of metrics its
queries use, computed from the queries themselves, so it cannot go stale.

Conventions that the tests in ``tests/unit/test_dashboards_static.py`` enforce:

* datasource is always ``${datasource}`` (a ``datasource`` template variable); the only fixed
  datasource uids live in ``grafana/provisioning/datasources/`` (prometheus.yml, victoriametrics.yml);
* rates use ``$__rate_interval``; per-period spend uses ``1h``, ``1d`` or ``$__range`` and says so
  in its title; recording rules are used for "now" stats and gauges;
* every numeric factor in a query (``* 3600``, ``1000 *``) is explained in the description;
* per-model series are named ``<model>`` or ``<model> <suffix>`` (for example ``gpt-4o p95``), so
  that one set of overrides gives every model the same colour on every panel;
* thresholds are read from ``prometheus/thresholds.yml``, the same file the alert rules are
  rendered from, so a panel turns red exactly where the alert fires.

The live integration tests list every query with ``iter_queries`` and substitute the template
variables with ``tests/grafana_vars.py`` (Grafana's interpreter, re-implemented for the tests) to
run every dashboard query against a real Prometheus.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import yaml

from exporter.config import parse_duration
from mixin import DASHBOARD_DIR, ROOT, RULES_DIR, promql, schema
from mixin.thresholds import LatencyClass, latency_classes
from mixin.thresholds import load as load_thresholds
from mixin.promql import agg, metrics_in, paren, rate, ratio, ratio_or_zero, sel

OUT_DIR = DASHBOARD_DIR

TAG = "llm-usage"
DS = {"type": "prometheus", "uid": "${datasource}"}

RI = "$__rate_interval"
RANGE = "$__range"

# Recording rules the dashboards use (defined in prometheus/rules/recording.yml).
RECORDING_RULES = (
    "tenant:llm_cost_usd:increase1d",
    "tenant:llm_budget_limit_usd:max",
    "tenant_customer:llm_cost_usd:increase1d",
    "tenant:llm_budget_used_ratio:increase1d",
    "tenant:llm_agent_success_ratio:rate1h",
    "tenant:llm_agent_cost_per_successful_run_usd:rate1h",
    "tenant_model:llm_cost_per_1k_tokens_usd:rate1h",
)
# Fixed colour per model, the same on every panel. Families share a hue: OpenAI greens and
# teals (o-series yellow), Anthropic reds and oranges, Google blues, open-weight purples.
MODEL_COLORS: dict[str, str] = {
    "gpt-5": "#2F9E44",
    "gpt-5-mini": "#8CE99A",
    "gpt-4o": "#56A64B",
    "gpt-4o-mini": "#96D98D",
    "gpt-4.1": "#0F7B6C",
    "gpt-4.1-mini": "#5AC8B8",
    "o3": "#E0B400",
    "o4-mini": "#FADE2A",
    "claude-opus-4-1": "#C4162A",
    "claude-opus-4-5": "#F2495C",
    "claude-sonnet-4-5": "#FF780A",
    "claude-haiku-4-5": "#FFCB7D",
    "gemini-2.5-pro": "#1F60C4",
    "gemini-2.5-flash": "#8AB8FF",
    "gemini-2.0-flash": "#5794F2",
    "llama-3.3-70b-versatile": "#8F3BB8",
    "mistral-large": "#B877D9",
    "deepseek-chat": "#3D71D9",
    "deepseek-reasoner": "#806EB7",
    "text-embedding-3-small": "#A16D4B",
    "text-embedding-3-large": "#7B4F33",
}
NO_BUDGET = "No budget configured (tenants.<name>.budget_usd_per_day)"
OTHER_COLOR = "#808080"  # the "__other__" bucket that values past a cardinality cap fold into


# --------------------------------------------------------------------------------------------
# Inputs shared with the rest of the repo
# --------------------------------------------------------------------------------------------

def defined_recording_rules(rules_dir: Path = RULES_DIR) -> set[str] | None:
    """Names of the recording rules in ``prometheus/rules/*.yml`` (None when there are no files)."""
    files = sorted(rules_dir.glob("*.yml")) + sorted(rules_dir.glob("*.yaml"))
    if not files:
        return None
    names: set[str] = set()
    for file in files:
        doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        for group in doc.get("groups", []) or []:
            for rule in group.get("rules", []) or []:
                if "record" in rule:
                    names.add(rule["record"])
    return names


# --------------------------------------------------------------------------------------------
# PromQL builders: the shared ones (mixin.promql) with Grafana's windows as defaults
# --------------------------------------------------------------------------------------------

TENANT = 'tenant=~"$tenant"'
CUSTOMER = 'customer=~"$customer"'
MODEL = 'model=~"$model"'


def sum_rate(metric: str, matchers: Sequence[str] = (), by: Sequence[str] = (), window: str = RI) -> str:
    return promql.sum_rate(metric, matchers, by, window)


def sum_increase(metric: str, matchers: Sequence[str] = (), by: Sequence[str] = (), window: str = RANGE) -> str:
    return promql.sum_increase(metric, matchers, by, window)


def quantile(q: float, metric: str, matchers: Sequence[str] = (), by: Sequence[str] = (),
             window: str = RI) -> str:
    return promql.quantile(q, metric, matchers, by, window)


def per_hour(expr: str) -> str:
    return f"{paren(expr)} * 3600"


def pct_label(q: float) -> str:
    return f"p{round(q * 100):d}"


# --------------------------------------------------------------------------------------------
# Panel builders
# --------------------------------------------------------------------------------------------

def Q(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series",
      interval: str | None = None, ref: str | None = None) -> dict[str, Any]:
    """One Prometheus query (a panel target)."""
    target: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
    }
    if interval:
        target["interval"] = interval
    if ref:
        target["refId"] = ref
    return target


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    """``thresholds(("green", None), ("red", 0.8))``: the first step is the base colour."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def _js_regex_escape(text: str) -> str:
    return re.sub(r"[.*+?^${}()|\[\]\\/]", lambda m: "\\" + m.group(0), text)


def model_color_overrides() -> list[dict[str, Any]]:
    """Fixed colours for series named ``<model>`` or ``<model> <anything>``.

    Grafana applies overrides in order, so the catch-all comes first: any model not listed
    gets a colour derived from its name (stable across panels and reloads), ``__other__`` is
    grey, and the listed models get their fixed colour.
    """
    def fixed(color: str) -> dict[str, Any]:
        return {"id": "color", "value": {"fixedColor": color, "mode": "fixed"}}

    def by_model(name: str) -> dict[str, Any]:
        return {"id": "byRegexp", "options": f"/^{_js_regex_escape(name)}( .*)?$/"}

    overrides = [{"matcher": {"id": "byRegexp", "options": "/.*/"},
                  "properties": [{"id": "color", "value": {"mode": "palette-classic-by-name"}}]},
                 {"matcher": by_model("__other__"), "properties": [fixed(OTHER_COLOR)]}]
    overrides += [{"matcher": by_model(model), "properties": [fixed(color)]}
                  for model, color in MODEL_COLORS.items()]
    return overrides


def color_override(name_regex: str, color: str) -> dict[str, Any]:
    return {"matcher": {"id": "byRegexp", "options": name_regex},
            "properties": [{"id": "color", "value": {"fixedColor": color, "mode": "fixed"}}]}


def line_style_override(name_regex: str, style: str) -> dict[str, Any]:
    dash = {"dash": [10, 10], "fill": "dash"} if style == "dash" else {"dash": [0, 10], "fill": "dot"}
    return {"matcher": {"id": "byRegexp", "options": name_regex},
            "properties": [{"id": "custom.lineStyle", "value": dash}]}


def right_axis_override(name: str, unit: str, color: str | None = None) -> dict[str, Any]:
    props: list[dict[str, Any]] = [{"id": "unit", "value": unit},
                                   {"id": "custom.axisPlacement", "value": "right"},
                                   {"id": "custom.fillOpacity", "value": 0},
                                   {"id": "custom.stacking", "value": {"group": "B", "mode": "none"}}]
    if color:
        props.append({"id": "color", "value": {"fixedColor": color, "mode": "fixed"}})
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


QUANTILE_STYLES = [line_style_override("/ p50$/", "dot"), line_style_override("/ p99$/", "dash")]

def _describe(description: str, targets: Sequence[dict[str, Any]]) -> str:
    names: list[str] = []
    for target in targets:
        for name in metrics_in(target["expr"]):
            if name not in names:
                names.append(name)
    return description.rstrip() + "\n\nMetrics: " + ", ".join(f"`{n}`" for n in names) + "."


def _with_refs(targets: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, target in enumerate(targets):
        target = dict(target)
        target.setdefault("refId", chr(ord("A") + i))
        out.append(target)
    return out


def _panel(kind: str, title: str, description: str, targets: Sequence[dict[str, Any]], unit: str, *,
           options: dict[str, Any], custom: dict[str, Any] | None = None,
           overrides: Iterable[dict[str, Any]] = (), color: dict[str, Any] | None = None,
           thresholds_: dict[str, Any] | None = None, min_: float | None = None, max_: float | None = None,
           decimals: int | None = None, interval: str | None = None, max_data_points: int | None = None,
           transformations: Iterable[dict[str, Any]] = (), links: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    targets = _with_refs(targets)
    defaults: dict[str, Any] = {
        "color": color or {"mode": "palette-classic"},
        "mappings": [],
        "thresholds": thresholds_ or thresholds(("green", None)),
        "unit": unit,
    }
    if custom is not None:
        defaults["custom"] = custom
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if decimals is not None:
        defaults["decimals"] = decimals
    panel: dict[str, Any] = {
        "datasource": DS,
        "description": _describe(description, targets),
        "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
        "options": options,
        "pluginVersion": schema.grafana_version(),
        "targets": targets,
        "title": title,
        "type": kind,
    }
    if interval:
        panel["interval"] = interval
    if max_data_points:
        panel["maxDataPoints"] = max_data_points
    transformations = list(transformations)
    if transformations:
        panel["transformations"] = transformations
    links = list(links)
    if links:
        panel["links"] = links
    return panel


def _reduce(calc: str = "lastNotNull") -> dict[str, Any]:
    return {"calcs": [calc], "fields": "", "values": False}


def timeseries(title: str, description: str, targets: Sequence[dict[str, Any]], unit: str, *,
               stack: bool = False, bars: bool = False, by_model: bool = False,
               overrides: Iterable[dict[str, Any]] = (), thresholds_: dict[str, Any] | None = None,
               thresholds_style: str = "off", min_: float | None = 0, max_: float | None = None,
               legend_calcs: Sequence[str] = ("mean", "max", "lastNotNull"), decimals: int | None = None,
               interval: str | None = None, max_data_points: int | None = None,
               bar_alignment: int = 0) -> dict[str, Any]:
    custom = {
        "axisBorderShow": False,
        "axisCenteredZero": False,
        "axisColorMode": "text",
        "axisLabel": "",
        "axisPlacement": "auto",
        "barAlignment": bar_alignment,
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 80 if bars else (25 if stack else 8),
        "gradientMode": "none",
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "insertNulls": False,
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "pointSize": 4,
        "scaleDistribution": {"type": "linear"},
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": thresholds_style},
    }
    all_overrides = (model_color_overrides() if by_model else []) + list(overrides)
    legend: dict[str, Any] = {"calcs": list(legend_calcs), "displayMode": "table" if legend_calcs else "list",
                              "placement": "bottom", "showLegend": True}
    if legend_calcs:
        legend.update(sortBy={"mean": "Mean", "max": "Max", "lastNotNull": "Last *", "sum": "Total"}[legend_calcs[0]],
                      sortDesc=True)
    return _panel("timeseries", title, description, targets, unit,
                  options={"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}},
                  custom=custom, overrides=all_overrides,
                  color={"mode": "palette-classic-by-name"} if by_model else None,
                  thresholds_=thresholds_, min_=min_, max_=max_, decimals=decimals,
                  interval=interval, max_data_points=max_data_points)


def stat(title: str, description: str, targets: Sequence[dict[str, Any]], unit: str, *,
         thresholds_: dict[str, Any] | None = None, color_mode: str = "value", sparkline: bool = False,
         decimals: int | None = None, overrides: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    options = {
        "colorMode": color_mode,
        "graphMode": "area" if sparkline else "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": _reduce(),
        "showPercentChange": False,
        "textMode": "auto",
        "wideLayout": True,
    }
    return _panel("stat", title, description, targets, unit, options=options,
                  color={"mode": "thresholds"}, thresholds_=thresholds_ or thresholds(("blue", None)),
                  decimals=decimals, overrides=overrides)


def gauge(title: str, description: str, targets: Sequence[dict[str, Any]], unit: str, *,
          thresholds_: dict[str, Any], min_: float, max_: float, decimals: int | None = None) -> dict[str, Any]:
    options = {
        "minVizHeight": 75,
        "minVizWidth": 75,
        "orientation": "auto",
        "reduceOptions": _reduce(),
        "showThresholdLabels": False,
        "showThresholdMarkers": True,
        "sizing": "auto",
    }
    return _panel("gauge", title, description, targets, unit, options=options, color={"mode": "thresholds"},
                  thresholds_=thresholds_, min_=min_, max_=max_, decimals=decimals)


def bargauge(title: str, description: str, targets: Sequence[dict[str, Any]], unit: str, *,
             thresholds_: dict[str, Any] | None = None, by_model: bool = False, min_: float | None = 0,
             max_: float | None = None, decimals: int | None = None) -> dict[str, Any]:
    options = {
        "displayMode": "gradient",
        "maxVizHeight": 300,
        "minVizHeight": 16,
        "minVizWidth": 8,
        "namePlacement": "left",
        "orientation": "horizontal",
        "reduceOptions": _reduce(),
        "showUnfilled": True,
        "sizing": "auto",
        "valueMode": "color",
    }
    if by_model:
        color, overrides = {"mode": "palette-classic-by-name"}, model_color_overrides()
    else:
        color, overrides = {"mode": "thresholds"}, []
    return _panel("bargauge", title, description, targets, unit, options=options, color=color,
                  overrides=overrides, thresholds_=thresholds_, min_=min_, max_=max_, decimals=decimals)


def table(title: str, description: str, targets: Sequence[dict[str, Any]], unit: str, *,
          columns: Mapping[str, str], column_units: Mapping[str, str] = {},
          column_thresholds: Mapping[str, dict[str, Any]] = {}, sort_by: str | None = None,
          exclude: Sequence[str] = ("Time",), links: Mapping[str, list[dict[str, Any]]] = {},
          column_decimals: Mapping[str, int] = {}) -> dict[str, Any]:
    """A table of instant queries joined on their labels (``merge``), columns named and ordered
    by ``organize``. ``columns`` maps a field name (a label, ``Value`` or ``Value #<refId>``)
    to its header, in display order; ``column_*`` are keyed by header."""
    overrides = []
    for header in columns.values():
        props: list[dict[str, Any]] = []
        if header in column_units:
            props.append({"id": "unit", "value": column_units[header]})
        if header in column_decimals:
            props.append({"id": "decimals", "value": column_decimals[header]})
        if header in column_thresholds:
            props += [{"id": "thresholds", "value": column_thresholds[header]},
                      {"id": "color", "value": {"mode": "thresholds"}},
                      {"id": "custom.cellOptions", "value": {"mode": "basic", "type": "color-background"}}]
        if header in links:
            props.append({"id": "links", "value": links[header]})
        if props:
            overrides.append({"matcher": {"id": "byName", "options": header}, "properties": props})
    transformations = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {
            "excludeByName": {name: True for name in exclude},
            "includeByName": {},
            "indexByName": {name: i for i, name in enumerate(columns)},
            "renameByName": {name: header for name, header in columns.items() if name != header},
        }},
    ]
    options: dict[str, Any] = {
        "cellHeight": "sm",
        "footer": {"countRows": False, "fields": [], "reducer": ["sum"], "show": False},
        "showHeader": True,
    }
    if sort_by:
        options["sortBy"] = [{"desc": True, "displayName": sort_by}]
    custom = {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": True, "inspect": False}
    return _panel("table", title, description, targets, unit, options=options, custom=custom,
                  overrides=overrides, color={"mode": "thresholds"}, transformations=transformations)


def heatmap(title: str, description: str, target: dict[str, Any], unit: str, *, y_unit: str) -> dict[str, Any]:
    options = {
        "calculate": False,
        "cellGap": 1,
        "cellValues": {"unit": unit},
        "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": False,
                  "scale": "exponential", "scheme": "Oranges", "steps": 64},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": True},
        "yAxis": {"axisPlacement": "left", "reverse": False, "unit": y_unit},
    }
    custom = {"hideFrom": {"legend": False, "tooltip": False, "viz": False},
              "scaleDistribution": {"type": "linear"}}
    return _panel("heatmap", title, description, [target], unit, options=options, custom=custom)


def barchart(title: str, description: str, target: dict[str, Any], unit: str, *, x_field: str,
             value_name: str, decimals: int | None = None) -> dict[str, Any]:
    options = {
        "barRadius": 0,
        "barWidth": 0.8,
        "fullHighlight": False,
        "groupWidth": 0.7,
        "legend": {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": False},
        "orientation": "horizontal",
        "showValue": "auto",
        "stacking": "none",
        "tooltip": {"mode": "single", "sort": "none"},
        "xField": x_field,
        "xTickLabelRotation": 0,
        "xTickLabelSpacing": 0,
    }
    custom = {"axisBorderShow": False, "axisCenteredZero": False, "axisColorMode": "text", "axisLabel": "",
              "axisPlacement": "auto", "fillOpacity": 80, "gradientMode": "none",
              "hideFrom": {"legend": False, "tooltip": False, "viz": False}, "lineWidth": 1,
              "scaleDistribution": {"type": "linear"}, "thresholdsStyle": {"mode": "off"}}
    transformations = [{"id": "organize", "options": {"excludeByName": {"Time": True}, "includeByName": {},
                                                      "indexByName": {x_field: 0, "Value": 1},
                                                      "renameByName": {"Value": value_name}}},
                       {"id": "sortBy", "options": {"fields": {}, "sort": [{"desc": True, "field": value_name}]}}]
    return _panel("barchart", title, description, [target], unit, options=options, custom=custom,
                  transformations=transformations, decimals=decimals, min_=0)


def no_value(text: str, panel: dict[str, Any]) -> dict[str, Any]:
    """Text shown instead of "No data" where no series is the normal, healthy state."""
    panel["fieldConfig"]["defaults"]["noValue"] = text
    return panel


def row(title: str) -> dict[str, Any]:
    return {"collapsed": False, "panels": [], "title": title, "type": "row"}


class Grid:
    """Places panels left to right in Grafana's 24 columns, wrapping to a new line when a panel
    does not fit; a line is as tall as its tallest panel. Assigns panel ids in reading order."""

    WIDTH = 24

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = self.line_height = 0

    def newline(self) -> None:
        self.y += self.line_height
        self.x = self.line_height = 0

    def add(self, panel: dict[str, Any], w: int, h: int) -> "Grid":
        if not 0 < w <= self.WIDTH:
            raise ValueError(f"panel width {w} out of 1..{self.WIDTH}: {panel['title']}")
        if self.x + w > self.WIDTH:
            self.newline()
        panel = dict(panel, gridPos={"h": h, "w": w, "x": self.x, "y": self.y}, id=len(self.panels) + 1)
        self.panels.append(panel)
        self.x += w
        self.line_height = max(self.line_height, h)
        return self

    def row(self, title: str) -> "Grid":
        self.newline()
        self.add(row(title), self.WIDTH, 1)
        self.newline()
        return self

    def line(self, h: int, *panels: tuple[dict[str, Any], int]) -> "Grid":
        """A full line of panels of height ``h``: ``(panel, width)`` pairs."""
        self.newline()
        for panel, w in panels:
            self.add(panel, w, h)
        self.newline()
        return self


# --------------------------------------------------------------------------------------------
# Dashboard model
# --------------------------------------------------------------------------------------------

def datasource_variable() -> dict[str, Any]:
    return {"current": {}, "hide": 0, "includeAll": False, "label": "Data source", "multi": False,
            "name": "datasource", "options": [], "query": "prometheus", "refresh": 1, "regex": "",
            "skipUrlSync": False, "type": "datasource"}


def query_variable(name: str, label: str, query: str, *, multi: bool = True, include_all: bool = True,
                   all_value: str | None = ".*", current: str | None = None) -> dict[str, Any]:
    """A ``label_values(...)`` variable, refreshed when the time range changes."""
    if current is None and include_all:
        cur: dict[str, Any] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    elif current is not None:
        cur = {"selected": True, "text": current, "value": current}
    else:
        cur = {}
    variable = {"current": cur, "datasource": DS, "hide": 0, "includeAll": include_all,
                "label": label, "multi": multi, "name": name, "options": [], "query": query, "refresh": 2,
                "regex": "", "skipUrlSync": False, "sort": 1, "type": "query"}
    if include_all and all_value is not None:
        variable["allValue"] = all_value
    return variable


def tenant_variable() -> dict[str, Any]:
    return query_variable("tenant", "Tenant", "label_values(llm_requests_total, tenant)")


def customer_variable() -> dict[str, Any]:
    return query_variable("customer", "Customer", f"label_values({sel('llm_requests_total', TENANT)}, customer)")


def model_variable(*matchers: str) -> dict[str, Any]:
    return query_variable("model", "Model", f"label_values({sel('llm_requests_total', TENANT, *matchers)}, model)")


def alerts_annotation() -> dict[str, Any]:
    return {"datasource": DS, "enable": True, "expr": 'ALERTS{alertstate="firing"}', "hide": False,
            "iconColor": "red", "name": "Firing alerts"}


def dashboard(uid: str, title: str, description: str, grid: Grid, variables: list[dict[str, Any]], *,
              time_from: str = "now-6h") -> dict[str, Any]:
    return {
        "annotations": {"list": [alerts_annotation()]},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [{"asDropdown": False, "icon": "external link", "includeVars": True, "keepTime": True,
                   "tags": [TAG], "targetBlank": False, "title": "LLM usage", "tooltip": "", "type": "dashboards",
                   "url": ""}],
        "liveNow": False,
        "panels": grid.panels,
        "refresh": "30s",
        "schemaVersion": schema.SCHEMA_VERSION,
        "tags": [TAG],
        "templating": {"list": [datasource_variable(), *variables]},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m", "1h"]},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --------------------------------------------------------------------------------------------
# Shared panels
# --------------------------------------------------------------------------------------------

class Limits:
    """Panel thresholds, read from prometheus/thresholds.yml (the alerts' single source)."""

    def __init__(self, t: Mapping[str, Any]) -> None:
        a = t["alerts"]
        self.budget_warn = float(a["LLMTenantBudgetNearlyExhausted"]["ratio"])
        self.budget_crit = float(a["LLMTenantBudgetExceeded"]["ratio"])
        self.error_warn = float(a["LLMTenantHighErrorRatio"]["warning"]["ratio"])
        self.error_crit = float(a["LLMTenantHighErrorRatio"]["critical"]["ratio"])
        self.p95_seconds = float(a["LLMModelHighLatency"]["p95_seconds"])
        self.ttft_p95_seconds = float(a["LLMModelHighTimeToFirstToken"]["p95_seconds"])
        self.duration_classes = latency_classes(dict(t), "LLMModelHighLatency")
        self.ttft_classes = latency_classes(dict(t), "LLMModelHighTimeToFirstToken")
        self.long_operations = list(a["LLMModelHighLatency"]["excluded_operations"])
        self.agent_failure = float(a["LLMAgentHighFailureRatio"]["ratio"])
        self.rejection = float(a["LLMExporterHighRejectionRatio"]["ratio"])
        self.silent_seconds = int(parse_duration(a["LLMTenantSilent"]["silent_for"]))
        match = re.search(r'job\s*=~?\s*"([^"]*)"', str(t.get("selector", "")))
        self.job = match.group(1) if match else "llm-usage-exporter"

    @property
    def not_long_ops(self) -> str:
        """Matcher that leaves out agent runs and tool calls, as the latency alert does."""
        return f'operation!~"{"|".join(self.long_operations)}"'

    def budget(self) -> dict[str, Any]:
        return thresholds(("green", None), ("orange", self.budget_warn), ("red", self.budget_crit))

    def errors(self) -> dict[str, Any]:
        return thresholds(("green", None), ("orange", self.error_warn), ("red", self.error_crit))

    def success(self) -> dict[str, Any]:
        return thresholds(("red", None), ("green", 1 - self.agent_failure))

    def latency(self, p95: float) -> dict[str, Any]:
        return thresholds(("green", None), ("red", p95))

    def class_overrides(self, classes: Sequence[LatencyClass]) -> list[dict[str, Any]]:
        """The model classes' own p95 thresholds on series named ``<model>`` or ``<model> <suffix>``.

        Grafana applies overrides in order, so the first class (which wins in the alert) comes
        last; classes that use the default threshold need none."""
        *named, default = classes
        return [{"matcher": {"id": "byRegexp", "options": f"/^(?:{'|'.join(cls.patterns)})( .*)?$/"},
                 "properties": [{"id": "thresholds", "value": self.latency(cls.p95_seconds)}]}
                for cls in reversed(named) if cls.p95_seconds != default.p95_seconds]

    def classes_text(self, classes: Sequence[LatencyClass]) -> str:
        """``reasoning models 90s, large models 60s``: for descriptions."""
        *named, default = classes
        return ", ".join(f"{cls.name} models {cls.p95_seconds:g}s" for cls in named
                         if cls.p95_seconds != default.p95_seconds)


def latency_quantiles_panel(title: str, description: str, matchers: Sequence[str], lim: Limits) -> dict[str, Any]:
    targets = [Q(quantile(q, "llm_request_duration_seconds", matchers), pct_label(q)) for q in (0.5, 0.95, 0.99)]
    return timeseries(title, description, targets, "s",
                      overrides=[color_override("/^p50$/", "green"), color_override("/^p95$/", "orange"),
                                 color_override("/^p99$/", "red")],
                      thresholds_=lim.latency(lim.p95_seconds), thresholds_style="dashed")


def customers_table(title: str, description: str, matchers: Sequence[str], lim: Limits, *,
                    top: int | None) -> dict[str, Any]:
    keys = ("tenant", "customer")
    spend_all = sum_increase("llm_cost_usd_total", matchers, keys)
    spend = f"topk({top}, {spend_all})" if top else spend_all

    def only_listed(expr: str) -> str:
        return f"{expr} and on (tenant, customer) {spend}" if top else expr

    tokens = sum_increase("llm_tokens_total", matchers, keys)
    requests = sum_increase("llm_requests_total", matchers, keys)
    errors = sum_increase("llm_requests_total", [*matchers, 'status="error"'], keys)
    targets = [
        Q(spend, instant=True, fmt="table"),
        Q(only_listed(tokens), instant=True, fmt="table"),
        Q(only_listed(requests), instant=True, fmt="table"),
        Q(only_listed(ratio_or_zero(errors, requests)), instant=True, fmt="table"),
        Q(only_listed(ratio(f"1000 * {spend_all}", tokens)), instant=True, fmt="table"),
    ]
    drill = [{"targetBlank": False, "title": "Drill down into ${__data.fields.customer}",
              "url": "/d/llm-tenant?var-tenant=${__data.fields.tenant:percentencode}"
                     "&var-customer=${__data.fields.customer:percentencode}"
                     "&${datasource:queryparam}&${__url_time_range}"}]
    return table(
        title, description, targets, "short",
        columns={"tenant": "Tenant", "customer": "Customer", "Value #A": "Spend", "Value #B": "Tokens",
                 "Value #C": "Requests", "Value #D": "Error ratio", "Value #E": "USD per 1k tokens"},
        column_units={"Spend": "currencyUSD", "Tokens": "short", "Requests": "short", "Error ratio": "percentunit",
                      "USD per 1k tokens": "currencyUSD"},
        column_decimals={"USD per 1k tokens": 4, "Error ratio": 2},
        column_thresholds={"Error ratio": lim.errors()},
        sort_by="Spend", links={"Customer": drill})


# --------------------------------------------------------------------------------------------
# Dashboards
# --------------------------------------------------------------------------------------------

CACHE_SAVINGS_HELP = ("Prompt caching in USD at the prices each request was billed at: "
                      "`llm_cache_savings_usd_total` = cache-read tokens x (input price - cache-read price); "
                      "`llm_cache_write_premium_usd_total` = cache-write tokens x (cache-write price - input price).")


def net_cache_savings(matchers: Sequence[str], by: Sequence[str] = (), window: str = RANGE) -> str:
    """Reads saved minus writes' extra cost; either series may be absent for a model (OpenAI writes
    cost nothing extra; a model may write without reading yet), so each side falls back to 0."""
    saved = sum_increase("llm_cache_savings_usd_total", matchers, by, window)
    extra = sum_increase("llm_cache_write_premium_usd_total", matchers, by, window)
    return f"({saved} or {extra} * 0) - ({extra} or {saved} * 0)"


def overview(lim: Limits) -> dict[str, Any]:
    f = (TENANT, MODEL)
    g = Grid()
    g.row("Spend and budget")
    # tenant:llm_budget_limit_usd:max, not the raw gauge: every exporter replica exposes the budget.
    budget_ratio = (f"sum(tenant:llm_cost_usd:increase1d{{{TENANT}}} and on (tenant) "
                    f"(tenant:llm_budget_limit_usd:max{{{TENANT}}} > 0)) / "
                    f"sum(tenant:llm_budget_limit_usd:max{{{TENANT}}} > 0)")
    g.line(
        6,
        (no_value(NO_BUDGET, gauge("Spend in the last 24 h vs daily budget",
               "Spend over the last 24 hours (rolling) as a share of the daily budget, summed over the selected "
               "tenants that have a budget configured (`llm_budget_limit_usd`, max over exporter replicas). Orange and red at the "
               "thresholds of the LLMTenantBudgetNearlyExhausted and LLMTenantBudgetExceeded alerts. "
               "Comes from a recording rule, so it ignores the model filter.",
               [Q(budget_ratio, "budget used", instant=True)], "percentunit",
               thresholds_=lim.budget(), min_=0, max_=max(1.2, lim.budget_crit * 1.2))), 6),
        (stat("Spend in the last 24 h and daily budget",
              "Left: spend over the last 24 hours (rolling) of the selected tenants, from the recording rule "
              "`tenant:llm_cost_usd:increase1d`. Right: the sum of their daily budgets. Ignores the model filter.",
              [Q(f"sum(tenant:llm_cost_usd:increase1d{{{TENANT}}})", "spend, last 24 h", instant=True),
               Q(f"sum(tenant:llm_budget_limit_usd:max{{{TENANT}}})", "daily budget", instant=True)],
              "currencyUSD", decimals=2), 6),
        (stat("Spend (selected range)",
              "Spend of the selected tenants and models over the whole time range picked at the top right.",
              [Q(sum_increase("llm_cost_usd_total", f), "spend", instant=True)], "currencyUSD", decimals=2), 3),
        (stat("Requests (selected range)",
              "Requests of every operation (chat, embeddings, agent runs, tool calls) in the selected time range.",
              [Q(sum_increase("llm_requests_total", f), "requests", instant=True)], "short"), 3),
        (stat("Error ratio (selected range)",
              "Share of requests with status=\"error\" in the selected time range. Orange and red at the "
              "warning and critical thresholds of the LLMTenantHighErrorRatio alert.",
              [Q(ratio_or_zero(sum_increase("llm_requests_total", [*f, 'status="error"']),
                               sum_increase("llm_requests_total", f)), "error ratio", instant=True)],
              "percentunit", thresholds_=lim.errors(), decimals=2), 3),
        (stat("Tokens in + out (selected range)",
              "Input plus output tokens in the selected time range (cached and reasoning tokens are parts of "
              "these, not extra).",
              [Q(sum_increase("llm_tokens_total", f), "tokens", instant=True)], "short"), 3),
    )
    g.row("Cost")
    g.line(
        9,
        (timeseries("Spend per hour by model",
                    "Spend in each clock hour, stacked by model: `increase(...[1h])` evaluated once per hour, "
                    "each bar drawn over the hour it covers (the hover time is the end of that hour). "
                    "The current, unfinished hour appears when it ends.",
                    [Q(sum_increase("llm_cost_usd_total", f, ["model"], "1h"), "{{model}}", interval="1h")],
                    "currencyUSD", stack=True, bars=True, by_model=True, interval="1h", max_data_points=1000,
                    bar_alignment=-1, legend_calcs=("sum", "max")), 12),
        (timeseries("Cost rate by model (USD per hour)",
                    "How fast money is being spent right now, stacked by model. The per-second rate of "
                    "`llm_cost_usd_total` is multiplied by 3600 to read as USD per hour.",
                    [Q(per_hour(sum_rate("llm_cost_usd_total", f, ["model"])), "{{model}}")],
                    "currencyUSD", stack=True, by_model=True), 12),
    )
    g.line(
        7,
        (stat("Prompt caching (selected range)",
              CACHE_SAVINGS_HELP + " Left to right: what cache reads saved, what cache writes cost extra, and "
              "the net saving (the first minus the second).",
              [Q(f'{sum_increase("llm_cache_savings_usd_total", f)} or vector(0)', "reads saved", instant=True),
               Q(f'{sum_increase("llm_cache_write_premium_usd_total", f)} or vector(0)', "writes cost extra",
                 instant=True),
               Q(net_cache_savings(f), "net saving", instant=True)], "currencyUSD", decimals=2), 8),
        (timeseries("Net cache saving per hour by model",
                    CACHE_SAVINGS_HELP + " Per clock hour and model: reads saved minus writes' extra cost "
                    "(below zero: cache writes are not read back often enough to pay for themselves).",
                    [Q(net_cache_savings(f, ["model"], "1h"), "{{model}}", interval="1h")],
                    "currencyUSD", by_model=True, interval="1h", max_data_points=1000), 16),
    )
    g.row("Tokens and requests")
    g.line(
        9,
        (timeseries("Tokens per second: input, output, cached, reasoning",
                    "Input and output tokens per second, plus their parts: cache_read and cache_write are parts "
                    "of input, reasoning is part of output (dashed lines; do not add them up).",
                    [Q(sum_rate("llm_tokens_total", f, ["token_type"]), "{{token_type}}"),
                     Q(sum_rate("llm_token_details_total", f, ["token_type"]), "{{token_type}}")],
                    "count:tok/s",
                    overrides=[line_style_override("/^(cache_read|cache_write|reasoning)$/", "dash")]), 12),
        (timeseries("Requests per second by operation, and error ratio",
                    "Requests per second by operation (left axis) and the share of them that failed "
                    "(status=\"error\", right axis, red). The error ratio is 0 while no error has been seen.",
                    [Q(sum_rate("llm_requests_total", f, ["operation"]), "{{operation}}"),
                     Q(ratio_or_zero(sum_rate("llm_requests_total", [*f, 'status="error"']),
                                     sum_rate("llm_requests_total", f)), "error ratio")],
                    "reqps", overrides=[right_axis_override("error ratio", "percentunit", "red")]), 12),
    )
    g.row("Latency")
    lat = (TENANT, MODEL, lim.not_long_ops)
    g.line(
        9,
        (latency_quantiles_panel(
            "Request duration p50 / p95 / p99",
            "End-to-end request duration percentiles over all selected tenants and models, from the histogram "
            f"buckets. Agent runs and tool calls ({', '.join(lim.long_operations)}) are left out, as in the "
            "LLMModelHighLatency alert; the dashed line is that alert's p95 threshold.",
            lat, lim), 12),
        (timeseries("Request duration p95 by model",
                    "95th percentile of end-to-end request duration per model (agent runs and tool calls left "
                    "out). The dashed lines are the p95 thresholds of the LLMModelHighLatency alert: "
                    f"{lim.p95_seconds:g}s, and per model class ({lim.classes_text(lim.duration_classes)}; "
                    "model_classes in prometheus/thresholds.yml).",
                    [Q(quantile(0.95, "llm_request_duration_seconds", lat, ["model"]), "{{model}}")],
                    "s", by_model=True, thresholds_=lim.latency(lim.p95_seconds), thresholds_style="dashed",
                    overrides=lim.class_overrides(lim.duration_classes)), 12),
    )
    g.row("Customers")
    g.line(
        10,
        (customers_table(
            "Top 50 customers by spend (selected range)",
            "The 50 customers (of the selected tenants and models) that spent most in the selected time range, "
            "with their tokens (input + output), requests, error ratio and cost per 1k tokens (spend x 1000 / "
            "tokens). Click a column header to sort; click a customer to open the drill-down dashboard.",
            f, lim, top=50), 24),
    )
    return dashboard("llm-overview", "LLM usage overview",
                     "Spend against budget, cost by model, tokens, traffic, errors, latency and the top customers.",
                     g, [tenant_variable(), model_variable()], time_from="now-24h")


def tenant(lim: Limits) -> dict[str, Any]:
    f = (TENANT, CUSTOMER, MODEL)
    g = Grid()
    g.row("Budget and spend")
    g.line(
        6,
        (no_value(NO_BUDGET, bargauge("Budget used in the last 24 h, per tenant",
                  "Spend over the last 24 hours (rolling) as a share of each tenant's daily budget, from the "
                  "recording rule `tenant:llm_budget_used_ratio:increase1d` (tenants without a budget are not "
                  "listed). Orange and red at the LLMTenantBudgetNearlyExhausted and LLMTenantBudgetExceeded "
                  "thresholds. Per tenant, so the customer and model filters do not apply.",
                  [Q(sort_desc(f"tenant:llm_budget_used_ratio:increase1d{{{TENANT}}}"), "{{tenant}}",
                     instant=True)],
                  "percentunit", thresholds_=lim.budget(), min_=0, max_=max(1.0, lim.budget_crit))), 8),
        (stat("Spend in the last 24 h",
              "Spend of the selected customers over the last 24 hours (rolling), from the recording rule "
              "`tenant_customer:llm_cost_usd:increase1d` (it has no model label: ignores the model filter).",
              [Q(f"sum(tenant_customer:llm_cost_usd:increase1d{{{TENANT}, {CUSTOMER}}})", "spend, last 24 h",
                 instant=True)], "currencyUSD", decimals=2), 4),
        (stat("Spend (selected range)",
              "Spend of the selected tenants, customers and models over the selected time range.",
              [Q(sum_increase("llm_cost_usd_total", f), "spend", instant=True)], "currencyUSD", decimals=2), 4),
        (stat("Cost per 1k tokens (selected range)",
              "Spend divided by input + output tokens, times 1000 to read as USD per 1000 tokens.",
              [Q(ratio(f"1000 * {sum_increase('llm_cost_usd_total', f)}", sum_increase("llm_tokens_total", f)),
                 "USD per 1k tokens", instant=True)], "currencyUSD", decimals=4), 4),
        (stat("Error ratio (selected range)",
              "Share of the selected customers' requests with status=\"error\". Orange and red at the "
              "LLMTenantHighErrorRatio thresholds.",
              [Q(ratio_or_zero(sum_increase("llm_requests_total", [*f, 'status="error"']),
                               sum_increase("llm_requests_total", f)), "error ratio", instant=True)],
              "percentunit", thresholds_=lim.errors(), decimals=2), 4),
    )
    g.row("Spend over time")
    g.line(
        9,
        (timeseries("Daily spend by model",
                    "Spend per day, stacked by model: `increase(...[1d])` evaluated once per day, so days run "
                    "from midnight to midnight UTC; each bar is drawn over the day it covers (the hover time is "
                    "the end of that day). Today's spend so far is in the \"Spend in the last 24 h\" stat.",
                    [Q(sum_increase("llm_cost_usd_total", f, ["model"], "1d"), "{{model}}", interval="1d")],
                    "currencyUSD", stack=True, bars=True, by_model=True, interval="1d", max_data_points=400,
                    bar_alignment=-1, legend_calcs=("sum", "max")), 8),
        (no_value(NO_BUDGET, timeseries(
            "Budget burn per tenant: share of the daily budget used in the last 24 h",
            "Rolling 24-hour spend as a share of each tenant's daily budget, over time, from the recording rule "
            "`tenant:llm_budget_used_ratio:increase1d`: a line climbing towards 100 % means the tenant will "
            "run out. Dashed lines: LLMTenantBudgetNearlyExhausted and LLMTenantBudgetExceeded thresholds. "
            "Per tenant, so the customer and model filters do not apply.",
            [Q(f"tenant:llm_budget_used_ratio:increase1d{{{TENANT}}}", "{{tenant}}")], "percentunit",
            thresholds_=lim.budget(), thresholds_style="dashed", legend_calcs=("max", "lastNotNull"))), 8),
        (timeseries("Spend rate of the top 10 customers (USD per hour)",
                    "The 10 customers spending fastest at each point in time. The per-second rate of "
                    "`llm_cost_usd_total` is multiplied by 3600 to read as USD per hour.",
                    [Q(per_hour(f"topk(10, {sum_rate('llm_cost_usd_total', f, ['tenant', 'customer'])})"),
                       "{{tenant}} / {{customer}}")], "currencyUSD"), 8),
    )
    g.row("Efficiency and traffic")
    g.line(
        9,
        (timeseries("Cost per 1k tokens by model",
                    "Spend divided by input + output tokens, per model, times 1000 to read as USD per 1000 "
                    "tokens. Prompt caching and cheaper models pull it down.",
                    [Q(ratio(f"1000 * {sum_rate('llm_cost_usd_total', f, ['model'])}",
                             sum_rate("llm_tokens_total", f, ["model"])), "{{model}}")],
                    "currencyUSD", by_model=True, decimals=4), 12),
        (timeseries("Input and output tokens per second",
                    "Input and output tokens per second of the selected customers (cached and reasoning tokens "
                    "are counted without a customer label: see the overview).",
                    [Q(sum_rate("llm_tokens_total", f, ["token_type"]), "{{token_type}}")], "count:tok/s",
                    stack=True), 12),
    )
    g.line(
        9,
        (timeseries("Requests per second by model",
                    "Requests per second of the selected customers, stacked by model (all operations).",
                    [Q(sum_rate("llm_requests_total", f, ["model"]), "{{model}}")], "reqps", stack=True,
                    by_model=True), 8),
        (timeseries("Error ratio by model",
                    "Share of the selected customers' requests with status=\"error\", per model; 0 while a model "
                    "has had no error. Dashed lines: LLMTenantHighErrorRatio warning and critical thresholds.",
                    [Q(ratio_or_zero(sum_rate("llm_requests_total", [*f, 'status="error"'], ["model"]),
                                     sum_rate("llm_requests_total", f, ["model"])), "{{model}}")],
                    "percentunit", by_model=True, thresholds_=lim.errors(), thresholds_style="dashed"), 8),
        (latency_quantiles_panel(
            "Request duration p50 / p95 / p99 (all customers of the tenant)",
            "End-to-end request duration percentiles of the selected tenants and models. The duration "
            "histogram has no customer label, so this covers all their customers. Agent runs and tool calls "
            "are left out; the dashed line is the LLMModelHighLatency p95 threshold.",
            (TENANT, MODEL, lim.not_long_ops), lim), 8),
    )
    g.row("Customers")
    g.line(
        10,
        (customers_table(
            "Customers (selected range)",
            "Every selected customer with its spend, tokens (input + output), requests, error ratio and cost "
            "per 1k tokens (spend x 1000 / tokens) over the selected time range. Click a header to sort.",
            f, lim, top=None), 24),
    )
    return dashboard("llm-tenant", "LLM tenant / customer drill-down",
                     "One tenant's (or customer's) budget, daily spend, cost per token, traffic and errors.",
                     g, [tenant_variable(), customer_variable(), model_variable()], time_from="now-7d")


def sort_desc(expr: str) -> str:
    return f"sort_desc({expr})"


def models(lim: Limits) -> dict[str, Any]:
    op = 'operation=~"$operation"'
    lat = (TENANT, MODEL, op, lim.not_long_ops)
    f = (TENANT, MODEL)
    g = Grid()
    g.row("Per-model summary")
    by_model = ["model"]
    qs = (0.5, 0.95, 0.99)
    summary = [
        Q(sum_increase("llm_requests_total", (*f, op), by_model), instant=True, fmt="table"),
        Q(ratio_or_zero(sum_increase("llm_requests_total", (*f, op, 'status="error"'), by_model),
                        sum_increase("llm_requests_total", (*f, op), by_model)), instant=True, fmt="table"),
        *[Q(quantile(q, "llm_request_duration_seconds", lat, by_model, RANGE), instant=True, fmt="table")
          for q in qs],
        Q(quantile(0.95, "llm_time_to_first_token_seconds", f, by_model, RANGE), instant=True, fmt="table"),
        Q(sum_increase("llm_cost_usd_total", f, by_model), instant=True, fmt="table"),
        Q(ratio(f"1000 * {sum_increase('llm_cost_usd_total', f, by_model)}",
                sum_increase("llm_tokens_total", f, by_model)), instant=True, fmt="table"),
        Q(ratio_or_zero(sum_increase("llm_token_details_total", (*f, 'token_type="cache_read"'), by_model),
                        sum_increase("llm_tokens_total", (*f, 'token_type="input"'), by_model)),
          instant=True, fmt="table"),
        Q(net_cache_savings(f, by_model), instant=True, fmt="table"),
    ]
    headers = ["Requests", "Error ratio", "p50", "p95", "p99", "TTFT p95", "Spend", "USD per 1k tokens",
               "Cache hit ratio", "Net cache saving"]
    g.line(
        9,
        (table("Per-model summary (selected range)",
               "One row per model over the selected time range: requests, error ratio, request duration "
               "p50/p95/p99 (agent runs and tool calls left out), time-to-first-token p95 (streamed responses), "
               "spend, cost per 1k tokens (spend x 1000 / input + output tokens) and prompt-cache hit ratio "
               "(cache_read tokens / input tokens), and the net cache saving (cache reads' saving minus cache "
               "writes' extra cost, `llm_cache_savings_usd_total` - `llm_cache_write_premium_usd_total`). "
               "The operation filter applies to requests, errors and "
               f"durations only. p95 and TTFT p95 turn red at the default thresholds ({lim.p95_seconds:g}s, "
               f"{lim.ttft_p95_seconds:g}s); models of a class have their own (duration: "
               f"{lim.classes_text(lim.duration_classes)}; TTFT: {lim.classes_text(lim.ttft_classes)}), drawn on "
               "the latency panels below.",
               summary, "short",
               columns={"model": "Model", **{f"Value #{chr(65 + i)}": h for i, h in enumerate(headers)}},
               column_units={"Requests": "short", "Error ratio": "percentunit", "p50": "s", "p95": "s",
                             "p99": "s", "TTFT p95": "s", "Spend": "currencyUSD", "USD per 1k tokens": "currencyUSD",
                             "Cache hit ratio": "percentunit", "Net cache saving": "currencyUSD"},
               column_decimals={"USD per 1k tokens": 4, "Error ratio": 2},
               column_thresholds={"Error ratio": lim.errors(), "p95": lim.latency(lim.p95_seconds),
                                  "TTFT p95": lim.latency(lim.ttft_p95_seconds)},
               sort_by="Spend"), 24),
    )
    g.row("Latency")
    g.line(
        10,
        (timeseries("Request duration p50 / p95 / p99 by model",
                    "End-to-end request duration percentiles per model: p50 dotted, p95 solid, p99 dashed. "
                    "Agent runs and tool calls are left out, as in the LLMModelHighLatency alert, whose p95 "
                    f"thresholds are the dashed red lines ({lim.p95_seconds:g}s; "
                    f"{lim.classes_text(lim.duration_classes)}).",
                    [Q(quantile(q, "llm_request_duration_seconds", lat, by_model), f"{{{{model}}}} {pct_label(q)}")
                     for q in qs],
                    "s", by_model=True, overrides=[*QUANTILE_STYLES, *lim.class_overrides(lim.duration_classes)],
                    thresholds_=lim.latency(lim.p95_seconds),
                    thresholds_style="dashed"), 12),
        (heatmap("Request duration distribution",
                 "How request durations are spread over the histogram buckets, all selected models together "
                 "(agent runs and tool calls left out). Brighter cells: more requests per second in that "
                 "bucket.",
                 Q(agg("sum", rate(sel("llm_request_duration_seconds_bucket", *lat), RI), "le"), "{{le}}",
                   fmt="heatmap"), "reqps", y_unit="s"), 12),
    )
    g.line(
        9,
        (timeseries("Time to first token p50 / p95 by model",
                    "Time until the first token of a streamed response, per model (only events that carry "
                    "ttft_ms). The dashed red lines are the LLMModelHighTimeToFirstToken p95 thresholds "
                    f"({lim.ttft_p95_seconds:g}s; {lim.classes_text(lim.ttft_classes)}).",
                    [Q(quantile(q, "llm_time_to_first_token_seconds", f, by_model), f"{{{{model}}}} {pct_label(q)}")
                     for q in (0.5, 0.95)],
                    "s", by_model=True, overrides=[*QUANTILE_STYLES, *lim.class_overrides(lim.ttft_classes)],
                    thresholds_=lim.latency(lim.ttft_p95_seconds),
                    thresholds_style="dashed"), 12),
        (timeseries("Time per output token p50 / p95 by model",
                    "Generation speed after the first token: (duration - ttft) / (output tokens - 1), per model. "
                    "Lower is faster.",
                    [Q(quantile(q, "llm_time_per_output_token_seconds", f, by_model),
                       f"{{{{model}}}} {pct_label(q)}") for q in (0.5, 0.95)],
                    "s", by_model=True, overrides=QUANTILE_STYLES), 12),
    )
    g.row("Errors and caching")
    g.line(
        9,
        (no_value("No errors", timeseries("Errors per second by error type",
                    "Failed requests per second, stacked by error type (timeout, rate_limited, server_error, "
                    "invalid_request, content_filter, auth; anything else is _OTHER).",
                    [Q(sum_rate("llm_request_errors_total", (*f, op), ["error_type"]), "{{error_type}}")],
                    "reqps", stack=True)), 8),
        (timeseries("Error ratio by model",
                    "Share of requests with status=\"error\" per model; 0 while a model has had no error. "
                    "Dashed lines: LLMModelHighErrorRatio warning and critical thresholds.",
                    [Q(ratio_or_zero(sum_rate("llm_requests_total", (*f, op, 'status="error"'), by_model),
                                     sum_rate("llm_requests_total", (*f, op), by_model)), "{{model}}")],
                    "percentunit", by_model=True, thresholds_=lim.errors(), thresholds_style="dashed"), 8),
        (timeseries("Prompt-cache hit ratio by model",
                    "Share of input tokens read from the provider's prompt cache (cache_read tokens / input "
                    "tokens), per model. Cached input is billed at the cheaper cache_read price.",
                    [Q(ratio_or_zero(sum_rate("llm_token_details_total", (*f, 'token_type="cache_read"'), by_model),
                                     sum_rate("llm_tokens_total", (*f, 'token_type="input"'), by_model)),
                       "{{model}}")],
                    "percentunit", by_model=True, max_=1), 8),
    )
    g.row("Cost comparison")
    g.line(
        9,
        (bargauge("Spend by model (selected range)",
                  "Spend per model over the selected time range, largest first.",
                  [Q(sort_desc(sum_increase("llm_cost_usd_total", f, by_model)), "{{model}}", instant=True)],
                  "currencyUSD", by_model=True, decimals=2), 8),
        (barchart("Cost per 1k tokens by model (selected range)",
                  "Spend divided by input + output tokens per model over the selected time range, times 1000 to "
                  "read as USD per 1000 tokens: what a model really costs with your prompt mix and cache hits.",
                  Q(ratio(f"1000 * {sum_increase('llm_cost_usd_total', f, by_model)}",
                          sum_increase("llm_tokens_total", f, by_model)), instant=True, fmt="table"),
                  "currencyUSD", x_field="model", value_name="USD per 1k tokens", decimals=4), 8),
        (timeseries("Requests per second by model",
                    "Requests per second per model (operation filter applies).",
                    [Q(sum_rate("llm_requests_total", (*f, op), by_model), "{{model}}")], "reqps",
                    by_model=True, stack=True), 8),
    )
    operation = query_variable(
        "operation", "Operation",
        f"label_values({sel('llm_requests_total', TENANT, lim.not_long_ops)}, operation)")
    return dashboard("llm-models", "LLM models & latency",
                     "Per-model latency (duration, TTFT, time per output token), errors, caching and cost.",
                     g, [tenant_variable(), model_variable(), operation])


def agents(lim: Limits) -> dict[str, Any]:
    run = 'operation="agent_run"'
    status = 'status=~"$status"'
    f = (TENANT, MODEL)
    runs = (run, *f)
    g = Grid()
    g.row("Agent runs in the selected range")
    all_runs = sum_increase("llm_requests_total", runs)
    ok_runs = sum_increase("llm_requests_total", (*runs, 'status="ok"'))
    failed_runs = sum_increase("llm_requests_total", (*runs, 'status="error"'))
    g.line(
        5,
        (stat("Agent runs",
              "Agent runs (operation=\"agent_run\") in the selected time range, of the selected status.",
              [Q(sum_increase("llm_requests_total", (*runs, status)), "runs", instant=True)], "short"), 4),
        (stat("Success rate",
              "Share of agent runs that ended with status=\"ok\" (the status filter does not apply). Red below "
              "1 - the LLMAgentHighFailureRatio threshold.",
              [Q(ratio_or_zero(ok_runs, all_runs), "success rate", instant=True)], "percentunit",
              thresholds_=lim.success(), decimals=1, color_mode="background"), 4),
        (stat("Failed runs",
              "Agent runs that ended with status=\"error\"; red as soon as there is one.",
              [Q(f"{failed_runs} or 0 * {all_runs}", "failed runs", instant=True)], "short",
              thresholds_=thresholds(("green", None), ("red", 1)), color_mode="background"), 4),
        (stat("Agent spend",
              "Cost of the selected agent runs in the selected time range.",
              [Q(sum_increase("llm_agent_run_cost_usd_total", (*f, status)), "spend", instant=True)],
              "currencyUSD", decimals=2), 4),
        (stat("Cost per run",
              "Agent spend divided by the number of runs (status filter applies to both).",
              [Q(ratio(sum_increase("llm_agent_run_cost_usd_total", (*f, status)),
                       sum_increase("llm_requests_total", (*runs, status))), "USD per run", instant=True)],
              "currencyUSD", decimals=4), 4),
        (stat("Cost per successful run",
              "All agent spend, failed runs included, divided by the runs that succeeded: what one success "
              "really costs (the status filter does not apply).",
              [Q(ratio(sum_increase("llm_agent_run_cost_usd_total", f), ok_runs), "USD per successful run",
                 instant=True)], "currencyUSD", decimals=4), 4),
    )
    g.row("Last hour, per tenant (recording rules)")
    g.line(
        6,
        (bargauge("Agent success rate in the last hour, per tenant",
                  "Share of agent runs that succeeded over the last hour, per tenant, from the recording rule "
                  "`tenant:llm_agent_success_ratio:rate1h` (ignores the model and status filters). Red below "
                  "1 - the LLMAgentHighFailureRatio threshold.",
                  [Q(f"sort(tenant:llm_agent_success_ratio:rate1h{{{TENANT}}})", "{{tenant}}", instant=True)],
                  "percentunit", thresholds_=lim.success(), max_=1, decimals=1), 12),
        (bargauge("Cost per successful agent run in the last hour, per tenant",
                  "All agent spend divided by successful runs over the last hour, per tenant, from the recording "
                  "rule `tenant:llm_agent_cost_per_successful_run_usd:rate1h` (ignores the model and status "
                  "filters).",
                  [Q(sort_desc(f"tenant:llm_agent_cost_per_successful_run_usd:rate1h{{{TENANT}}}"), "{{tenant}}",
                     instant=True)],
                  "currencyUSD", thresholds_=thresholds(("blue", None)), decimals=4), 12),
    )
    g.row("Over time")
    g.line(
        9,
        (timeseries("Agent runs per second by status",
                    "Agent runs per second, stacked by outcome; failed runs (status=\"error\") in red.",
                    [Q(sum_rate("llm_requests_total", (*runs, status), ["status"]), "{{status}}")], "count:runs/s",
                    stack=True, overrides=[color_override("/^ok$/", "green"), color_override("/^error$/", "red")]),
         12),
        (timeseries("Agent success rate",
                    "Share of agent runs that ended with status=\"ok\". The red area is below 1 - the "
                    "LLMAgentHighFailureRatio threshold.",
                    [Q(ratio_or_zero(sum_rate("llm_requests_total", (*runs, 'status="ok"')),
                                     sum_rate("llm_requests_total", runs)), "success rate")],
                    "percentunit", max_=1, thresholds_=lim.success(), thresholds_style="line+area",
                    overrides=[color_override("/^success rate$/", "green")]), 12),
    )
    g.line(
        9,
        (timeseries("Agent run duration p50 / p95 / p99",
                    "Wall-clock duration of agent runs (operation=\"agent_run\"), from the duration histogram; "
                    "it has no status label, so the status filter does not apply.",
                    [Q(quantile(q, "llm_request_duration_seconds", runs), pct_label(q)) for q in (0.5, 0.95, 0.99)],
                    "s", overrides=[color_override("/^p50$/", "green"), color_override("/^p95$/", "orange"),
                                    color_override("/^p99$/", "red")]), 12),
        (timeseries("Cost per run and per successful run",
                    "Agent spend per run (status filter applies) and all agent spend per successful run, over "
                    "each rate interval.",
                    [Q(ratio(sum_rate("llm_agent_run_cost_usd_total", (*f, status)),
                             sum_rate("llm_requests_total", (*runs, status))), "per run"),
                     Q(ratio(sum_rate("llm_agent_run_cost_usd_total", f),
                             sum_rate("llm_requests_total", (*runs, 'status="ok"'))), "per successful run")],
                    "currencyUSD", decimals=4), 12),
    )
    g.line(
        9,
        (timeseries("LLM calls and tool calls per run",
                    "Average number of LLM calls and of tool calls made inside one agent run: calls per second "
                    "divided by runs per second. These counters have no status label, so the status filter "
                    "does not apply.",
                    [Q(f"{sum_rate('llm_agent_calls_total', f, ['call_type'])} / ignoring (call_type) group_left () "
                       f"({sum_rate('llm_requests_total', runs)} > 0)", "{{call_type}} calls per run")],
                    "short", decimals=1), 12),
        (timeseries("Agent spend rate by model (USD per hour)",
                    "How fast agent runs spend money, stacked by model. The per-second rate is multiplied by "
                    "3600 to read as USD per hour.",
                    [Q(per_hour(sum_rate("llm_agent_run_cost_usd_total", (*f, status), ["model"])), "{{model}}")],
                    "currencyUSD", stack=True, by_model=True), 12),
    )
    g.row("Failures")
    failures_by = ["tenant", "model"]
    runs_by = sum_increase("llm_requests_total", runs, failures_by)
    failed_by = sum_increase("llm_requests_total", (*runs, 'status="error"'), failures_by)
    g.line(
        9,
        (no_value("No failed runs", timeseries("Failed agent runs per second by error type",
                    "Failed agent runs per second, stacked by error type.",
                    [Q(sum_rate("llm_request_errors_total", runs, ["error_type"]), "{{error_type}}")],
                    "count:runs/s", stack=True)), 12),
        (table("Failed agent runs by tenant and model (selected range)",
               "Agent runs per tenant and model in the selected range, with the failed ones and their share "
               "(red at the LLMAgentHighFailureRatio threshold) and the spend per run.",
               [Q(runs_by, instant=True, fmt="table"),
                Q(f"{failed_by} or 0 * {runs_by}", instant=True, fmt="table"),
                Q(ratio_or_zero(failed_by, runs_by), instant=True, fmt="table"),
                Q(ratio(sum_increase("llm_agent_run_cost_usd_total", f, failures_by), runs_by),
                  instant=True, fmt="table")],
               "short",
               columns={"tenant": "Tenant", "model": "Model", "Value #A": "Runs", "Value #B": "Failed runs",
                        "Value #C": "Failure ratio", "Value #D": "USD per run"},
               column_units={"Runs": "short", "Failed runs": "short", "Failure ratio": "percentunit",
                             "USD per run": "currencyUSD"},
               column_decimals={"USD per run": 4, "Failure ratio": 1},
               column_thresholds={"Failed runs": thresholds(("transparent", None), ("red", 1)),
                                  "Failure ratio": thresholds(("green", None), ("red", lim.agent_failure))},
               sort_by="Failure ratio"), 12),
    )
    status_var = query_variable("status", "Status",
                                f"label_values({sel('llm_requests_total', TENANT, run)}, status)")
    return dashboard("llm-agents", "LLM agent runs",
                     "Agent runs: volume, success rate, duration, cost per run and per successful run, calls per "
                     "run and failures.",
                     g, [tenant_variable(), model_variable(run), status_var])


def exporter_health(lim: Limits) -> dict[str, Any]:
    job = 'job=~"$job"'
    g = Grid()
    g.row("Status")
    events = sum_rate("llm_exporter_events_total", [job])
    g.line(
        5,
        (stat("Exporter targets up",
              "Scrape targets of the selected job that answered the last scrape (`up` = 1), and those that did "
              "not (red).",
              [Q(f"sum(up{{{job}}})", "up", instant=True),
               Q(f"count(up{{{job}}} == 0) or 0 * count(up{{{job}}})", "down", instant=True)], "short",
              thresholds_=thresholds(("green", None)),
              overrides=[{"matcher": {"id": "byName", "options": "down"},
                          "properties": [{"id": "thresholds", "value": thresholds(("green", None), ("red", 1))}]}]),
         4),
        (stat("State store up",
              "1 when the exporter's last write to its SQLite state store succeeded; 0 (red) means ingest "
              "answers 503 and nothing is counted.",
              [Q(f"min(llm_exporter_store_up{{{job}}})", "store up", instant=True)], "none",
              thresholds_=thresholds(("red", None), ("green", 1)), color_mode="background"), 4),
        (stat("Events accepted per second",
              "Events accepted per second over all sources (api, simulator, backfill).",
              [Q(sum_rate("llm_exporter_events_total", [job, 'result="accepted"']), "accepted")], "count:ev/s",
              sparkline=True), 4),
        (stat("Rejected share of events",
              "Share of received events that were rejected as invalid; orange and red at half and at the "
              "full LLMExporterHighRejectionRatio threshold.",
              [Q(ratio_or_zero(sum_rate("llm_exporter_events_total", [job, 'result="rejected"']), events),
                 "rejected")], "percentunit", sparkline=True, decimals=2,
              thresholds_=thresholds(("green", None), ("orange", lim.rejection / 2), ("red", lim.rejection))), 4),
        (stat("Dedupe window entries",
              "(tenant, id) pairs the exporter remembers to drop duplicate events (idempotency window).",
              [Q(f"sum(llm_exporter_dedupe_window_entries{{{job}}})", "entries")], "short", sparkline=True), 4),
        (stat("Time since the last event (stalest tenant)",
              "Age of the newest accepted event of the quietest selected tenant. Red past the LLMTenantSilent "
              "silence threshold.",
              [Q(f"max(time() - max by (tenant) (llm_last_event_timestamp_seconds{{{job}, {TENANT}}}))", "age",
                 instant=True)], "s",
              thresholds_=thresholds(("green", None), ("orange", lim.silent_seconds / 2), ("red", lim.silent_seconds))),
         4),
    )
    g.row("Ingest")
    g.line(
        9,
        (timeseries("Events per second by source and result",
                    "Events received per second by source (api, simulator, backfill) and result (accepted, "
                    "duplicate in orange, rejected in red).",
                    [Q(sum_rate("llm_exporter_events_total", [job], ["source", "result"]), "{{source}} {{result}}")],
                    "count:ev/s", overrides=[color_override("/ duplicate$/", "orange"),
                                             color_override("/ rejected$/", "red")]), 12),
        (no_value("No rejections", timeseries("Rejections per second by reason",
                    "Rejected events (or whole requests refused) per second, by reason.",
                    [Q(sum_rate("llm_exporter_rejections_total", [job], ["reason"]), "{{reason}}")], "count:ev/s",
                    stack=True)), 12),
    )
    g.line(
        8,
        (timeseries("Label overflow per second by label",
                    "Events per second whose label value was replaced by __other__ because the label hit its "
                    "cardinality cap (raise the cap, or find the client sending unbounded values).",
                    [Q(sum_rate("llm_exporter_overflow_total", [job], ["label"]), "{{label}}")], "count:ev/s"), 6),
        (no_value("Every model is priced", timeseries("Unpriced events per second by model",
                    "Events per second for models missing from the price table; they are counted at cost 0 "
                    "until the price table has them.",
                    [Q(sum_rate("llm_exporter_unpriced_events_total", [job, MODEL], ["model"]), "{{model}}")],
                    "count:ev/s", by_model=True)), 6),
        (timeseries("Dedupe window entries and evictions",
                    "Entries in the idempotency window (left) and evictions per second by reason (right): "
                    "reason=size means the window is too small and a late retry could count twice.",
                    [Q(f"sum by (instance) (llm_exporter_dedupe_window_entries{{{job}}})", "entries {{instance}}"),
                     Q(sum_rate("llm_exporter_dedupe_evictions_total", [job], ["reason"]), "evicted: {{reason}}")],
                    "short", overrides=[{"matcher": {"id": "byRegexp", "options": "/^evicted/"},
                                         "properties": [{"id": "unit", "value": "count:ev/s"},
                                                        {"id": "custom.axisPlacement", "value": "right"}]},
                                        color_override("/^evicted: size$/", "red")]), 6),
        (timeseries("Time since the last event by tenant",
                    "Age of each selected tenant's newest accepted event. The dashed line is the LLMTenantSilent "
                    "silence threshold.",
                    [Q(f"time() - max by (tenant) (llm_last_event_timestamp_seconds{{{job}, {TENANT}}})",
                       "{{tenant}}")], "s",
                    thresholds_=thresholds(("green", None), ("red", lim.silent_seconds)),
                    thresholds_style="dashed"), 6),
    )
    g.row("HTTP")
    g.line(
        9,
        (timeseries("HTTP requests per second by route and code",
                    "Requests served per second by route template and status code; 5xx in red, 4xx in orange.",
                    [Q(sum_rate("llm_exporter_http_requests_total", [job], ["route", "code"]), "{{route}} {{code}}")],
                    "reqps", overrides=[color_override("/ 4..$/", "orange"), color_override("/ 5..$/", "red")]), 9),
        (timeseries("HTTP p99 latency by route",
                    "99th percentile of request latency per route template, from the histogram buckets.",
                    [Q(quantile(0.99, "llm_exporter_http_request_duration_seconds", [job], ["route"]), "{{route}}")],
                    "s"), 9),
        (timeseries("HTTP requests in flight",
                    "Requests being served at scrape time, per exporter instance.",
                    [Q(f"sum by (instance) (llm_exporter_http_requests_in_flight{{{job}}})", "{{instance}}")],
                    "short", legend_calcs=("max", "mean")), 6),
    )
    g.row("Scrape and build")
    g.line(
        8,
        (timeseries("Scrape duration by instance",
                    "How long Prometheus took to scrape /metrics of each exporter instance.",
                    [Q(f"scrape_duration_seconds{{{job}}}", "{{instance}}")], "s"), 8),
        (timeseries("Samples per scrape by instance",
                    "Series exposed per scrape of each instance: the exporter's cardinality. A steady climb "
                    "means a label is growing; see label overflow.",
                    [Q(f"scrape_samples_scraped{{{job}}}", "{{instance}}")], "short"), 8),
        (table("Build info",
               "Version and Python version of each running exporter instance.",
               [Q(f"llm_exporter_build_info{{{job}}}", instant=True, fmt="table")], "short",
               columns={"instance": "Instance", "version": "Version", "python_version": "Python"},
               exclude=("Time", "Value", "__name__", "job")), 8),
    )
    job_var = query_variable("job", "Job", "label_values(llm_exporter_build_info, job)", multi=False,
                             include_all=False, all_value=None, current=lim.job)
    return dashboard("llm-exporter", "LLM exporter health",
                     "The exporter itself: ingest and rejections, label overflow, dedupe, HTTP, scrapes, build.",
                     g, [job_var, tenant_variable(), model_variable()], time_from="now-3h")


BUILDERS = (overview, tenant, models, agents, exporter_health)


def build_all(thresholds_doc: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """All dashboards, keyed by file name (``<uid>.json``)."""
    lim = Limits(thresholds_doc if thresholds_doc is not None else load_thresholds())
    out = {}
    for build in BUILDERS:
        dash = build(lim)
        out[f"{dash['uid']}.json"] = dash
    return out


def render(dash: Mapping[str, Any]) -> str:
    """The dashboard as grafana-foundation-sdk's models encode it (so the file is what Grafana 11.6's
    schema holds), with sorted keys, two-space indent and a trailing newline."""
    return json.dumps(schema.encode(dash), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------------------------
# Queries: listing and Grafana-style variable substitution (used by the live test)
# --------------------------------------------------------------------------------------------

def _all_panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _all_panels(panel.get("panels", []))


def iter_queries(dashboard: Mapping[str, Any], *, include_annotations: bool = False) -> Iterator[tuple[str, str]]:
    """``(panel title or variable name, query)`` for every panel target and query variable.

    Variable queries are yielded as written (``label_values(<selector>, <label>)``; see
    ``parse_label_values``). Annotation queries are left out unless asked for: ``ALERTS`` is
    empty while nothing fires.
    """
    for panel in _all_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", ""), target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            if isinstance(query, Mapping):
                query = query.get("query", "")
            if query:
                yield variable["name"], query
    if include_annotations:
        for annotation in dashboard.get("annotations", {}).get("list", []):
            if annotation.get("expr"):
                yield f"annotation: {annotation.get('name', '')}", annotation["expr"]


# --------------------------------------------------------------------------------------------
# Validation and CLI
# --------------------------------------------------------------------------------------------

def validate(dashboards: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Problems that make a panel show "No data" for sure (a metric the exporter does not expose,
    a recording rule that prometheus/rules does not define), and everything Grafana 11.6's schema
    or registries would not take as written (:mod:`mixin.schema`)."""
    problems = [f"{file_name}: {problem}" for file_name, dash in dashboards.items() for problem in schema.problems(dash)]
    known = promql.exported_metric_names() | set(promql.PROMETHEUS_SERIES)
    rules = defined_recording_rules()
    for file_name, dash in dashboards.items():
        for where, expr in iter_queries(dash, include_annotations=True):
            for name in metrics_in(expr):
                if ":" in name:
                    if name not in RECORDING_RULES:
                        problems.append(f"{file_name}: {where!r}: recording rule {name} is not in RECORDING_RULES")
                    elif rules is not None and name not in rules:
                        problems.append(f"{file_name}: {where!r}: recording rule {name} is not defined in "
                                        f"{RULES_DIR.relative_to(ROOT)}/")
                elif name not in known:
                    problems.append(f"{file_name}: {where!r}: metric {name} is not exported "
                                    f"(see exporter/core/metrics.py)")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixin dashboards", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the committed JSON differs from the generated JSON or a "
                             "query names a metric or recording rule that does not exist")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory (default: %(default)s)")
    args = parser.parse_args(argv)

    dashboards = build_all()
    problems = validate(dashboards)
    if defined_recording_rules() is None:
        print(f"note: no rule files in {RULES_DIR}; recording rule names were not checked", file=sys.stderr)

    if args.check:
        expected = {name: render(dash) for name, dash in dashboards.items()}
        present = {p.name for p in args.out.glob("*.json")} if args.out.is_dir() else set()
        for name in sorted(present - expected.keys()):
            problems.append(f"{name}: not generated by this script (delete it, or add a builder)")
        for name, text in sorted(expected.items()):
            path = args.out / name
            current = path.read_text(encoding="utf-8") if path.exists() else ""
            if current != text:
                diff = list(difflib.unified_diff(current.splitlines(), text.splitlines(),
                                                 f"committed/{name}", f"generated/{name}", lineterm="", n=1))
                problems.append(f"{name}: stale; run `make dashboards`\n"
                                + "\n".join(diff[:40]) + ("\n..." if len(diff) > 40 else ""))
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"ok: {len(expected)} dashboards up to date")
        return 1 if problems else 0

    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, dash in sorted(dashboards.items()):
        (args.out / name).write_text(render(dash), encoding="utf-8")
        print(f"wrote {(args.out / name).relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
