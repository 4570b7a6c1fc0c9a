"""Every Grafana dashboard query gives the same answer on VictoriaMetrics as on Prometheus.

The scale-out setup of ``docker-compose.scale-out.yml`` and ``docs/scaling.md``, with the real
binaries: the exporter (simulator on), the real ``prometheus`` scraping it every second with the
project's rule files and ``remote_write``-ing everything (raw samples, recording rules, ``up``) to
the real ``victoria-metrics`` (Debian package, 1.79). Then every panel target and every variable
query of every dashboard (``iter_queries``; variables substituted by ``substitute`` as Grafana does,
in the variants ``all``, ``one`` and ``one-escaped`` of ``test_dashboards_live.py``) runs as an
instant query against both at the same evaluation time ``T`` and must give the same label sets and
the same values. Test ids name the panel: ``<uid>/<panel or var:name>/<refId>/<variant>``.

Why the comparison can be exact, and where it cannot
----------------------------------------------------

VictoriaMetrics' ``rate()``/``increase()`` do not extrapolate: they take the last sample *before*
the window as the starting point, ``(v_last - v_prev) / (t_last - t_prev)``. Prometheus takes the
first sample *inside* the window and extrapolates to the window's edges. At an arbitrary ``T`` the
two differ by the increments of one scrape interval at the window start, and by whole first
samples where a series is born inside the window (below). Measured with the ``incident`` scenario
(200 events/s, 100 customers, 1 s scrapes, 15 s rates, 60 s ranges, arbitrary ``T``): 5-7 % for
fleet-wide rates by model, 10-45 % for increases and error ratios of one tenant or model, 100 %
for sparse series (one failed agent run inside one window and not the other; a customer's error
ratio of 0 against 0.03). A tolerance wide enough for that would let a wrong query through, so the
test removes the causes instead:

``T`` is chosen, from the scrape timestamps Prometheus recorded, such that ``T`` **and**
``T - w`` for every window ``w`` are exact scrape timestamps (Prometheus aligns scrapes to its
schedule; a late scrape is simply not picked). Prometheus 2.x range selectors include their left
edge, so its first sample is at ``T - w`` and its last at ``T``: nothing to extrapolate, and its
``rate`` is ``(v(T) - v(T - w)) / w``. VictoriaMetrics' window is left-open, so its "previous
sample" is the same ``v(T - w)``: the same number. ``histogram_quantile``, ratios, ``topk`` and
sums then agree to rounding, so **every value is compared with a relative tolerance of 1e-9**,
rates, increases and quantiles included: VictoriaMetrics stores values as decimals and returns a
raw sample up to ~1e-12 off (measured), ``v(T) - v(T - w)`` amplifies that by ``v / Δv`` (< 100
here), plus float summation order. ``time() - <Unix timestamp gauge>`` gets an absolute 0.02 s
(the gauge's 1e-11 of 1.8e9), the only place where that rounding is not relative.

Two conditions make that hold, and the fixture waits for them (polling, no fixed sleep):

* **No series is born inside a window.** A new counter is counted from 0 by VictoriaMetrics (when
  its first value is small) and not by Prometheus. The test fleet is small and busy (3 tenants,
  8 customers, 6 models, 1000 events/s, errors and agent runs frequent; the ``incident``
  scenario's bursts and incidents) so every label combination exists within seconds; the exporter
  warms up *before* Prometheus' first scrape, and ``T`` is only accepted when the number of
  scraped series at ``T`` equals the number one window (and a scrape) earlier.
* **VictoriaMetrics holds exactly Prometheus' samples up to ``T``:** every series, every
  timestamp, every value (to 1e-11), compared raw (``{__name__=~".+"}[1h]`` on both).

The only windows longer than the data are the fixed ``[1h]``/``[1d]`` of the hourly and daily
spend bars: they reach back to every series' first sample. There VictoriaMetrics counts a small
first value from 0 and Prometheus extrapolates at most back to the zero crossing, so both lie in
``[v_last - v_first, v_last]`` per series. These cases (``sum by (...) (increase(sel[1h|1d]))``)
are compared with the **sum of the first samples** of their series (read from Prometheus) as the
allowed difference, per group; any other expression with a window longer than the data fails the
test, to be handled here first. (In production those windows hold a day of data and the
difference is the window-edge one above, a fraction of a scrape interval in a day.)

Prometheus answers ``NaN`` (a quantile of no observations) where VictoriaMetrics drops the series;
Grafana draws neither, so ``NaN`` samples are dropped on both sides before comparing.

Grafana built-ins: the dashboard time range is the last minute (``$__range`` = 60 s); Grafana's
``$__interval`` is then its minimum, the datasource ``timeInterval`` (here the 1 s scrape
interval). ``$__rate_interval`` is 15 s, as in ``test_dashboards_live.py``, not the 4 s Grafana's
``max($__interval + scrape interval, 4 x scrape interval)`` gives here: VictoriaMetrics widens a
``rate()`` window shorter than its "max previous-sample interval", which is 5 scrape intervals
for scrapes of 2 s or less (1.5 intervals at 15 s). That is an artefact of the 1 s test scrapes: in
production (15 s scrapes, ``timeInterval: 15s``) ``$__rate_interval`` is at least 1 m, far above
the 22.5 s where VictoriaMetrics would widen it.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import httpx
import pytest
import yaml

from conftest import UNPRICED_MODEL, probe_events
import grafana_vars
from mixin import promql
from mixin.dashboards import iter_queries
from harness import REPO, ExporterProcess, PrometheusProcess, ServerProcess, rule_files, wait_until

DASHBOARD_DIR = REPO / "grafana" / "dashboards"



SCRAPE_INTERVAL_S = 1
RANGE_S = 60
INTERVAL_S = SCRAPE_INTERVAL_S  # Grafana's minimum $__interval: the datasource timeInterval
RATE_INTERVAL_S = 15            # as in test_dashboards_live.py; why not Grafana's 4 s: module docstring
BUILTINS = {"__range": f"{RANGE_S}s", "__interval": f"{INTERVAL_S}s", "__rate_interval": f"{RATE_INTERVAL_S}s"}

# VictoriaMetrics stores a sample value as a decimal (int64 mantissa, about 12 significant digits
# kept for fractions): a raw value comes back up to ~1e-12 off (measured: 1.0e-12).
RAW_REL_TOL = 1e-11
# Query results: the raw rounding, amplified by v / (v(T) - v(T - w)) in a rate (< 100 here), and
# float summation order. See the module docstring for why this is not larger.
REL_TOL = 1e-9
ABS_TOL = 1e-12
# `time() - <a Unix timestamp gauge>`: the gauge's rounding (RAW_REL_TOL x 1.8e9 s) is absolute.
TIME_ABS_TOL = RAW_REL_TOL * 2e9  # 0.02 s

# A small, busy fleet: every label combination appears within seconds (see the docstring). The
# incident scenario's bursts and incidents, more errors and agent runs than the default. gpt-4.1 and
# claude-haiku-4-5 have a regex metacharacter (the "one-escaped" variant).
_PROFILE = {"sigma": 0.9, "error_rate": 0.08}  # the default scenario's models, 8 % errors
SCENARIO: dict[str, Any] = {
    "extends": "incident",
    "agent_share": 0.25,
    "tenants": {
        "acme": {"weight": 4, "customers": 3, "zipf": 0.5, "models": {"claude-sonnet-4-5": 1, "gpt-4.1": 1}},
        "globex": {"weight": 3, "customers": 3, "zipf": 0.5, "models": {"claude-haiku-4-5": 1, "gpt-4o-mini": 1}},
        "initech": {"weight": 3, "customers": 2, "zipf": 0.5, "models": {"o4-mini": 1, "text-embedding-3-small": 1}},
    },
    "models": {
        "gpt-4.1": {**_PROFILE, "input": 2500, "output": 400, "ttft_ms": 500, "tpot_ms": 16, "cache_share": 0.4},
        "gpt-4o-mini": {**_PROFILE, "input": 1200, "output": 250, "ttft_ms": 300, "tpot_ms": 9, "cache_share": 0.3},
        "o4-mini": {**_PROFILE, "input": 2000, "output": 700, "ttft_ms": 2500, "tpot_ms": 10, "cache_share": 0.25,
                    "reasoning_share": 0.55},
        "claude-sonnet-4-5": {**_PROFILE, "input": 2800, "output": 500, "ttft_ms": 700, "tpot_ms": 14,
                            "cache_share": 0.45, "cache_write_share": 0.08},
        "claude-haiku-4-5": {**_PROFILE, "input": 1500, "output": 250, "ttft_ms": 350, "tpot_ms": 7,
                             "cache_share": 0.4, "cache_write_share": 0.06},
        "text-embedding-3-small": {**_PROFILE, "input": 600, "output": 0, "ttft_ms": 0, "tpot_ms": 0,
                                   "cache_share": 0.0, "operation": "embeddings", "base_ms": 120},
    },
}
CONFIG = "tenants:\n  acme: {budget_usd_per_day: 50}\n  globex: {budget_usd_per_day: 20}\n"
# A small per-tenant idempotency window gives the dedupe-evictions series (born at the first
# eviction) data within seconds, as in conftest.sim_stack.
SIMULATOR_FLAGS = ("--simulator.enabled=true", "--simulator.rate=1000", "--simulator.speed=60",
                   "--dedupe.max-entries-per-tenant=500")

# Panels whose data exists for one variable value only (as in test_dashboards_live.PANEL_VALUES).
PANEL_VALUES: dict[tuple[str, str], dict[str, str]] = {
    ("llm-exporter", "Unpriced events per second by model"): {"tenant": "acme", "model": UNPRICED_MODEL},
}

REGEX_META = re.compile(r"[$^*{}\[\]+?.()|\\]")
ESCAPED_VARIABLE = "model"
_WINDOW = re.compile(r"\[(\d+)([smhd])(?::\d*[smhd]?)?\]")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# `sum by (labels) (increase(selector[window]))`, possibly sorted: linear in the first samples.
_LINEAR_INCREASE = re.compile(
    r"^(?:sort_desc\(|sort\()?sum by \((?P<by>[\w, ]+)\) \(increase\((?P<sel>.+)\[(?P<win>\d+[smhd])\]\)\)\)?$")


# --------------------------------------------------------------------------------------------
# The processes
# --------------------------------------------------------------------------------------------

class VictoriaMetricsProcess(ServerProcess):
    """Single-node ``victoria-metrics`` on a free loopback port, with its own data directory."""

    FLAGS = (
        "-retentionPeriod=1d",
        # Samples become visible to queries 1 s after their timestamp (default 30 s).
        "-search.latencyOffset=1s",
        # No rollup result cache: every query reads the raw samples just written.
        "-search.disableCache",
        "-loggerLevel=WARN",
    )

    name = "victoria-metrics"
    ready_path = "/health"
    stop_signal = signal.SIGINT  # flushes in-memory data, like SIGTERM

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.write_url = self.url + "/api/v1/write"

    def command(self) -> list[str]:
        binary = shutil.which("victoria-metrics")
        if binary is None:
            pytest.fail("`victoria-metrics` is not installed: run `apt-get install -y victoria-metrics` "
                        "(.ci/run does this)")
        return [binary, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.workdir / 'data'}",
                *self.FLAGS]

    def metrics(self) -> dict[str, float]:
        """VictoriaMetrics' own /metrics, ``name{labels}`` -> value."""
        out = {}
        for line in self.client.get("/metrics").text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out


