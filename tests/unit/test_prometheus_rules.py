"""Checks for the Prometheus mixin in prometheus/: rule files, scrape config, promtool unit
tests, the rule generator, alert/recording-rule conventions, runbook links and the
Alertmanager config.

promtool is required: when it is missing these tests FAIL instead of being skipped, so a
CI image without it cannot report green.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixin import rules as gen
from mixin.thresholds import latency_classes
from mixin.thresholds import validate as validate_thresholds

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "prometheus"
RULES = PROM / "rules"
RULE_FILES = sorted(RULES.glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/llm-usage-exporter/llm-usage-exporter/blob/main/docs/runbook.md"

ALERT_NAME_RE = re.compile(r"^LLM[A-Z][A-Za-z0-9]*$")
RECORD_NAME_RE = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")
DURATION_RE = re.compile(r"^(\d+[smhdwy])+$")

# Names the Grafana dashboards depend on (the contract from the "Prometheus rules" issue).
REQUIRED_RECORDING_RULES = {
    "tenant:llm_cost_usd:rate5m",
    "tenant_model:llm_cost_usd:rate5m",
    "tenant:llm_cost_usd:increase1h",
    "tenant:llm_cost_usd:increase1d",
    "tenant_model:llm_cost_usd:increase1h",
    "model:llm_cost_usd:increase1h",
    "tenant_customer:llm_cost_usd:increase1h",
    "tenant_customer:llm_cost_usd:increase1d",
    "tenant_model_token_type:llm_tokens:rate5m",
    "tenant_model_token_type:llm_token_details:rate5m",
    "tenant_model:llm_requests:rate5m",
    "tenant_model:llm_request_errors:rate5m",
    "tenant:llm_request_error_ratio:rate5m",
    "model:llm_request_error_ratio:rate5m",
    "tenant_model:llm_request_error_ratio:rate5m",
    "model_quantile:llm_request_duration_seconds:histogram_quantile5m",
    "model_quantile:llm_time_to_first_token_seconds:histogram_quantile5m",
    "tenant_quantile:llm_request_duration_seconds:histogram_quantile5m",
    "tenant_model:llm_cache_hit_ratio:rate5m",
    "tenant:llm_agent_success_ratio:rate1h",
    "tenant:llm_agent_cost_per_successful_run_usd:rate1h",
    "tenant_model:llm_cost_per_1k_tokens_usd:rate1h",
    "tenant:llm_budget_used_ratio:increase1d",
}
QUANTILE_RULES = {
    "model_quantile:llm_request_duration_seconds:histogram_quantile5m",
    "model_quantile:llm_time_to_first_token_seconds:histogram_quantile5m",
    "tenant_quantile:llm_request_duration_seconds:histogram_quantile5m",
}


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH. Install it (Debian/Ubuntu: `apt-get install prometheus`, "
            "or the promtool binary from a Prometheus release); these checks are not optional."
        )
    return path


def run(cmd: list[str], cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"{' '.join(proc.args)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


@cache
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rule_groups() -> list[dict[str, Any]]:
    return [group for path in RULE_FILES for group in load_yaml(path)["groups"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES / "alerts.yml")["groups"] for rule in group["rules"]]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES / "recording.yml")["groups"] for rule in group["rules"]]


def alert_ids() -> list[str]:
    return [f"{rule['alert']}-{rule['labels']['severity']}" for rule in alert_rules()]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    text = RUNBOOK.read_text(encoding="utf-8")
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def alert_test_cases() -> list[dict[str, Any]]:
    cases = []
    for path in TEST_FILES:
        for test in load_yaml(path).get("tests", []):
            for case in test.get("alert_rule_test") or []:
                cases.append({**case, "_file": path.name})
    return cases


# ---------------------------------------------------------------------------- promtool


def test_promtool_is_installed() -> None:
    assert shutil.which("promtool"), "promtool is not on PATH; the rule checks below cannot run"


def test_rule_files_exist() -> None:
    names = {p.name for p in RULE_FILES}
    assert {"recording.yml", "alerts.yml"} <= names, names
    assert TEST_FILES, "no promtool tests in prometheus/tests/"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool: str, rule_file: Path) -> None:
    assert_ok(run([promtool, "check", "rules", str(rule_file.relative_to(ROOT))]))


def test_promtool_check_config(promtool: str) -> None:
    # From inside prometheus/ so that `rule_files: [rules/*.yml]` resolves as in compose.
    proc = run([promtool, "check", "config", "prometheus.yml"], cwd=PROM)
    assert_ok(proc)
    assert "2 rule files found" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_prometheus_config_contents() -> None:
    cfg = load_yaml(PROM / "prometheus.yml")
    assert cfg["global"]["scrape_interval"] == "15s"
    assert cfg["global"]["evaluation_interval"] == "15s"
    assert cfg["rule_files"] == ["rules/*.yml"]
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "llm-usage-exporter"]
    assert job["static_configs"][0]["targets"] == ["exporter:9477"]
    targets = [t for am in cfg["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]


def test_promtool_unit_tests(promtool: str) -> None:
    proc = run([promtool, "test", "rules", *(str(p.relative_to(ROOT)) for p in TEST_FILES)])
    assert_ok(proc)


def test_promtool_tests_fix_group_order() -> None:
    """Without group_eval_order promtool runs groups in random order, and an alert may see
    the previous minute's recording: flaky `for:` boundaries. Each test file must list
    every group of the rule files it loads, recording groups before alert groups."""
    for path in TEST_FILES:
        doc = load_yaml(path)
        groups: list[str] = []
        for rule_file in doc["rule_files"]:
            groups += [g["name"] for g in load_yaml((path.parent / rule_file).resolve())["groups"]]
        order = doc.get("group_eval_order") or []
        assert sorted(order) == sorted(groups), f"{path.name}: group_eval_order must list exactly {groups}"
        recording = {g["name"] for g in load_yaml(RULES / "recording.yml")["groups"]}
        flags = [name in recording for name in order]
        assert flags == sorted(flags, reverse=True), f"{path.name}: recording groups must come first"


# --------------------------------------------------------------------------- generator


def test_generator_check_passes() -> None:
    assert_ok(run([sys.executable, "-m", "mixin", "rules", "--check"]))


def test_generator_check_detects_stale_file(tmp_path: Path) -> None:
    cfg = load_yaml(PROM / "thresholds.yml")
    cfg = {**cfg, "alerts": {**cfg["alerts"], "LLMTenantCostAnomaly": {**cfg["alerts"]["LLMTenantCostAnomaly"], "factor": 4}}}
    rendered = gen.generate(cfg)[RULES / "alerts.yml"]
    assert rendered != (RULES / "alerts.yml").read_text(encoding="utf-8")
    assert "> 4 * (tenant:llm_cost_usd:increase1h offset 1w)" in rendered
    # a thresholds file that differs from the committed rules makes --check fail
    thresholds = tmp_path / "thresholds.yml"
    thresholds.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    proc = run([sys.executable, "-m", "mixin", "rules", "--check", "--thresholds", str(thresholds)])
    assert proc.returncode == 1, proc.stderr
    assert "stale" in proc.stderr


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("LLMModelHighTimeToFirstToken", "p95_seconds"), 10, "must be < 10"),
        (("LLMTenantHighErrorRatio", "warning", "ratio"), 0.5, "warning.ratio must be below critical.ratio"),
        (("LLMExporterDown", "for"), "five minutes", "not a Prometheus duration"),
        (("LLMAgentHighFailureRatio", "ratio"), 0, "must be a number > 0"),
        (("LLMModelHighErrorRatio", "warning", "for"), "1m", "warning.for must not be shorter than critical.for"),
        (("LLMModelHighTimeToFirstToken", "class_p95_seconds", "reasoning"), 10, "must be < 10"),
        (("LLMModelHighLatency", "class_p95_seconds", "chatty"), 40, "chatty: not a class of model_classes"),
        (("LLMModelHighLatency", "class_p95_seconds"), [90], "must map a model class to seconds"),
        (("LLMExporterDown", "for"), "1.5h", "not a Prometheus duration"),
    ],
)
def test_generator_rejects_bad_thresholds(path: tuple[str, ...], value: Any, message: str) -> None:
    cfg = yaml.safe_load((PROM / "thresholds.yml").read_text(encoding="utf-8"))
    node = cfg["alerts"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    errors = validate_thresholds(cfg)
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ({"reasoning": ["o3("]}, "is not a regular expression"),
        ({"reasoning": []}, "must be a non-empty list"),
        ({"Reasoning": ["o3"]}, "a class name is lower-case"),
        ({"default": ["o3"]}, "a class name is lower-case"),
    ],
)
def test_generator_rejects_bad_model_classes(classes: dict[str, Any], message: str) -> None:
    cfg = yaml.safe_load((PROM / "thresholds.yml").read_text(encoding="utf-8"))
    cfg["model_classes"] = classes
    for alert in ("LLMModelHighLatency", "LLMModelHighTimeToFirstToken"):
        cfg["alerts"][alert].pop("class_p95_seconds")
    errors = validate_thresholds(cfg)
    assert any(message in e for e in errors), errors


def test_a_model_belongs_to_its_first_class_only() -> None:
    """A model matching two classes gets the first class's threshold (and alert label) only."""
    cfg = yaml.safe_load((PROM / "thresholds.yml").read_text(encoding="utf-8"))
    classes = latency_classes(cfg, "LLMModelHighLatency")
    assert [c.name for c in classes] == [*cfg["model_classes"], "default"]

    def classes_of(model: str) -> list[str]:
        out = []
        for cls in classes:
            ok = True
            for matcher in cls.matchers:
                negate, pattern = matcher.startswith("model!~"), matcher.split('"', 1)[1][:-1].replace("\\\\", "\\")
                ok &= bool(re.fullmatch(pattern, model)) != negate
            if ok:
                out.append(cls.name)
        return out

    assert classes_of("o3") == ["reasoning"] and classes_of("o4-mini-2025-04-16") == ["reasoning"]
    assert classes_of("claude-opus-4-5") == ["large"] and classes_of("gpt-4o") == ["default"]
    cfg["model_classes"]["large"].append("o3")  # o3 now matches both: reasoning comes first
    classes = latency_classes(cfg, "LLMModelHighLatency")
    assert classes_of("o3") == ["reasoning"]


