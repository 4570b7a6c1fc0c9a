"""Static checks of the generated Grafana dashboards and their provisioning (no Grafana needed).

They guard against what breaks peers' dashboards: JSON edited by hand and out of step with the
generator, panels that show "No data" after a metric rename, hard-coded datasource uids,
unexplained factors such as ``/1000``, and titles that say something the query does not do.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import grafana_vars
from mixin import dashboards as gen
from mixin import promql, schema
from mixin import thresholds as thresholds_file

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = [sys.executable, "-m", "mixin", "dashboards"]
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
DATASOURCE_FILE = ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDER_FILE = ROOT / "grafana" / "provisioning" / "dashboards" / "llm-usage.yml"

EXPECTED_UIDS = {"llm-overview", "llm-tenant", "llm-models", "llm-agents", "llm-exporter"}
DS = {"type": "prometheus", "uid": "${datasource}"}
ALLOWED_WINDOWS = {"$__rate_interval", "$__range", "1h", "1d"}
# Models named in the brief that must keep a fixed colour.
PINNED_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3", "o4-mini", "claude-sonnet-4-5",
                 "claude-opus-4-1", "claude-haiku-4-5", "gemini-2.5-pro", "gemini-2.5-flash", "llama-3.3-70b-versatile",
                 "text-embedding-3-small")
LABELS = {"model", "tenant", "customer", "status", "operation", "error_type", "token_type", "reason", "source",
          "result", "route", "code", "instance", "call_type", "label", "provider"}


DASHBOARDS: dict[str, dict[str, Any]] = {
    path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARD_DIR.glob("*.json"))
}
each_dashboard = pytest.mark.parametrize("name", sorted(DASHBOARDS))


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def data_panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in panels(dash) if p["type"] != "row")


def exprs(panel: dict[str, Any]) -> list[str]:
    return [t["expr"] for t in panel.get("targets", []) if t.get("expr")]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every key of every dict in a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


# --- generator -------------------------------------------------------------------------------

def test_generator_check_mode_passes() -> None:
    result = subprocess.run([*GENERATOR, "--check"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, f"dashboards are stale or invalid:\n{result.stderr}{result.stdout}"


def test_check_mode_fails_on_stale_json(tmp_path: Path) -> None:
    for name, dash in gen.build_all().items():
        (tmp_path / name).write_text(gen.render(dash), encoding="utf-8")
    victim = tmp_path / "llm-overview.json"
    victim.write_text(victim.read_text(encoding="utf-8").replace("$__rate_interval", "5m", 1), encoding="utf-8")
    result = subprocess.run([*GENERATOR, "--check", "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert "llm-overview.json: stale" in result.stderr


def test_queries_only_name_metrics_the_exporter_and_rules_define() -> None:
    assert gen.validate(gen.build_all()) == []


def test_committed_files_are_canonical_json() -> None:
    assert set(DASHBOARDS) == {f"{uid}.json" for uid in EXPECTED_UIDS}
    for name, dash in DASHBOARDS.items():
        text = (DASHBOARD_DIR / name).read_text(encoding="utf-8")
        assert text == gen.render(dash), f"{name}: not sorted-key, 2-space JSON with a trailing newline"


# --- Grafana 11.6's schema (grafana-foundation-sdk) and registries ----------------------------

@each_dashboard
def test_sdk_round_trip_has_zero_problems(name: str) -> None:
    """Decoded into the SDK's models and encoded again, nothing is lost, changed or added."""
    dash = DASHBOARDS[name]
    assert schema.problems(dash) == []
    assert schema.encode(dash) == dash


@each_dashboard
def test_every_panel_carries_the_grafana_version_as_plugin_version(name: str) -> None:
    versions = {p["type"]: p.get("pluginVersion") for p in data_panels(DASHBOARDS[name])}
    assert set(versions.values()) == {schema.grafana_version()}, versions