class RemoteWritePrometheus(PrometheusProcess):
    """The harness' Prometheus, its generated config extended with ``remote_write``."""

    def __init__(self, workdir: Path, targets: Iterable[str], remote_write_url: str, **kwargs: Any) -> None:
        super().__init__(workdir, targets, **kwargs)
        config = yaml.safe_load(self.config_path.read_text())
        config["remote_write"] = [{
            "url": remote_write_url,
            # Flush at least every second (default 5 s); metadata is not used by VictoriaMetrics.
            "queue_config": {"batch_send_deadline": "1s", "min_backoff": "100ms", "max_backoff": "1s"},
            "metadata_config": {"send": False},
        }]
        self.config_path.write_text(yaml.safe_dump(config))


# --------------------------------------------------------------------------------------------
# Querying both
# --------------------------------------------------------------------------------------------

def api(client: httpx.Client, path: str, params: Mapping[str, Any]) -> Any:
    """Queries as POST form bodies, like Grafana's datasource (``httpMethod: POST`` in the
    provisioning); label values with GET, the only method Prometheus serves there."""
    if "/label/" in path:
        response = client.get(path, params=dict(params))
    else:
        response = client.post(path, data=dict(params))
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{client.base_url}{path} {params}: HTTP {response.status_code}: {response.text[:500]}") from None
    if response.status_code != 200 or body.get("status") != "success":
        raise AssertionError(f"{client.base_url}{path} {params}: HTTP {response.status_code}: "
                             f"{body.get('error', body)}")
    return body["data"]