def test_generator_rejects_unknown_and_missing_alerts() -> None:
    cfg = yaml.safe_load((PROM / "thresholds.yml").read_text(encoding="utf-8"))
    cfg["alerts"]["LLMSomethingNew"] = cfg["alerts"].pop("LLMTenantSilent")
    errors = validate_thresholds(cfg)
    assert any("LLMSomethingNew: unknown alert" in e for e in errors), errors
    assert any("LLMTenantSilent: missing" in e for e in errors), errors


def test_thresholds_are_commented() -> None:
    """Every threshold (a leaf `key: value` line) carries a comment, inline or just above."""
    lines = (PROM / "thresholds.yml").read_text(encoding="utf-8").splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        match = re.match(r"^\s*([a-z_]+):\s*(\S.*)$", line)
        if not match or match.group(2).startswith("#"):
            continue  # blank, comment, or a mapping key with children
        if "#" in line or (i > 0 and lines[i - 1].strip().startswith("#")):
            continue
        if match.group(1) == "for":
            continue  # `for:` sits next to the commented threshold it belongs to
        uncommented.append(line)
    assert not uncommented, "thresholds without a comment:\n" + "\n".join(uncommented)


# ------------------------------------------------------------------------------ alerts


def test_alert_names_and_variants() -> None:
    rules = alert_rules()
    assert rules
    seen: dict[tuple[str, str], int] = {}
    for rule in rules:
        key = (rule["alert"], rule["labels"]["severity"])
        seen[key] = seen.get(key, 0) + 1
    duplicates = [k for k, n in seen.items() if n > 1]
    assert not duplicates, f"alert name + severity must be unique: {duplicates}"


