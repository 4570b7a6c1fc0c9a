"""The README tells the truth: the two commands, every metric with its type and labels, every flag."""

from __future__ import annotations

import re

from exporter.core import metrics as m
from exporter.config import OPTIONS
from harness import REPO

README = (REPO / "README.md").read_text()
MAKEFILE = (REPO / "Makefile").read_text()


def test_first_screen_has_the_two_commands():
    first_screen = "\n".join(README.splitlines()[:25])
    assert "make run" in first_screen and "make test" in first_screen


def test_ci_runs_exactly_the_readme_test_command():
    first_screen = "\n".join(README.splitlines()[:25])
    assert re.search(r"^make test\b", first_screen, re.M)
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")
                and not line.startswith(("set -", 'cd "$(dirname'))]
    assert commands == ["make test"], "CI runs what the README says and nothing else"


def _make_variable(name: str) -> list[str]:
    match = re.search(rf"^{name}\s*:=(.*)$", MAKEFILE, re.M)
    assert match, f"Makefile has no {name}"
    return match.group(1).split()


def test_make_test_installs_every_binary_the_tests_run():
    assert re.search(r"^test: venv deps$", MAKEFILE, re.M)
    binaries = _make_variable("TEST_BINARIES")
    packages = _make_variable("TEST_PACKAGES")
    assert {"prometheus", "prometheus-alertmanager", "victoria-metrics", "chromium", "chromium-driver"} <= set(packages)
    assert "apt-get update && apt-get install -y $(TEST_PACKAGES)" in MAKEFILE
    used = {name for path in (REPO / "tests").rglob("*.py")
            for name in re.findall(r"""(?:require_binary|shutil\.which)\(["']([\w.-]+)["']\)""", path.read_text())}
    assert used and used <= set(binaries), f"tests run {sorted(used - set(binaries))}, which make test does not install"


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


def test_every_otlp_attribute_we_read_is_documented():
    from exporter.formats import otlp
    names = [n for names in otlp.TOKEN_ATTRIBUTES.values() for n in names]
    names += [*otlp.MODEL_ATTRIBUTES, *otlp.PROVIDER_ATTRIBUTES, *otlp.SERVICE_TIER_ATTRIBUTES,
              *otlp.TTFT_ATTRIBUTES, otlp.RESPONSE_ID_ATTRIBUTE, *(name for name, _ in otlp.LEGACY_OPERATIONS)]
    assert [n for n in names if f"`{n}`" not in README] == []


def test_the_event_field_table_is_the_rule_table():
    """Every field of the event rules (exporter/core/events.py RULES) has a row in the README's field
    table, and the table documents no field the rules do not have (``usage`` rides with ``usage_format``)."""
    from exporter.core.events import RULES
    table = README.split("| field | type | rule |", 1)[1].split("\n\n", 1)[0]
    documented = {name for row in table.splitlines()[2:] for name in re.findall(r"`([a-z_0-9]+)`", row.split("|")[1])}
    assert documented == {rule.name for rule in RULES} | {"usage"}