def instant(client: httpx.Client, expr: str, at_ms: int) -> list[dict[str, Any]]:
    data = api(client, "/api/v1/query", {"query": expr, "time": f"{at_ms / 1000:.3f}"})
    assert data["resultType"] in ("vector", "scalar"), data["resultType"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def vector(client: httpx.Client, expr: str, at_ms: int) -> dict[frozenset[tuple[str, str]], float]:
    """Label set -> value, NaN samples dropped (see the module docstring)."""
    out: dict[frozenset[tuple[str, str]], float] = {}
    for sample in instant(client, expr, at_ms):
        key = frozenset(sample["metric"].items())
        assert key not in out, f"duplicate label set {dict(key)} in the answer to {expr}"
        value = float(sample["value"][1])
        if not math.isnan(value):
            out[key] = value
    return out


def scalar(client: httpx.Client, expr: str, at_ms: int) -> float:
    result = instant(client, expr, at_ms)
    assert len(result) == 1, f"{expr}: expected one sample, got {result[:3]}"
    return float(result[0]["value"][1])


def show(labels: frozenset[tuple[str, str]]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}"


# --------------------------------------------------------------------------------------------
# The cases (as in test_dashboards_live.py)
# --------------------------------------------------------------------------------------------

DASHBOARDS: dict[str, dict[str, Any]] = {}
for _path in sorted(DASHBOARD_DIR.glob("*.json")):
    _dash = json.loads(_path.read_text(encoding="utf-8"))
    DASHBOARDS[_dash["uid"]] = _dash


def _panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


_VAR_NAMES = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}")