@pytest.mark.parametrize("rule", alert_rules(), ids=alert_ids())
def test_alert_conventions(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert ALERT_NAME_RE.match(name), f"{name}: CamelCase with the LLM prefix"
    assert DURATION_RE.match(str(rule.get("for", ""))), f"{name}: needs a `for:` duration"
    assert rule["labels"]["severity"] in {"warning", "critical"}, name
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}, name
    assert annotations["summary"].strip() and "{{" not in annotations["summary"], f"{name}: summary must be static"
    assert "{{" in annotations["description"], f"{name}: description must be templated"
    assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{name.lower()}", name
    anchor = annotations["runbook_url"].rsplit("#", 1)[1]
    assert anchor in runbook_anchors(), f"{name}: docs/runbook.md has no heading for #{anchor}"


@pytest.mark.parametrize("rule", alert_rules(), ids=alert_ids())
def test_alert_expressions_select_the_exporter_job(rule: dict[str, Any]) -> None:
    """Raw llm_* selectors in alerts carry the job matcher, so other jobs cannot leak in."""
    for selector in re.findall(r"\b(llm_[a-z0-9_]+|up)\{([^}]*)\}", rule["expr"]):
        assert 'job="llm-usage-exporter"' in selector[1], f"{rule['alert']}: {selector[0]}{{{selector[1]}}}"


