"""The fast writer renders exactly the samples prometheus-client renders, in both formats."""

from __future__ import annotations

import shutil
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.core import metrics as m
from helpers import ev, make_exporter

label_value = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
counter_value = st.one_of(st.integers(0, 2**62), st.floats(0, 1e12, allow_nan=False))


def usage_samples(families) -> list:
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples
                  if any(f.name == spec.name for spec in m.USAGE_METRICS))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fast_writer_matches_prometheus_client(data):
    ex = make_exporter()
    series = ex.aggregator.series
    for spec in m.USAGE_METRICS:
        for _ in range(data.draw(st.integers(0, 3))):
            labels = tuple(data.draw(label_value) for _ in spec.labels)
            if spec.kind == "histogram":
                counts = data.draw(st.lists(st.integers(0, 10**6), min_size=len(spec.buckets) + 1,
                                            max_size=len(spec.buckets) + 1))
                series[spec.name][labels] = [data.draw(st.floats(0, 1e9, allow_nan=False)), *counts]
            else:
                series[spec.name][labels] = data.draw(counter_value)
    reference = generate_latest(ex.registry).decode()
    ours = ex.render_metrics("")[0].decode()
    assert usage_samples(parse_text(ours)) == usage_samples(parse_text(reference))
    om, content_type = ex.render_metrics("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert usage_samples(parse_openmetrics(om.decode())) == usage_samples(parse_text(reference))


def test_fast_writer_text_output_passes_promtool():
    """promtool reads the text format; the OpenMetrics output is checked by the OpenMetrics parser above."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (apt-get install prometheus)"
    ex = make_exporter()
    ex.aggregator.ingest([ev(customer='quo"te\\back\nline', ttft_ms=10, cache_read_tokens=5, status="error",
                             error_type="timeout"), ev(operation="agent_run", llm_calls=2)], "api")
    body = ex.render_metrics("text/plain")[0]
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