@dataclass(frozen=True)
class Case:
    uid: str
    where: str           # panel title, or the variable name
    ref: str             # refId, or "var"
    expr: str
    is_variable: bool
    uses: frozenset[str] = field(default_factory=frozenset)

    def id(self, variant: str) -> str:
        return f"{self.uid}/{'var:' + self.where if self.is_variable else self.where}/{self.ref}/{variant}"


def build_cases() -> list[Case]:
    cases: list[Case] = []
    for uid, dash in DASHBOARDS.items():
        refs: dict[tuple[str, str], list[str]] = {}
        for panel in _panels(dash.get("panels", [])):
            for target in panel.get("targets", []):
                refs.setdefault((panel.get("title", ""), target.get("expr", "")), []).append(target.get("refId", "?"))
        variables = {v["name"] for v in dash["templating"]["list"] if v.get("type") == "query"}
        for where, expr in iter_queries(dash):
            uses = frozenset(a or b for a, b in _VAR_NAMES.findall(expr) if not (a or b).startswith("__"))
            if refs.get((where, expr)):
                cases.append(Case(uid, where, refs[(where, expr)].pop(0), expr, False, uses))
            elif where in variables:
                cases.append(Case(uid, where, "var", expr, True, uses))
            else:
                raise AssertionError(f"{uid}: iter_queries yielded {where!r}, neither a panel nor a variable")
    return cases


CASES = build_cases()


def _variants(case: Case) -> list[str]:
    return ["all", "one"] + (["one-escaped"] if ESCAPED_VARIABLE in case.uses else [])


PARAMS = [pytest.param(case, variant, id=case.id(variant)) for case in CASES for variant in _variants(case)]


def windows_s(expr: str) -> set[int]:
    """Range-selector and subquery windows of a substituted expression, in seconds."""
    return {int(n) * _UNIT_S[unit] for n, unit in _WINDOW.findall(expr)}


ALL_WINDOWS = sorted({w for case in CASES if not case.is_variable
                      for w in windows_s(grafana_vars.substitute(case.expr, {**{v: grafana_vars.ALL for v in case.uses}, **BUILTINS},
                                                        strict=False))})


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------

