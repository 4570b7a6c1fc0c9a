"""LLMExporterDown with the real Prometheus: stop the exporter and see the alert go active.

Prometheus loads the committed rule files with every alert's ``for:`` divided by 150 (the real 5m
becomes 2s); the expression is the committed one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from harness import RULES_DIR, ExporterProcess, PrometheusProcess, wait_until

FOR_DIVISOR = 150  # 5m -> 2s, as in test_alertmanager_e2e.py
ALERT = "LLMExporterDown"


def fast_rule_files(directory: Path) -> list[Path]:
    """The committed rule files, copied into ``directory``; alerting rules get shortened ``for:``."""
    units = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(source.read_text(encoding="utf-8"))
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule and "for" in rule:
                    seconds = sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([wdhms])", str(rule["for"])))
                    assert seconds > 0, rule
                    rule["for"] = f"{max(1, round(seconds / FOR_DIVISOR))}s"
        target = directory / source.name
        target.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        paths.append(target)
    return paths


def exporter_down(prom: PrometheusProcess, *states: str) -> list[dict[str, Any]]:
    return [a for a in prom._api("/api/v1/alerts", {})["alerts"]
            if a["labels"].get("alertname") == ALERT and a["state"] in states]


def test_exporter_down_alert_fires_when_the_exporter_stops(tmp_path: Path) -> None:
    rules = fast_rule_files(tmp_path / "rules")
    with ExporterProcess(tmp_path / "exporter") as exporter, \
            PrometheusProcess(tmp_path / "prometheus", [f"127.0.0.1:{exporter.port}"], rules) as prom:
        instance = f"127.0.0.1:{exporter.port}"
        wait_until(lambda: prom.query('up{job="llm-usage-exporter"} == 1'), timeout=30, what="a successful scrape")
        # Up and scraped: the alert is not firing (it may be pending for a moment before the
        # first scrape, through absent(up); it must clear).
        wait_until(lambda: not exporter_down(prom, "pending", "firing"), timeout=15,
                   what=f"{ALERT} to be inactive while the exporter is up")

        exporter.stop()

        pending_or_firing = wait_until(lambda: exporter_down(prom, "pending", "firing"), timeout=20,
                                       what=f"{ALERT} pending after the exporter stopped")
        assert pending_or_firing[0]["labels"]["instance"] == instance
        firing = wait_until(lambda: exporter_down(prom, "firing"), timeout=20,
                            what=f"{ALERT} firing after the exporter stopped (for: 2s)")
        alert = firing[0]
        assert alert["labels"] == {"alertname": ALERT, "severity": "critical", "job": "llm-usage-exporter",
                                   "instance": instance}, alert["labels"]
        assert alert["annotations"]["runbook_url"].endswith("/docs/runbook.md#llmexporterdown"), alert["annotations"]
        assert instance in alert["annotations"]["description"], alert["annotations"]
        assert float(alert["value"]) == 0  # up == 0, not absent(): the target is known but fails
