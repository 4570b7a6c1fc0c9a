"""Every Grafana dashboard query, run against a real Prometheus fed by the simulator (``sim_stack``).

For each dashboard in ``grafana/dashboards/`` every panel target and every ``label_values()``
variable query (``iter_queries``) gets its own test id ``<uid>/<panel or var:name>/<refId>/<variant>``,
so a failure names the panel. Template variables are substituted the way Grafana does
(``substitute``), in up to three variants:

* ``all``: every multi-value variable at "All" (its ``allValue``, ``.*``);
* ``one``: one concrete value per variable, the first of the live ``label_values()`` answer in
  Grafana's sort order (``sort: 1``, alphabetical), chained like Grafana (the customer list is asked
  for the chosen tenant). ``PANEL_VALUES`` pins a value for the few panels whose data exists for one
  value only; the pinned value must be in the live answer;
* ``one-escaped``: for queries that use ``$model``, a model whose name has a regex metacharacter
  (``claude-haiku-4-5``), so Grafana's escaping (``claude-haiku-3\\\\.5`` in the PromQL string) is
  exercised against real label values.

Each substituted query goes through ``/api/v1/query`` (instant); targets Grafana runs as range
queries (``range: true``: time series, heatmaps, sparklines) also through ``/api/v1/query_range``.
Both must parse and return at least one series. Queries are polled (never a fixed sleep) because
some series appear only after a few scrapes or rule evaluations.

Grafana built-ins, for Prometheus scraping every 1 s (the fixture):

* ``$__range`` = ``5m`` (the dashboards' stats and tables over "the selected range");
* ``$__interval`` = ``5s``: a 5-minute range drawn with ~60 points;
* ``$__rate_interval`` = ``15s``. Grafana computes ``max($__interval + scrape interval,
  4 x scrape interval)`` = max(5s + 1s, 4 x 1s) = 6s here; we use the more conservative 15 s
  (still >= that lower bound, so consecutive windows overlap as Grafana guarantees). With 1 s scrapes
  a 15 s window holds ~15 samples, so a late or missed scrape, or a second in which the simulator
  (which ingests in 0.5 s ticks) sent nothing for a rare label combination, cannot empty a ``rate()``.
  In production the datasource's ``timeInterval`` is the 15 s scrape interval, giving 1m.

Range queries end now and step by ``max($__interval, panel interval)``, anchored on now: Grafana
would align the range to multiples of the step, which for the hourly and daily bar panels
(``interval`` 1h / 1d) would put the only point before this short-lived stack existed.

A last test checks that every metric name and recording rule that a dashboard or rule file reads
exists in the live exporter's ``/metrics`` or among the rules Prometheus loaded.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

import pytest
import yaml

import grafana_vars
from exporter.config import parse_duration
from mixin import promql
from mixin.dashboards import iter_queries
from harness import REPO, RULES_DIR

DASHBOARD_DIR = REPO / "grafana" / "dashboards"



BUILTINS = {"__range": "5m", "__interval": "5s", "__rate_interval": "15s"}
RANGE_S = 300.0
INTERVAL_S = 5.0

# Series written by Prometheus itself, not by the exporter or a recording rule.
PROMETHEUS_SERIES = {
    "up": "scrape health, one per target",
    "scrape_duration_seconds": "written on every scrape",
    "scrape_samples_scraped": "written on every scrape",
    "ALERTS": "written for alerting rules while an alert is pending or firing (annotations only)",
}

# Panels whose data exists for one variable value only: (dashboard uid, panel title) -> values.
# Each value must be in the live label_values() answer (asserted). Keys are variable names; a
# callable gets the SimStack.
PANEL_VALUES: dict[tuple[str, str], dict[str, Any]] = {
    # Only events for a model missing from the price table count here; the simulator's models are
    # all priced, so the fixture sends one for acme (conftest.UNPRICED_MODEL).
    ("llm-exporter", "Unpriced events per second by model"): {
        "tenant": lambda stack: "acme", "model": lambda stack: stack.unpriced_model},
    # $status's first value is "error": failed agent runs of one tenant and model are too rare for a
    # 15 s window to hold one reliably (14 % of 6 % of events), so the check reads successful runs.
    # The "Cost per run" stat (increase over 5m) needs two of them since the stack started: near the
    # daily trough (03:00 UTC) fewer than two arrive in the first minute in ~12 % of seeds.
    ("llm-agents", "Cost per run and per successful run"): {"status": lambda stack: "ok"},
    ("llm-agents", "Cost per run"): {"status": lambda stack: "ok"},
}

REGEX_META = re.compile(r"[$^*{}\[\]+?.()|\\]")
ESCAPED_VARIABLE = "model"  # the variable whose values contain regex metacharacters (gpt-4.1, ...)


# --------------------------------------------------------------------------------------------
# PromQL metric names (shared with test_rules_metrics_live.py)
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?[a-zA-Z0-9]*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<punct>[(){}\[\],@])
  | (?P<op>[-+*/%^=!<>~]+)
  | (?P<space>\s+)
""", re.VERBOSE)
_AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                "topk", "quantile", "limitk", "limit_ratio"}
_LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"} | _LABEL_LIST_KEYWORDS


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot tokenize PromQL at {expr[pos:pos + 20]!r} in {expr!r}")
        if match.lastgroup != "space":
            out.append((match.lastgroup or "", match.group(0)))
        pos = match.end()
    return out