@dataclass
class Stack:
    exporter: ExporterProcess
    prometheus: RemoteWritePrometheus
    vm: VictoriaMetricsProcess
    first_scrape_ms: int = 0
    at_ms: int = 0                                  # T
    inner_windows: tuple[int, ...] = ()             # windows inside the data: compared exactly
    outer_windows: tuple[int, ...] = ()             # windows longer than the data: first-sample bound
    samples: int = 0                                # samples <= T, equal on both sides
    values: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    deviations: dict[str, float] = field(default_factory=dict)  # case id -> largest relative deviation
    bounded: dict[str, tuple[float, float]] = field(default_factory=dict)  # ... and largest difference / bound

    @property
    def prom(self) -> httpx.Client:
        return self.prometheus.client

    @property
    def vmc(self) -> httpx.Client:
        return self.vm.client

    # Grafana answers label_values(sel, label) with /api/v1/label/<label>/values?match[]=sel over the range.
    def label_values(self, client: httpx.Client, query: str, variables: Mapping[str, Any],
                     dash: Mapping[str, Any]) -> list[str]:
        selector, label = grafana_vars.parse_label_values(query)
        params: dict[str, Any] = {"start": f"{self.at_ms / 1000 - RANGE_S:.3f}", "end": f"{self.at_ms / 1000:.3f}"}
        if selector:
            params["match[]"] = grafana_vars.substitute(selector, {**variables, **BUILTINS}, dashboard=dash)
        return sorted(api(client, f"/api/v1/label/{label}/values", params))

    def resolve(self, uid: str, variant: str, pinned: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Variable values of a dashboard for one variant, from Prometheus' answers (the variable
        tests assert VictoriaMetrics answers the same)."""
        dash = DASHBOARDS[uid]
        query_vars = [v for v in dash["templating"]["list"] if v.get("type") == "query"]
        if variant == "one-escaped" and not pinned:
            queries = {v["name"]: v["query"] for v in query_vars}
            for tenant in self.label_values(self.prom, queries["tenant"], {}, dash):
                values = self.resolve(uid, "one", {"tenant": tenant})
                special = [m for m in self.label_values(self.prom, queries[ESCAPED_VARIABLE], values, dash)
                           if REGEX_META.search(m)]
                if special:
                    return self.resolve(uid, "one", {"tenant": tenant, ESCAPED_VARIABLE: special[0]})
            raise AssertionError(f"{uid}: no tenant has a ${ESCAPED_VARIABLE} value with a regex metacharacter")
        values: dict[str, Any] = {}
        for variable in query_vars:
            name = variable["name"]
            answer = self.label_values(self.prom, variable["query"], values, dash)
            assert answer, f"{uid}: variable ${name}: label_values() answered nothing"
            if pinned and name in pinned:
                assert pinned[name] in answer, f"{uid}: pinned ${name}={pinned[name]!r} not in {answer}"
                values[name] = pinned[name]
            elif variant == "all" and variable.get("includeAll") and variable.get("allValue"):
                values[name] = grafana_vars.ALL
            else:
                current = (variable.get("current") or {}).get("value")
                values[name] = current if isinstance(current, str) and current in answer else answer[0]
        return values

    def values_for(self, case: Case, variant: str) -> dict[str, Any]:
        pinned = PANEL_VALUES.get((case.uid, case.where)) if variant != "all" else None
        key = (case.uid, variant + (":" + json.dumps(pinned, sort_keys=True) if pinned else ""))
        if key not in self.values:
            self.values[key] = self.resolve(case.uid, variant, pinned)
        return self.values[key]


def scrape_times(client: httpx.Client, at_ms: int, lookback_s: int) -> list[int]:
    """Timestamps (ms) of the exporter's scrapes in the ``lookback_s`` before ``at_ms``."""
    data = api(client, "/api/v1/query", {"query": f'up{{job="llm-usage-exporter"}}[{lookback_s}s]',
                                         "time": f"{at_ms / 1000:.3f}"})
    return [round(float(t) * 1000) for series in data["result"] for t, _ in series["values"]]


def _scraped_series(client: httpx.Client, at_ms: int) -> float:
    return scalar(client, 'count({job="llm-usage-exporter"})', at_ms)


def _metrics_lines(exporter: ExporterProcess) -> int:
    return sum(1 for line in exporter.metrics_text().splitlines() if line and not line.startswith("#"))


def _warm_exporter(exporter: ExporterProcess, timeout: float = 45) -> None:
    """Until the exporter's sample count has not changed for 3 s: every label combination of the
    small fleet exists before Prometheus' first scrape (births later are caught when choosing T)."""
    deadline = time.monotonic() + timeout
    history: list[int] = []
    while time.monotonic() < deadline:
        history.append(_metrics_lines(exporter))
        if len(history) >= 4 and len(set(history[-4:])) == 1:
            return
        time.sleep(1)


def _recording_rules_in_dashboards() -> list[str]:
    names: list[str] = []
    for dash in DASHBOARDS.values():
        for _where, expr in iter_queries(dash):
            names += [n for n in promql.metrics_in(expr) if ":" in n and n not in names]
    return names


def _choose_t(stack: Stack) -> bool:
    """Pick T (see the module docstring); False when no scrape qualifies yet."""
    now_ms = int(time.time() * 1000)
    first = stack.first_scrape_ms
    lookback = RANGE_S + 60
    scrapes = scrape_times(stack.prom, now_ms, lookback)
    on_schedule = set(scrapes)
    # Remote write flushes every second; leave it 3 s to deliver what was scraped at T.
    for t in sorted((t for t in scrapes if t <= now_ms - 3000), reverse=True):
        age_s = (t - first) / 1000
        inner = tuple(w for w in ALL_WINDOWS if w <= age_s - 1)
        outer = tuple(w for w in ALL_WINDOWS if w > age_s)
        if len(inner) + len(outer) != len(ALL_WINDOWS) or not inner or max(inner) < RANGE_S:
            return False  # the data is not yet older than the dashboard range (plus a scrape)
        if not all(t - w * 1000 in on_schedule for w in inner):
            continue
        widest = max(inner) * 1000 + 1000
        if _scraped_series(stack.prom, t) != _scraped_series(stack.prom, t - widest):
            continue  # a series was born inside a window
        stack.at_ms, stack.inner_windows, stack.outer_windows = t, inner, outer
        # The exact comparison rests on Prometheus 2.x range selectors including their left edge
        # (Prometheus 3 made them left-open, like VictoriaMetrics': then rate() differs again).
        w = min(inner)
        in_window = sum(t - w * 1000 <= s <= t for s in scrapes)
        counted = scalar(stack.prom, f'count_over_time(up{{job="llm-usage-exporter"}}[{w}s])', t)
        assert counted == in_window, (
            f"Prometheus counts {counted:g} scrapes in [T - {w}s, T], there are {in_window}: its range selectors "
            "do not include the left edge, the assumption of this test's exact comparison")
        return True
    return False


