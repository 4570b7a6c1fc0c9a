"""The README tells the truth: the two commands, every metric with its type and labels, every flag."""

from __future__ import annotations

import re

from exporter.core import metrics as m
from exporter.config import OPTIONS
from harness import REPO

README = (REPO / "README.md").read_text()


def test_first_screen_has_the_two_commands():
    first_screen = "\n".join(README.splitlines()[:25])
    assert "make run" in first_screen and "make test" in first_screen


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    assert "apt-get update" in ci and "prometheus-alertmanager" in ci


def test_metrics_table_matches_the_contract():
    rows = re.findall(r"^\| `(llm_[a-z_]+)` \| (\w+) \| ([^|]+) \| ([^|]+) \|$", README, re.M)
    documented = {name: (kind, labels.strip()) for name, kind, labels, _ in rows}
    expected = {spec.exposed_name: (spec.kind, ", ".join(spec.labels) or "—") for spec in m.ALL_METRICS}
    assert documented == expected


def test_every_flag_is_documented():
    missing = [option.name for option in OPTIONS if option.name not in README]
    assert not missing


def test_no_placeholder_left():
    assert "PLACEHOLDER" not in README


def test_every_usage_format_is_in_the_mapping_table():
    from exporter.formats.vendor_usage import USAGE_FORMATS
    rows = set(re.findall(r"^\| `([a-z]+)`[^|]*\| `usage", README, re.M))
    assert rows == set(USAGE_FORMATS)