def promql_metric_names(expr: str) -> list[str]:
    """Metric and recording-rule names a PromQL expression reads, in order of first use.

    A small tokenizer, not a parser: strings, numbers, durations and template variables are
    tokens of their own; identifiers inside ``{...}`` (label matchers) and ``[...]`` (ranges)
    are ignored, as are keywords, aggregation operators, function names (an identifier followed
    by ``(``) and the label lists after ``by``/``without``/``on``/``ignoring``/``group_left``/
    ``group_right``. What is left are the selectors' metric names. For ``label_values(sel, label)``
    pass ``sel`` (see ``query_metric_names``).
    """
    tokens = _tokens(expr)
    names: list[str] = []
    braces = brackets = 0
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if text == "{":
            braces += 1
        elif text == "}":
            braces -= 1
        elif text == "[":
            brackets += 1
        elif text == "]":
            brackets -= 1
        elif kind == "ident" and braces == 0 and brackets == 0:
            word = text.lower()
            if word in _LABEL_LIST_KEYWORDS and nxt == "(":
                depth = 0
                for j in range(i + 1, len(tokens)):
                    depth += {"(": 1, ")": -1}.get(tokens[j][1], 0)
                    if depth == 0:
                        break
                i = j + 1
                continue
            if word not in _KEYWORDS and word not in _AGGREGATORS and nxt != "(" and text not in names:
                names.append(text)
        i += 1
    if braces or brackets:
        raise ValueError(f"unbalanced braces or brackets in {expr!r}")
    return names


def query_metric_names(query: str) -> list[str]:
    """Like ``promql_metric_names``, also for a variable's ``label_values(sel, label)``."""
    if query.strip().startswith("label_values("):
        selector, _label = grafana_vars.parse_label_values(query)
        return promql_metric_names(selector) if selector else []
    return promql_metric_names(query)


def exposed_names(metrics_text: str) -> set[str]:
    """Names of the samples in a text exposition (histograms as ``_bucket``/``_sum``/``_count``)."""
    names = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def rule_documents() -> dict[str, dict[str, Any]]:
    return {path.name: yaml.safe_load(path.read_text(encoding="utf-8")) for path in sorted(RULES_DIR.glob("*.yml"))}


def rule_exprs() -> Iterator[tuple[str, str, str]]:
    """``(file, rule name, expr)`` for every recording and alerting rule."""
    for file_name, doc in rule_documents().items():
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                yield file_name, rule.get("record") or rule.get("alert"), str(rule["expr"])