Samples = dict[frozenset[tuple[str, str]], list[tuple[int, float]]]


def raw_samples(client: httpx.Client, at_ms: int) -> Samples:
    """Every raw sample <= T of every series (the 1 h window reaches back before the data), NaN
    values left out: Prometheus stores the NaN a recording rule computes (a quantile of no
    observations), VictoriaMetrics drops it."""
    data = api(client, "/api/v1/query", {"query": '{__name__=~".+"}[1h]', "time": f"{at_ms / 1000:.3f}"})
    out: Samples = {}
    for series in data["result"]:
        values = [(round(float(t) * 1000), float(v)) for t, v in series["values"] if v != "NaN"]
        if values:
            out[frozenset(series["metric"].items())] = values
    return out


def same_samples(prom: Samples, vm: Samples) -> str:
    """'' when both hold the same samples; otherwise what differs first."""
    if prom.keys() != vm.keys():
        only_prom, only_vm = sorted(map(show, prom.keys() - vm.keys())), sorted(map(show, vm.keys() - prom.keys()))
        return (f"{len(only_prom)} series only in Prometheus (e.g. {only_prom[:2]}), "
                f"{len(only_vm)} only in VictoriaMetrics (e.g. {only_vm[:2]})")
    for key, expected in prom.items():
        got = vm[key]
        if [t for t, _ in got] != [t for t, _ in expected]:
            return f"{show(key)}: {len(expected)} samples in Prometheus, {len(got)} in VictoriaMetrics"
        for (t, a), (_, b) in zip(expected, got):
            if not math.isclose(a, b, rel_tol=RAW_REL_TOL, abs_tol=0.0):
                return f"{show(key)} at {t / 1000:.3f}: Prometheus {a!r}, VictoriaMetrics {b!r}"
    return ""


def _complete(stack: Stack, timeout: float = 60) -> None:
    """Until VictoriaMetrics holds exactly the samples Prometheus holds up to T (all series)."""
    deadline = time.monotonic() + timeout
    while True:
        prom = raw_samples(stack.prom, stack.at_ms)
        difference = same_samples(prom, raw_samples(stack.vmc, stack.at_ms))
        if not difference:
            stack.samples = sum(map(len, prom.values()))
            return
        if time.monotonic() > deadline:
            pytest.fail(f"VictoriaMetrics does not hold Prometheus' samples up to T {timeout:g} s later: {difference}")
        time.sleep(0.5)


