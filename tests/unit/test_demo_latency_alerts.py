"""The demo stays quiet: the default scenario's normal latency fires no latency alert.

Reasoning models (o3, o4-mini) think before their first token; at the chat thresholds their
normal TTFT would keep LLMModelHighTimeToFirstToken firing all day in `make run`. The model
classes of prometheus/thresholds.yml give them their own thresholds. This test proves both
halves with real parts: the simulator's default scenario (incidents switched off: a degraded
model *should* alert) at the demo's rate goes through the exporter's one ingest path, each
minute's exposition becomes promtool input series, and promtool evaluates the generated rules
(with ``for: 0s``, so not a single evaluation may cross a threshold):

* with the shipped thresholds no latency alert is active at any minute;
* with the model classes removed the same data does fire (o3 among them), and only for models
  a class covers (today o3 and o4-mini: reasoning; claude-opus-4-1: large), so a renamed demo
  model cannot make this pass by accident.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import OPTIONS_BY_NAME
from exporter.core import metrics
from exporter.demo.simulator import Simulator, load_scenario
from helpers import make_exporter
from mixin import rules, thresholds

START = 1_764_082_800.0  # Tuesday 2025-11-25 15:00 UTC: the scenario's daily peak, a weekday
MINUTES = 40
FIRST_EVAL = 6  # the first minute with a full 5m rate window
LATENCY_ALERTS = ("LLMModelHighLatency", "LLMModelHighTimeToFirstToken")
HISTOGRAMS = (metrics.DURATION.name + "_bucket", metrics.TTFT.name + "_bucket")
TARGET = {"job": "llm-usage-exporter", "instance": "exporter:9477"}


@cache
def demo_series() -> dict[str, list[float | None]]:
    """Latency bucket series of the demo, one value per minute (None before a series exists)."""
    scenario = dataclasses.replace(load_scenario("default"), incidents_per_day=0.0)
    demo_rate = OPTIONS_BY_NAME["simulator.rate"].default
    sim = Simulator(scenario, seed=OPTIONS_BY_NAME["simulator.seed"].default, rate=demo_rate)
    exporter = make_exporter()
    series: dict[str, list[float | None]] = {}
    for minute in range(MINUTES + 1):
        t = START + minute * 60
        if minute:
            batch = sim.events_between(t - 60, t)
            result = exporter.aggregator.ingest(batch, "simulator", now=t)
            assert result.accepted == len(batch), result
        for family in exporter.registry.collect():
            for sample in family.samples:
                if sample.name not in HISTOGRAMS:
                    continue
                labels = ",".join(f'{k}="{v}"' for k, v in sorted({**sample.labels, **TARGET}.items()))
                values = series.setdefault(f"{sample.name}{{{labels}}}", [None] * minute)
                values.append(sample.value)
    return series


def promtool_test(tmp_path: Path, cfg: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Render the rules from ``cfg`` with ``for: 0s`` on the latency alerts and test the demo series."""
    cfg = copy.deepcopy(cfg)
    for name in LATENCY_ALERTS:
        cfg["alerts"][name]["for"] = "0s"
    assert thresholds.validate(cfg) == []
    (tmp_path / "rules").mkdir()
    for path, text in rules.generate(cfg).items():
        (tmp_path / "rules" / path.name).write_text(text, encoding="utf-8")
    groups = [g["name"] for name in ("recording.yml", "alerts.yml")
              for g in yaml.safe_load((tmp_path / "rules" / name).read_text(encoding="utf-8"))["groups"]]
    test = {
        "rule_files": ["rules/recording.yml", "rules/alerts.yml"],
        "evaluation_interval": "1m",
        "group_eval_order": groups,
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": name, "values": " ".join("_" if v is None else repr(v) for v in values)}
                             for name, values in demo_series().items()],
            "alert_rule_test": [{"eval_time": f"{minute}m", "alertname": name, "exp_alerts": []}
                                for minute in range(FIRST_EVAL, MINUTES + 1) for name in LATENCY_ALERTS],
        }],
    }
    (tmp_path / "demo_test.yml").write_text(yaml.safe_dump(test, sort_keys=False), encoding="utf-8")
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH (Debian: apt-get install prometheus)")
    return subprocess.run([promtool, "test", "rules", "demo_test.yml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)


def test_the_demo_has_reasoning_traffic() -> None:
    models = {name.split('model="')[1].split('"')[0] for name in demo_series()}
    assert {"o3", "o4-mini"} <= models, models


def test_demo_fires_no_latency_alert_with_the_shipped_thresholds(tmp_path: Path) -> None:
    result = promtool_test(tmp_path, thresholds.load())
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def test_without_model_classes_the_reasoning_models_would_fire(tmp_path: Path) -> None:
    cfg = thresholds.load()
    cfg.pop("model_classes")
    for name in LATENCY_ALERTS:
        cfg["alerts"][name].pop("class_p95_seconds")
    result = promtool_test(tmp_path, cfg)
    assert result.returncode != 0, "the demo is quiet even at the chat thresholds: the test shows nothing"
    output = result.stdout + result.stderr
    fired = set(re.findall(r'Labels:\{alertname="LLMModelHigh\w+", model="([^"]+)"', output))
    classified = {model for model in fired
                  if any(re.fullmatch(p, model) for patterns in thresholds.load()["model_classes"].values()
                         for p in patterns)}
    assert "o3" in fired, output[-4000:]  # the demo's reasoning model
    assert fired == classified, f"models in no class fired at the chat thresholds: {fired - classified}"