def test_runbook_sections_complete() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    by_name = {s.splitlines()[0].strip(): s for s in sections}
    for name in {r["alert"] for r in alert_rules()}:
        assert name in by_name, f"docs/runbook.md: no section for {name}"
        body = by_name[name]
        for part in ("**Meaning.**", "**Impact.**", "**Investigate.**", "**Fix.**"):
            assert part in body, f"docs/runbook.md#{name.lower()}: missing {part}"
        assert "```promql" in body, f"docs/runbook.md#{name.lower()}: no PromQL to investigate with"


@pytest.mark.parametrize("name", sorted({r["alert"] for r in alert_rules()}))
def test_every_alert_is_tested_firing_and_not_firing(name: str) -> None:
    cases = [c for c in alert_test_cases() if c["alertname"] == name]
    assert any(c.get("exp_alerts") for c in cases), f"{name}: no promtool case where it fires"
    assert any(not c.get("exp_alerts") for c in cases), f"{name}: no promtool case where it does not fire"
    severities = {r["labels"]["severity"] for r in alert_rules() if r["alert"] == name}
    fired = {a.get("exp_labels", {}).get("severity") for c in cases for a in c.get("exp_alerts") or []}
    assert severities <= fired, f"{name}: severities {severities - fired} never fire in a test"


# --------------------------------------------------------------------- recording rules


@pytest.mark.parametrize("rule", recording_rules(), ids=lambda r: r["record"] + str(r.get("labels", "")))
def test_recording_rule_names(rule: dict[str, Any]) -> None:
    assert RECORD_NAME_RE.match(rule["record"]), rule["record"]


def test_required_recording_rules_exist() -> None:
    names = {r["record"] for r in recording_rules()}
    missing = REQUIRED_RECORDING_RULES - names
    assert not missing, f"recording rules the dashboards need are missing: {sorted(missing)}"


def test_quantile_rules_have_static_quantile_labels() -> None:
    for name in QUANTILE_RULES:
        quantiles = sorted(r["labels"]["quantile"] for r in recording_rules() if r["record"] == name)
        assert quantiles == ["0.5", "0.95", "0.99"], (name, quantiles)


def test_every_recording_rule_has_a_value_test() -> None:
    tested = set()
    for path in TEST_FILES:
        for test in load_yaml(path).get("tests", []):
            for case in test.get("promql_expr_test") or []:
                tested |= set(re.findall(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", case["expr"]))
    untested = {r["record"] for r in recording_rules()} - tested
    assert not untested, f"recording rules without a promql_expr_test: {sorted(untested)}"


def test_rule_groups_are_named_and_unique() -> None:
    names = [g["name"] for g in rule_groups()]
    assert len(names) == len(set(names)), names
    assert all(n.startswith("llm-usage-exporter.") for n in names), names


# ------------------------------------------------------------------------ alertmanager


def test_alertmanager_config() -> None:
    path = PROM / "alertmanager.yml"
    cfg = load_yaml(path)
    route = cfg["route"]
    assert route["group_by"] == ["alertname", "tenant"]
    receivers = {r["name"]: r for r in cfg["receivers"]}
    urls = {c["url"] for r in receivers.values() for c in r.get("webhook_configs", [])}
    assert urls == {"http://webhook:5001/alerts"}, urls
    inhibit = cfg["inhibit_rules"][0]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert {"alertname", "tenant"} <= set(inhibit["equal"])

    amtool = shutil.which("amtool")
    if amtool is None:
        return  # parsed and checked above; amtool is optional
    assert_ok(run([amtool, "check-config", str(path.relative_to(ROOT))]))


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=LLMExporterDown", "severity=critical"], "platform-critical"),
        (["alertname=LLMModelHighLatency", "severity=warning", "model=gpt-4o"], "platform-warning"),
        (["alertname=LLMTenantBudgetExceeded", "severity=critical", "tenant=acme"], "tenant-critical"),
        (["alertname=LLMTenantSilent", "severity=warning", "tenant=acme"], "tenant-warning"),
        (["alertname=LLMTenantBudgetExceeded", "severity=critical", "tenant=example-tenant"], "example-tenant"),
    ],
)
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool not installed (optional)")
    proc = run(
        [amtool, "config", "routes", "test", "--config.file", str(PROM / "alertmanager.yml"),
         "--verify.receivers", receiver, *labels]
    )
    assert_ok(proc)