@contextlib.contextmanager
def running_stack(workdir: Path) -> Iterator[Stack]:
    """VictoriaMetrics, the exporter and Prometheus, up, warmed, and T chosen."""
    (workdir / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    (workdir / "config.yaml").write_text(CONFIG)
    with contextlib.ExitStack() as stop:
        # Entered first, stopped last: Prometheus flushes its remote-write queue on shutdown.
        vm = stop.enter_context(VictoriaMetricsProcess(workdir / "vm"))
        exporter = stop.enter_context(ExporterProcess(
            workdir / "exporter", *SIMULATOR_FLAGS, f"--simulator.scenario={workdir / 'scenario.yaml'}",
            f"--config.file={workdir / 'config.yaml'}"))
        body = exporter.post(probe_events(time.time())).json()
        assert (body["accepted"], body["rejected"]) == (1, 1), body
        _warm_exporter(exporter)
        prometheus = stop.enter_context(RemoteWritePrometheus(
            workdir / "prometheus", [f"127.0.0.1:{exporter.port}"], vm.write_url, rule_files=rule_files(),
            scrape_interval=f"{SCRAPE_INTERVAL_S}s", evaluation_interval=f"{SCRAPE_INTERVAL_S}s"))
        started = time.time()
        state = Stack(exporter, prometheus, vm)

        def first_scrape() -> bool:
            scrapes = scrape_times(state.prom, int(time.time() * 1000), 600)
            state.first_scrape_ms = min(scrapes, default=0)
            return bool(scrapes)
        wait_until(first_scrape, timeout=30, interval=0.5, what="Prometheus' first scrape")
        # Groups with `interval: 1m` first run up to a minute after Prometheus starts, and need two
        # scrapes before increase() answers: two evaluations plus margin.
        missing = _recording_rules_in_dashboards()

        def rules_have_data() -> bool:
            missing[:] = [r for r in missing if not instant(state.prom, f"count({r})", int(time.time() * 1000))]
            return not missing
        wait_until(rules_have_data, timeout=150, interval=1, what=f"data for the recording rules {missing}")
        wait_until(lambda: _choose_t(state), timeout=120, interval=1,
                   what="a scrape T with every window edge on a scrape and no series born inside a window")
        _complete(state)
        print(f"\nvictoriametrics: T = {state.at_ms / 1000:.3f} ({(state.at_ms - state.first_scrape_ms) / 1000:.0f} s "
              f"of data, ready {time.time() - started:.0f} s after Prometheus started), {state.samples} samples, "
              f"windows compared exactly {state.inner_windows} s, with the first-sample bound {state.outer_windows} s")
        yield state


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("victoriametrics")) as state:
        yield state
        if state.deviations:
            worst = max(state.deviations, key=state.deviations.__getitem__)
            print(f"\nvictoriametrics: {len(state.deviations)} answers compared to {REL_TOL:g}: largest relative "
                  f"deviation {state.deviations[worst]:.3g} ({worst})")
        if state.bounded:
            worst = max(state.bounded, key=lambda k: state.bounded[k][1])
            print(f"victoriametrics: {len(state.bounded)} answers compared with the first-sample bound: largest "
                  f"difference {state.bounded[worst][1]:.0%} of the bound, {state.bounded[worst][0]:.3g} relative "
                  f"({worst})")


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

def test_cases_cover_every_dashboard_query() -> None:
    assert {c.uid for c in CASES} == set(DASHBOARDS) and len(DASHBOARDS) >= 5
    for uid, dash in DASHBOARDS.items():
        assert sum(c.uid == uid for c in CASES) == len(list(iter_queries(dash)))
    # The windows T is chosen for: $__rate_interval, $__range, and the fixed hour and day bars.
    assert ALL_WINDOWS == [RATE_INTERVAL_S, RANGE_S, 3600, 86400], ALL_WINDOWS


def test_victoriametrics_holds_every_sample(stack: Stack) -> None:
    """Raw samples (scraped, recording rules, up and scrape_*), timestamps and values."""
    prom = raw_samples(stack.prom, stack.at_ms)
    assert not same_samples(prom, raw_samples(stack.vmc, stack.at_ms))
    names = {dict(key)["__name__"] for key in prom}
    assert "up" in names and set(_recording_rules_in_dashboards()) <= names
    assert stack.samples > 50_000, stack.samples


def _compare(stack: Stack, case_id: str, expr: str, prom: dict[frozenset[tuple[str, str]], float],
             vm: dict[frozenset[tuple[str, str]], float],
             allowed: Mapping[frozenset[tuple[str, str]], float] | None = None) -> None:
    only_prom = sorted(map(show, prom.keys() - vm.keys()))
    only_vm = sorted(map(show, vm.keys() - prom.keys()))
    assert not only_prom and not only_vm, \
        f"label sets differ for {expr}\n  only in Prometheus: {only_prom[:5]}\n  only in VictoriaMetrics: {only_vm[:5]}"
    worst = used = 0.0
    problems = []
    for labels, p in prom.items():
        v = vm[labels]
        slack = (allowed or {}).get(labels, 0.0)
        deviation = abs(p - v) / max(abs(p), abs(v)) if p != v else 0.0
        worst = max(worst, deviation)
        used = max(used, abs(p - v) / slack if slack else 0.0)
        if abs(p - v) > slack + max(REL_TOL * max(abs(p), abs(v)), TIME_ABS_TOL if "time()" in expr else ABS_TOL):
            problems.append(f"{show(labels)}: Prometheus {p!r}, VictoriaMetrics {v!r}"
                            + (f" (allowed difference {slack:.6g})" if allowed is not None else ""))
    if allowed is None:
        if "time()" not in expr:  # its relative deviation is a cancellation artefact (see TIME_ABS_TOL)
            stack.deviations[case_id] = worst
    else:
        stack.bounded[case_id] = (worst, used)
    assert not problems, f"values differ for {expr}:\n  " + "\n  ".join(problems[:10])