def test_sdk_build_and_registries_are_for_the_grafana_that_runs() -> None:
    from importlib.metadata import version

    running = schema.grafana_version()  # docker-compose.yml
    sdk = version("grafana-foundation-sdk").split("!")[-1]
    assert sdk.split(".")[:2] == running.split(".")[:2], (sdk, running)
    assert schema.registries()["grafana_version"] == running
    pinned = re.search(r'"grafana-foundation-sdk==([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pinned and pinned.group(1) == version("grafana-foundation-sdk")


def _first(dash: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(p for p in data_panels(dash) if p["type"] == kind)


@pytest.mark.parametrize(("break_it", "message"), [
    (lambda d: _first(d, "stat").__setitem__("legacyOption", 1), "legacyOption: not in Grafana's schema"),
    (lambda d: _first(d, "stat")["options"].__setitem__("graphMode", 3), ".options.graph_mode: int 3"),
    (lambda d: _first(d, "table")["options"]["footer"].__setitem__("fields", ""), "footer.fields: str"),
    (lambda d: d.__setitem__("graphTooltip", "shared"), ".graph_tooltip: str"),
    (lambda d: _first(d, "stat")["fieldConfig"]["defaults"].__setitem__("unit", "percentage"),
     "unit 'percentage' is not a Grafana 11.6 unit"),
    (lambda d: _first(d, "table")["transformations"][0].__setitem__("id", "mergeFrames"),
     "transformation 'mergeFrames'"),
    (lambda d: _first(d, "timeseries")["fieldConfig"]["overrides"][0]["matcher"].__setitem__("id", "byRegex"),
     "matcher 'byRegex'"),
    (lambda d: _first(d, "timeseries")["fieldConfig"]["overrides"][0]["properties"].append(
        {"id": "custom.lineDash", "value": [1, 2]}), "custom.lineDash: not a field-config key"),
    (lambda d: _first(d, "stat").pop("pluginVersion"), "pluginVersion None"),
])
def test_schema_check_finds_what_grafana_would_not_take(break_it: Any, message: str) -> None:
    dash = json.loads(json.dumps(DASHBOARDS["llm-overview.json"]))
    break_it(dash)
    found = schema.problems(dash)
    assert any(message in problem for problem in found), found


# --- dashboard structure ---------------------------------------------------------------------

def test_uids_are_stable_and_unique() -> None:
    uids = [dash["uid"] for dash in DASHBOARDS.values()]
    assert sorted(uids) == sorted(EXPECTED_UIDS)
    for name, dash in DASHBOARDS.items():
        assert name == f"{dash['uid']}.json"


@each_dashboard
def test_dashboard_basics(name: str) -> None:
    dash = DASHBOARDS[name]
    assert dash["schemaVersion"] == schema.SCHEMA_VERSION == 41  # what Grafana 11.6 writes
    assert dash["uid"] and isinstance(dash["uid"], str)
    assert dash["title"] and dash["description"]
    assert "llm-usage" in dash["tags"]
    assert "id" not in dash  # no database id: provisioning matches dashboards by uid


@each_dashboard
def test_panel_ids_are_unique(name: str) -> None:
    ids = [p["id"] for p in panels(DASHBOARDS[name])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"


@each_dashboard
def test_grid_fits_24_columns_without_overlap(name: str) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(DASHBOARDS[name]):
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0, panel["title"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, f"{panel['title']}: {pos}"
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


@each_dashboard
def test_every_panel_has_description_naming_its_metrics_and_a_unit(name: str) -> None:
    for panel in data_panels(DASHBOARDS[name]):
        assert panel.get("description", "").strip(), f"{panel['title']}: no description"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
        for expr in exprs(panel):
            for metric in promql.metrics_in(expr):
                assert metric in panel["description"], f"{panel['title']}: description does not name {metric}"


@each_dashboard
def test_datasource_is_always_the_variable(name: str) -> None:
    dash = DASHBOARDS[name]
    for panel in data_panels(dash):
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], f"{panel['title']}: no queries"
        for target in panel["targets"]:
            assert target["datasource"] == DS, panel["title"]
    for path, key, value in walk(dash):
        if key == "uid" and path:  # the dashboard's own uid is at the root
            assert value == "${datasource}", f"hard-coded uid at {path}: {value!r}"
        if key == "datasource" and isinstance(value, dict):
            assert value == DS, f"datasource at {path}: {value!r}"


@each_dashboard
def test_template_variables(name: str) -> None:
    dash = DASHBOARDS[name]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    required = {"tenant", "model"} | ({"customer"} if dash["uid"] == "llm-tenant" else set())
    assert required <= variables.keys()
    for var_name in {"tenant", "customer", "model"} & variables.keys():
        var = variables[var_name]
        assert var["type"] == "query" and var["datasource"] == DS
        assert var["multi"] is True and var["includeAll"] is True and var["allValue"] == ".*"
        selector, label = grafana_vars.parse_label_values(var["query"])
        assert label == var_name
        if var_name != "tenant":
            assert selector and 'tenant=~"$tenant"' in selector, f"{var_name} does not follow $tenant"


@each_dashboard
def test_every_variable_used_is_defined_and_every_defined_one_is_used(name: str) -> None:
    dash = DASHBOARDS[name]
    defined = {v["name"] for v in dash["templating"]["list"]}
    queries = [q for _, q in gen.iter_queries(dash)]
    used = {m.group(1) or m.group(2) for q in queries for m in re.finditer(r"\$(\w+)|\$\{(\w+)", q)}
    used = {u for u in used if not u.startswith("__")}
    assert used <= defined, f"undefined variables: {used - defined}"
    assert defined - {"datasource"} <= used, f"variables no query uses: {defined - {'datasource'} - used}"


@each_dashboard
def test_rate_windows(name: str) -> None:
    for title, expr in gen.iter_queries(DASHBOARDS[name]):
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window in ALLOWED_WINDOWS, f"{title}: range [{window}] in {expr}"
        for match in re.finditer(r"\b(rate|increase|irate)\(", expr):
            end = promql.closing_paren(expr, match.end() - 1)
            inner = expr[match.end():end]
            assert re.search(r"\[[^\]]+\]$", inner), f"{title}: {match.group(1)}() without a range: {expr}"
            metric = re.match(r"[\w:]+", inner)
            assert metric and re.search(r"(_total|_bucket|_sum|_count)$", metric.group(0)), \
                f"{title}: {match.group(1)}() of a non-counter {inner!r}"


@each_dashboard
def test_numeric_factors_are_explained(name: str) -> None:
    for panel in data_panels(DASHBOARDS[name]):
        for expr in exprs(panel):
            bare = re.sub(r'"[^"]*"|\[[^\]]*\]|histogram_quantile\([\d.]+|topk\(\d+', "", expr)
            for factor in re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)\s*\*|[*/]\s*(\d+(?:\.\d+)?)(?![\w.])", bare):
                number = factor[0] or factor[1]
                if number in ("0", "1"):
                    continue
                assert number in panel["description"], f"{panel['title']}: factor {number} not explained"


@each_dashboard
def test_titles_match_queries(name: str) -> None:
    for panel in data_panels(DASHBOARDS[name]):
        title, queries = panel["title"], " ".join(exprs(panel))
        legends = " ".join(t.get("legendFormat", "") for t in panel["targets"])
        grouped = set(re.findall(r"\bby \(([^)]*)\)", queries))
        grouped_labels = {label.strip() for group in grouped for label in group.split(",")}
        for q in re.findall(r"\bp(\d\d)\b", title):
            assert f"histogram_quantile({int(q) / 100:g}," in queries, f"{title}: no p{q} query"
        if "selected range" in title:
            assert all("$__range" in e for e in exprs(panel)), f"{title}: a query ignores the time range"
        if "per hour" in title.lower():
            assert "[1h]" in queries or "* 3600" in queries, title
        if "last 24 h" in title:
            assert "increase1d" in queries or "[1d]" in queries, title
        if "last hour" in title:
            assert "rate1h" in queries or "[1h]" in queries, title
        if re.search(r"\bdaily spend\b", title, re.I):
            assert "[1d]" in queries, title
        for phrase in re.findall(r"\b(?:by|per) ([a-z_]+(?:(?:,| and) [a-z_]+)*)", title):
            for word in re.split(r",? and |, ", phrase):
                if word in LABELS:
                    assert word in grouped_labels or "{{" + word + "}}" in legends, \
                        f"{title}: says 'by {word}' but no query groups by it"
        units = {panel["fieldConfig"]["defaults"]["unit"]} | {
            p["value"] for o in panel["fieldConfig"]["overrides"] for p in o["properties"] if p["id"] == "unit"}
        is_ratio = bool(re.search(r"\bratio\b|success rate|\bshare\b|budget used| vs ", title, re.I))
        if panel["type"] != "table" and is_ratio:
            assert "percentunit" in units, f"{title}: a ratio without percentunit"
        if panel["type"] != "table" and re.search(r"per second", title, re.I):
            assert units & {"reqps"} or any(u.endswith("/s") for u in units), f"{title}: per-second unit"
        if re.search(r"\b(spend|cost|USD)\b", title, re.I) and panel["type"] != "table" and not is_ratio:
            assert "currencyUSD" in units, f"{title}: money without currencyUSD"


@each_dashboard
def test_legends_use_grouped_labels(name: str) -> None:
    for panel in data_panels(DASHBOARDS[name]):
        for target in panel["targets"]:
            expr, legend = target["expr"], target.get("legendFormat", "")
            labels = set(re.findall(r"\{\{(\w+)\}\}", legend))
            if not labels or not re.search(r"\b(sum|avg|min|max|count|topk)\b", expr):
                continue
            grouped = {l.strip() for g in re.findall(r"\bby \(([^)]*)\)", expr) for l in g.split(",")}
            assert labels <= grouped, f"{panel['title']}: legend {legend!r} uses labels the query drops"


@each_dashboard
def test_model_series_have_fixed_colours(name: str) -> None:
    for panel in data_panels(DASHBOARDS[name]):
        legends = [t.get("legendFormat", "") for t in panel["targets"] if t.get("format") != "table"]
        if not any(legend.startswith("{{model}}") for legend in legends):
            continue
        overrides = panel["fieldConfig"]["overrides"]
        colours = {o["matcher"]["options"]: o["properties"][0]["value"] for o in overrides
                   if o["matcher"]["id"] == "byRegexp" and o["properties"][0]["id"] == "color"}
        assert colours.get("/.*/") == {"mode": "palette-classic-by-name"}, f"{panel['title']}: no default colour"
        assert list(colours)[0] == "/.*/", f"{panel['title']}: the catch-all must come first"
        for model in PINNED_MODELS:
            regex = "/^" + re.sub(r"([.])", r"\\\1", model) + "( .*)?$/"
            assert colours.get(regex) == {"fixedColor": gen.MODEL_COLORS[model], "mode": "fixed"}, \
                f"{panel['title']}: {model} has no fixed colour"


def test_latency_panels_draw_each_model_class_threshold() -> None:
    """A reasoning model's series carries its class's threshold line, a chat model's the default."""
    cfg = thresholds_file.load()
    by_uid = {d["uid"]: d for d in DASHBOARDS.values()}
    panel = next(p for p in data_panels(by_uid["llm-models"]) if p["title"].startswith("Time to first token p50"))

    def threshold_of(series: str) -> float:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        for override in panel["fieldConfig"]["overrides"]:  # in order: the last match wins, as in Grafana
            if re.match(override["matcher"]["options"].strip("/"), series):
                for prop in override["properties"]:
                    if prop["id"] == "thresholds":
                        steps = prop["value"]["steps"]
        return steps[-1]["value"]

    ttft = cfg["alerts"]["LLMModelHighTimeToFirstToken"]
    assert threshold_of("o3 p95") == threshold_of("o4-mini p50") == ttft["class_p95_seconds"]["reasoning"]
    assert threshold_of("gpt-4o p95") == threshold_of("claude-opus-4 p95") == ttft["p95_seconds"]
    duration = next(p for p in data_panels(by_uid["llm-overview"]) if p["title"] == "Request duration p95 by model")
    panel = duration
    lat = cfg["alerts"]["LLMModelHighLatency"]
    assert threshold_of("o3") == lat["class_p95_seconds"]["reasoning"]
    assert threshold_of("claude-opus-4") == lat["class_p95_seconds"]["large"]
    assert threshold_of("gpt-4o") == lat["p95_seconds"]


def test_model_colour_regexes_match_only_their_model() -> None:
    for model in gen.MODEL_COLORS:
        pattern = re.compile(gen.model_color_overrides()[2 + list(gen.MODEL_COLORS).index(model)]
                             ["matcher"]["options"].strip("/"))
        assert pattern.match(model) and pattern.match(f"{model} p95")
        for other in gen.MODEL_COLORS:
            if other != model:
                assert not pattern.match(other), f"colour of {model} also matches {other}"
    assert len(set(gen.MODEL_COLORS.values())) == len(gen.MODEL_COLORS), "two models share a colour"


@each_dashboard
def test_links_and_alert_annotation(name: str) -> None:
    dash = DASHBOARDS[name]
    links = [link for link in dash["links"] if link["type"] == "dashboards"]
    assert links and all("llm-usage" in link["tags"] and link["keepTime"] and link["includeVars"] for link in links)
    alerts = [a for a in dash["annotations"]["list"] if a.get("expr") == 'ALERTS{alertstate="firing"}']
    assert alerts and alerts[0]["datasource"] == DS and alerts[0]["enable"]


def test_dashboard_specific_content() -> None:
    by_uid = {d["uid"]: d for d in DASHBOARDS.values()}
    overview = " ".join(e for p in data_panels(by_uid["llm-overview"]) for e in exprs(p))
    assert "sum(tenant:llm_cost_usd:increase1d" in overview and "llm_budget_limit_usd" in overview
    table = next(p for p in data_panels(by_uid["llm-overview"]) if p["type"] == "table")
    assert {t["id"] for t in table["transformations"]} == {"merge", "organize"}
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    models = [p for p in data_panels(by_uid["llm-models"]) if p["type"] == "heatmap"]
    assert models and models[0]["targets"][0]["format"] == "heatmap"
    assert "sum by (le) (rate(llm_request_duration_seconds_bucket" in models[0]["targets"][0]["expr"]
    agents = " ".join(e for p in data_panels(by_uid["llm-agents"]) for e in exprs(p))
    assert 'operation="agent_run"' in agents and "llm_agent_run_cost_usd_total" in agents
    assert "llm_agent_calls_total" in agents
    agent_vars = {v["name"] for v in by_uid["llm-agents"]["templating"]["list"]}
    assert {"status", "model"} <= agent_vars
    health = " ".join(e for p in data_panels(by_uid["llm-exporter"]) for e in exprs(p))
    for metric in ("llm_exporter_events_total", "llm_exporter_rejections_total", "llm_exporter_overflow_total",
                   "llm_exporter_dedupe_window_entries", "llm_exporter_http_requests_total",
                   "llm_exporter_http_request_duration_seconds_bucket", "scrape_duration_seconds",
                   "llm_exporter_build_info"):
        assert metric in health, metric


# --- query listing and variable substitution (used by the live test) -------------------------

def test_iter_queries_lists_every_target_and_query_variable() -> None:
    for dash in DASHBOARDS.values():
        listed = list(gen.iter_queries(dash))
        targets = sum(len(exprs(p)) for p in data_panels(dash))
        variables = [v for v in dash["templating"]["list"] if v["type"] == "query"]
        assert len(listed) == targets + len(variables)
        assert all(isinstance(title, str) and expr for title, expr in listed)
        with_annotations = list(gen.iter_queries(dash, include_annotations=True))
        assert with_annotations[-1][1] == 'ALERTS{alertstate="firing"}'


@pytest.mark.parametrize(("expr", "variables", "expected"), [
    ('x{tenant=~"$tenant"}', {"tenant": None}, 'x{tenant=~".*"}'),
    ('x{tenant=~"${tenant}"}', {"tenant": "$__all"}, 'x{tenant=~".*"}'),
    ('x{tenant=~"$tenant"}', {"tenant": "acme"}, 'x{tenant=~"acme"}'),
    ('x{tenant=~"$tenant"}', {"tenant": ["acme", "globex"]}, 'x{tenant=~"(acme|globex)"}'),
    ('x{model=~"$model"}', {"model": "gpt-4.1"}, 'x{model=~"gpt-4\\\\.1"}'),
    ('x{model=~"$model"}', {"model": ["gpt-4.1", "o3"]}, 'x{model=~"(gpt-4\\\\.1|o3)"}'),
    ('x{model=~"${model:regex}"}', {"model": ["gpt-4.1", "o3"]}, 'x{model=~"(gpt-4\\.1|o3)"}'),
    ('${model:pipe} ${model:csv}', {"model": ["a", "b"]}, "a|b a,b"),
    ("rate(x[$__rate_interval])", {}, "rate(x[1m])"),
    ("increase(x[$__range]) $__range_s ${__range}", {"__range": "6h"}, "increase(x[21600s]) 21600 21600s"),
    ("rate(x[$__rate_interval]) [$__interval]", {"__rate_interval": "2m", "__interval": "30s"}, "rate(x[2m]) [30s]"),
    ('label_replace(x, "a", "$1", "b", "(.*)")', {}, 'label_replace(x, "a", "$1", "b", "(.*)")'),
])
def test_substitute(expr: str, variables: dict[str, Any], expected: str) -> None:
    assert grafana_vars.substitute(expr, variables) == expected


def test_substitute_reads_variable_definitions_from_the_dashboard() -> None:
    health = next(d for d in DASHBOARDS.values() if d["uid"] == "llm-exporter")
    assert grafana_vars.substitute('up{job=~"$job"}', {"job": "a.b"}, dashboard=health) == 'up{job=~"a.b"}'  # single value
    assert grafana_vars.substitute('x{tenant=~"$tenant"}', {"tenant": "a.b"}, dashboard=health) == 'x{tenant=~"a\\\\.b"}'


def test_substitute_unknown_variable() -> None:
    with pytest.raises(KeyError):
        grafana_vars.substitute('x{a=~"$nope"}', {})
    assert grafana_vars.substitute('x{a=~"$nope"}', {}, strict=False) == 'x{a=~"$nope"}'


def test_every_dashboard_query_substitutes_cleanly() -> None:
    values = {"tenant": None, "customer": None, "model": ["gpt-4.1", "o3"], "operation": None, "status": None,
              "job": "llm-usage-exporter"}
    for dash in DASHBOARDS.values():
        for title, expr in gen.iter_queries(dash, include_annotations=True):
            out = grafana_vars.substitute(expr, values, dashboard=dash)
            assert "$" not in out.replace('"$1"', ""), f"{title}: {out}"


# --- provisioning ----------------------------------------------------------------------------

def test_datasource_provisioning() -> None:
    doc = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))
    prom = next(ds for ds in doc["datasources"] if ds["type"] == "prometheus")
    assert prom["uid"] == "prometheus" and prom["url"] == "http://prometheus:9090" and prom["isDefault"] is True
    assert prom["jsonData"]["timeInterval"] == "15s"
    scrape = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    assert scrape["global"]["scrape_interval"] == prom["jsonData"]["timeInterval"], \
        "timeInterval must equal Prometheus' scrape interval, or $__rate_interval is wrong"


def test_dashboard_provider() -> None:
    doc = yaml.safe_load(PROVIDER_FILE.read_text(encoding="utf-8"))
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["folder"] == "LLM usage"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