def loaded_recording_rules(prom: Any) -> set[str]:
    groups = prom._api("/api/v1/rules", {"type": "record"})["groups"]
    return {rule["name"] for group in groups for rule in group["rules"]}


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------

DASHBOARDS: dict[str, dict[str, Any]] = {}
for _path in sorted(DASHBOARD_DIR.glob("*.json")):
    _dash = json.loads(_path.read_text(encoding="utf-8"))
    DASHBOARDS[_dash["uid"]] = _dash


def _panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


@dataclass(frozen=True)
class Case:
    uid: str
    where: str             # panel title, or the variable name for a variable query
    ref: str               # refId, or "var"
    expr: str
    is_variable: bool
    range: bool = False    # Grafana runs it as a range query too
    step: float = INTERVAL_S
    uses: frozenset[str] = field(default_factory=frozenset)  # template variables it references

    def id(self, variant: str) -> str:
        where = f"var:{self.where}" if self.is_variable else self.where
        return f"{self.uid}/{where}/{self.ref}/{variant}"


_VAR_NAMES = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}")


def _variables_of(expr: str) -> frozenset[str]:
    return frozenset(a or b for a, b in _VAR_NAMES.findall(expr) if not (a or b).startswith("__"))


def build_cases() -> list[Case]:
    cases: list[Case] = []
    for uid, dash in DASHBOARDS.items():
        targets: dict[tuple[str, str], list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
        for panel in _panels(dash.get("panels", [])):
            for target in panel.get("targets", []):
                targets.setdefault((panel.get("title", ""), target.get("expr", "")), []).append((panel, target))
        variables = {v["name"]: v for v in dash["templating"]["list"] if v.get("type") == "query"}
        seen: dict[tuple[str, str], int] = {}
        for where, expr in iter_queries(dash):
            key = (where, expr)
            if key in targets:
                panel, target = targets[key][seen.get(key, 0)]
                seen[key] = seen.get(key, 0) + 1
                interval = target.get("interval") or panel.get("interval")
                step = max(INTERVAL_S, parse_duration(interval) if interval else 0)
                cases.append(Case(uid, where, target.get("refId", "?"), expr, False,
                                  bool(target.get("range", not target.get("instant"))), step, _variables_of(expr)))
            elif where in variables:
                cases.append(Case(uid, where, "var", expr, True, uses=_variables_of(expr)))
            else:
                raise AssertionError(f"{uid}: iter_queries yielded {where!r}, neither a panel nor a variable")
    return cases


CASES = build_cases()


def _variants(case: Case) -> list[str]:
    variants = ["all", "one"]
    if ESCAPED_VARIABLE in case.uses:
        variants.append("one-escaped")
    return variants


PARAMS = [pytest.param(case, variant, id=case.id(variant)) for case in CASES for variant in _variants(case)]


# --------------------------------------------------------------------------------------------
# Live: warm-up, variable values, polling
# --------------------------------------------------------------------------------------------

class Live:
    """The warmed-up stack, the variable values of each (dashboard, variant) and a poll budget."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.prom = stack.prometheus
        self.values: dict[tuple[str, str], dict[str, Any]] = {}
        self.deadline = 0.0

    # Grafana answers label_values(sel, label) with /api/v1/label/<label>/values?match[]=sel over the range.
    def label_values(self, query: str, variables: Mapping[str, Any], dash: Mapping[str, Any]) -> list[str]:
        selector, label = grafana_vars.parse_label_values(query)
        now = time.time()
        params: dict[str, Any] = {"start": now - RANGE_S, "end": now}
        if selector:
            params["match[]"] = grafana_vars.substitute(selector, {**variables, **BUILTINS}, dashboard=dash)
        return sorted(self.prom._api(f"/api/v1/label/{label}/values", params))

    def resolve(self, uid: str, variant: str, pinned: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Values of every query variable of a dashboard, in dashboard order, for one variant."""
        dash = DASHBOARDS[uid]
        values: dict[str, Any] = {}
        query_vars = [v for v in dash["templating"]["list"] if v.get("type") == "query"]
        if variant == "one-escaped" and not pinned:
            return self._resolve_escaped(uid, query_vars)
        for variable in query_vars:
            name = variable["name"]
            answer = self.label_values(variable["query"], values, dash)
            assert answer, f"{uid}: variable ${name}: label_values() answered nothing"
            if pinned and name in pinned:
                assert pinned[name] in answer, f"{uid}: pinned ${name}={pinned[name]!r} not in the live answer {answer}"
                values[name] = pinned[name]
            elif variant == "all" and variable.get("includeAll") and variable.get("allValue"):
                values[name] = grafana_vars.ALL
            else:  # "one", and variables without "All" (Grafana then uses a concrete value)
                current = (variable.get("current") or {}).get("value")
                values[name] = current if isinstance(current, str) and current in answer else answer[0]
        return values

    def _resolve_escaped(self, uid: str, query_vars: list[dict[str, Any]]) -> dict[str, Any]:
        # Try the tenants in order until the $model answer for that tenant holds a name with a regex
        # metacharacter; every other variable takes its first value, as in the "one" variant.
        dash = DASHBOARDS[uid]
        queries = {v["name"]: v["query"] for v in query_vars}
        for tenant in self.label_values(queries["tenant"], {}, dash):
            values = self.resolve(uid, "one", {"tenant": tenant})
            special = [m for m in self.label_values(queries[ESCAPED_VARIABLE], values, dash) if REGEX_META.search(m)]
            if special:
                return self.resolve(uid, "one", {"tenant": tenant, ESCAPED_VARIABLE: special[0]})
        raise AssertionError(f"{uid}: no tenant has a ${ESCAPED_VARIABLE} value with a regex metacharacter")

    def values_for(self, case: Case, variant: str) -> dict[str, Any]:
        override = PANEL_VALUES.get((case.uid, case.where))
        if override and variant != "all":
            pinned = {name: value(self.stack) for name, value in override.items()}
            key = (case.uid, "pinned:" + json.dumps(pinned, sort_keys=True))
            if key not in self.values:
                self.values[key] = self.resolve(case.uid, "one", pinned)
            return self.values[key]
        key = (case.uid, variant)
        if key not in self.values:
            self.values[key] = self.resolve(case.uid, variant)
        return self.values[key]

    def poll(self, what: str, run: Any) -> Any:
        """``run()`` until it returns a non-empty result; until the shared deadline, at least 3 s."""
        stop = max(self.deadline, time.monotonic() + 3)
        while True:
            result = run()
            if result:
                return result
            if time.monotonic() > stop:
                pytest.fail(f"no data for {what}")
            time.sleep(0.5)


def _recording_rules_in_dashboards() -> list[str]:
    names: list[str] = []
    for dash in DASHBOARDS.values():
        for _where, expr in iter_queries(dash):
            names += [n for n in query_metric_names(expr) if ":" in n and n not in names]
    return names


@pytest.fixture(scope="module")
def live(sim_stack: Any) -> Live:
    """Waits until every recording rule a dashboard reads has data. Groups with ``interval: 1m``
    first run up to a minute after Prometheus starts and need two scrapes before ``increase()``
    answers, so the bound is two evaluations plus margin."""
    state = Live(sim_stack)
    prom = sim_stack.prometheus
    rules = _recording_rules_in_dashboards()
    deadline = time.monotonic() + max(20.0, sim_stack.started + 150 - time.time())
    missing = rules
    while missing and time.monotonic() < deadline:
        missing = [r for r in missing if not prom.query(f"count({r})")]
        if missing:
            time.sleep(1)
    assert not missing, f"recording rules without data {time.time() - sim_stack.started:.0f}s after start: {missing}"
    # A little slack for series that show up a few seconds after the rules (rare label combinations).
    state.deadline = time.monotonic() + 30
    return state


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

def test_cases_cover_every_dashboard_query() -> None:
    assert {c.uid for c in CASES} == set(DASHBOARDS) and len(DASHBOARDS) >= 5
    for uid, dash in DASHBOARDS.items():
        assert sum(c.uid == uid for c in CASES) == len(list(iter_queries(dash)))


@pytest.mark.parametrize(("case", "variant"), PARAMS)
def test_query_returns_data(live: Live, case: Case, variant: str) -> None:
    dash = DASHBOARDS[case.uid]
    values = live.values_for(case, variant)
    if case.is_variable:
        answer = live.poll(f"{case.expr} with {values}", lambda: live.label_values(case.expr, values, dash))
        assert all(isinstance(v, str) and v for v in answer)
        return
    expr = grafana_vars.substitute(case.expr, {**values, **BUILTINS}, dashboard=dash)
    assert "$" not in expr.replace("$1", ""), f"unsubstituted variable in {expr}"
    live.poll(f"instant query {expr}", lambda: live.prom.query(expr))
    if case.range:
        def run_range() -> list[dict[str, Any]]:
            end = time.time()
            span = min(RANGE_S, end - live.stack.started)
            start = end - math.floor(span / case.step) * case.step
            return live.prom.query_range(expr, start, end, case.step)

        result = live.poll(f"range query (step {case.step:g}s) {expr}", run_range)
        assert all(series["values"] for series in result)


def test_tokenizer_on_tricky_expressions() -> None:
    expr = ('sum by (tenant, le) (rate(llm_a_bucket{job=~"$job", model!~"x|y"}[$__rate_interval] offset 1h)) '
            '/ ignoring (call_type) group_left () (tenant:llm_b:rate5m > 0) or on (tenant) vector(0) '
            'and topk(5, llm_c_total) * 1e-3 + histogram_quantile(0.5, sum(rate(llm_d[5m:1m])) by (le))')
    assert promql_metric_names(expr) == ["llm_a_bucket", "tenant:llm_b:rate5m", "llm_c_total", "llm_d"]
    assert query_metric_names('label_values(llm_requests_total{tenant=~"$tenant"}, model)') == ["llm_requests_total"]
    assert query_metric_names("label_values(tenant)") == []


def _referenced_names() -> dict[str, list[str]]:
    """Every metric or recording-rule name read by a dashboard (panels, variables, annotations) or a
    rule file, with where it is read."""
    where: dict[str, list[str]] = {}
    for uid, dash in DASHBOARDS.items():
        for title, expr in iter_queries(dash, include_annotations=True):
            names = query_metric_names(expr)
            # The generator's own (regex) extraction must agree: both guard the same contract.
            assert set(promql.metrics_in(expr)) <= set(names) | {"label_values"}, (uid, title, expr)
            for name in names:
                where.setdefault(name, []).append(f"{uid}: {title}")
    for file_name, rule, expr in rule_exprs():
        for name in promql_metric_names(expr):
            where.setdefault(name, []).append(f"rules/{file_name}: {rule}")
    return where


REFERENCED = _referenced_names()


@pytest.fixture(scope="module")
def live_names(sim_stack: Any) -> dict[str, set[str]]:
    return {"exporter": exposed_names(sim_stack.exporter.metrics_text()),
            "rules": loaded_recording_rules(sim_stack.prometheus)}


@pytest.mark.parametrize("name", sorted(REFERENCED))
def test_referenced_metric_exists(sim_stack: Any, live_names: dict[str, set[str]], name: str) -> None:
    used_by = "; ".join(REFERENCED[name][:4])
    if name in PROMETHEUS_SERIES:
        if name != "ALERTS":
            assert sim_stack.prometheus.query(f"count({name})"), f"Prometheus writes no {name} series"
        return
    if ":" in name:
        assert name in live_names["rules"], f"recording rule {name} (read by {used_by}) is not loaded in Prometheus"
    else:
        assert name in live_names["exporter"], \
            f"metric {name} (read by {used_by}) is not in the live exporter's /metrics"


def test_names_were_found() -> None:
    assert len(REFERENCED) >= 25
    assert {"llm_cost_usd_total", "llm_request_duration_seconds_bucket", "tenant:llm_budget_used_ratio:increase1d",
            "up"} <= set(REFERENCED)