def _net_sides(expr: str) -> tuple[str, str] | None:
    """``(A or B * 0) - (B or A * 0)`` (a net of two counters, either side possibly absent) → (A, B)."""
    if not (expr.startswith("(") and expr.endswith(")")) or ") - (" not in expr:
        return None
    left, right = expr[1:-1].split(") - (", 1)
    a, _, b_zero = left.partition(" or ")
    b, _, a_zero = right.partition(" or ")
    return (a, b) if (a_zero, b_zero) == (f"{a} * 0", f"{b} * 0") else None


def _first_sample_bound(stack: Stack, expr: str) -> dict[frozenset[tuple[str, str]], float]:
    """For ``sum by (L) (increase(sel[w]))`` with w longer than the data: per group, the sum of the
    first samples of its series (Prometheus' raw data). A difference of two such sums may differ by
    both sides' bounds."""
    sides = _net_sides(expr)
    if sides is not None:
        bound: dict[frozenset[tuple[str, str]], float] = {}
        for side in sides:
            for key, value in _first_sample_bound(stack, side).items():
                bound[key] = bound.get(key, 0.0) + value
        return bound
    match = _LINEAR_INCREASE.match(expr)
    assert match, (f"{expr} has a window longer than the data but is not `sum by (...) (increase(sel[w]))`: "
                   "VictoriaMetrics and Prometheus differ there by each series' first sample; extend "
                   "_first_sample_bound to bound it")
    by = [label.strip() for label in match["by"].split(",")]
    data = api(stack.prom, "/api/v1/query", {"query": f"{match['sel']}[{match['win']}]",
                                             "time": f"{stack.at_ms / 1000:.3f}"})
    bound: dict[frozenset[tuple[str, str]], float] = {}
    for series in data["result"]:
        key = frozenset((label, series["metric"].get(label, "")) for label in by)
        bound[key] = bound.get(key, 0.0) + float(series["values"][0][1])
    return bound


@pytest.mark.parametrize(("case", "variant"), PARAMS)
def test_same_answer(stack: Stack, case: Case, variant: str) -> None:
    dash = DASHBOARDS[case.uid]
    values = stack.values_for(case, variant)
    if case.is_variable:
        prom = stack.label_values(stack.prom, case.expr, values, dash)
        vm = stack.label_values(stack.vmc, case.expr, values, dash)
        assert prom, f"{case.expr} with {values}: no values"
        assert vm == prom, f"{case.expr} with {values}: Prometheus {prom}, VictoriaMetrics {vm}"
        return
    expr = grafana_vars.substitute(case.expr, {**values, **BUILTINS}, dashboard=dash)
    assert "$" not in expr.replace("$1", ""), f"unsubstituted variable in {expr}"
    prom, vm = vector(stack.prom, expr, stack.at_ms), vector(stack.vmc, expr, stack.at_ms)
    assert prom or vm, f"no data on either side for {expr}: the comparison would prove nothing"
    windows = windows_s(expr)
    unknown = windows - set(stack.inner_windows) - set(stack.outer_windows)
    assert not unknown, f"windows {unknown} s were not considered when T was chosen"
    allowed = _first_sample_bound(stack, expr) if windows & set(stack.outer_windows) else None
    _compare(stack, case.id(variant), expr, prom, vm, allowed)


def test_storage_footprint(stack: Stack) -> None:
    """VictoriaMetrics' on-disk bytes per sample for this data (printed for docs/scaling.md)."""
    def total(metrics: Mapping[str, float], name: str, types: Iterable[str]) -> float:
        return sum(metrics.get(f'{name}{{type="{t}"}}', 0.0) for t in types)

    def flushed() -> dict[str, float] | None:
        metrics = stack.vm.metrics()
        rows = total(metrics, "vm_rows", ("storage/small", "storage/big"))
        return metrics if rows >= stack.samples * 0.9 else None
    metrics = wait_until(flushed, timeout=30, interval=1, what="VictoriaMetrics to write its parts")
    rows = total(metrics, "vm_rows", ("storage/small", "storage/big"))
    data = total(metrics, "vm_data_size_bytes", ("storage/small", "storage/big"))
    index = total(metrics, "vm_data_size_bytes", ("indexdb",))
    series = scalar(stack.prom, 'count({__name__=~".+"})', stack.at_ms)
    print(f"\nvictoriametrics: {rows:.0f} samples in {data:.0f} bytes = {data / rows:.2f} bytes/sample; "
          f"index {index:.0f} bytes for {series:.0f} series = {index / series:.0f} bytes/series")
    assert 0 < data / rows < 16, "VictoriaMetrics compresses samples to a few bytes"
