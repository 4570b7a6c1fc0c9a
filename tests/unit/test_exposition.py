"""The fast writer renders exactly the samples prometheus-client renders, in both formats, scrape
after scrape while its caches see series change, appear and disappear."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.core import exposition
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


TEXT, OPENMETRICS = "text/plain; version=0.0.4", "application/openmetrics-text; version=1.0.0"
tricky_value = st.one_of(label_value, st.sampled_from(['q"uo"te', "back\\slash", "new\nline", '\\"\n', "é✓"]))


def assert_scrape_matches_reference(ex) -> None:
    """Both formats, plain and gzip, give exactly prometheus-client's usage samples of the state now."""
    reference = usage_samples(parse_text(generate_latest(ex.registry).decode()))
    for accept, parse in ((TEXT, parse_text), (OPENMETRICS, parse_openmetrics)):
        for body in ex.render_metrics(accept)[0], gzip.decompress(ex.render_metrics(accept, gzipped=True)[0]):
            assert usage_samples(parse(body.decode())) == reference


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_cached_blocks_follow_every_change_between_scrapes(data):
    """Blocks of 2 series, so a handful of series spans many blocks and a removal shifts the ones after
    it; histograms are updated in place, as the aggregator may."""
    ex = make_exporter()
    series = ex.aggregator.series
    specs = [m.REQUESTS, m.COST, m.DURATION]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exposition, "_BLOCK", 2)
        for _ in range(data.draw(st.integers(1, 5))):  # scrapes
            for _ in range(data.draw(st.integers(0, 6))):  # changes before each
                spec = data.draw(st.sampled_from(specs))
                store = series[spec.name]
                action = data.draw(st.sampled_from(["set", "remove", "add"] if store else ["add"]))
                if action == "add":
                    labels = tuple(data.draw(tricky_value) for _ in spec.labels)
                else:
                    labels = data.draw(st.sampled_from(sorted(store)))
                if action == "remove":
                    del store[labels]
                elif spec.kind == "histogram":
                    hist = store.setdefault(labels, [0.0] + [0] * (len(spec.buckets) + 1))
                    hist[0] += data.draw(st.floats(0, 1e6, allow_nan=False))
                    hist[1 + data.draw(st.integers(0, len(spec.buckets)))] += 1
                else:
                    store[labels] = data.draw(counter_value)
            assert_scrape_matches_reference(ex)


def test_a_scrape_shows_new_values_drops_removed_series_and_keeps_escaping():
    """Over several blocks of the real size: what changed, what left and what stayed, by name."""
    ex = make_exporter()
    requests = ex.aggregator.series[m.REQUESTS.name]
    odd = ('q"uo"te', "back\\slash", "new\nline", "gpt-4o", "openai", "chat")
    for i in range(3 * exposition._BLOCK):
        requests[("acme", f"c{i}", "gpt-4o", "openai", "chat", "ok")] = i
    requests[odd] = 7
    assert_scrape_matches_reference(ex)

    def scrape() -> tuple[str, dict[str, float]]:
        body = ex.render_metrics(TEXT)[0].decode()
        return body, {s.labels["customer"]: s.value for f in parse_text(body) if f.name == "llm_requests"
                      for s in f.samples}

    requests[("acme", "c5", "gpt-4o", "openai", "chat", "ok")] = 1_000_001  # same keys, new values
    requests[odd] = 8
    body, samples = scrape()
    assert 'customer="c5",model="gpt-4o",provider="openai",operation="chat",status="ok"} 1000001.0\n' in body
    assert 'llm_requests_total{tenant="q\\"uo\\"te",customer="back\\\\slash",model="new\\nline",' in body
    assert samples["back\\slash"] == 8 and samples["c4"] == 4 and len(samples) == 3 * exposition._BLOCK + 1
    del requests[("acme", "c6", "gpt-4o", "openai", "chat", "ok")]  # every block after it shifts
    body, samples = scrape()
    assert 'customer="c6",' not in body and "c6" not in samples and len(samples) == 3 * exposition._BLOCK
    assert samples["c5"] == 1_000_001 and samples["c7"] == 7 and samples["back\\slash"] == 8
    assert_scrape_matches_reference(ex)


@pytest.mark.parametrize("deflate", ["isal", "zlib"])
def test_gzip_body_is_one_member_of_pieces_compressed_apart(deflate):
    """Blocks compressed apart (ISA-L where installed, zlib elsewhere) join into one gzip member whose
    CRC and length check out, and a changed block recompresses alone."""
    module = pytest.importorskip("isal.isal_zlib") if deflate == "isal" else zlib
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exposition, "_deflate", module)
        ex = make_exporter()
        requests = ex.aggregator.series[m.REQUESTS.name]
        for i in range(2 * exposition._BLOCK + 5):
            requests[("acme", f"c{i}", "gpt-4o", "openai", "chat", "ok")] = i
        first = ex.render_metrics(TEXT, gzipped=True)[0]
        requests[("acme", "c3", "gpt-4o", "openai", "chat", "ok")] = 99
        before = ex.writer._blocks[m.REQUESTS.name]
        second = ex.render_metrics(TEXT, gzipped=True)[0]
        after = ex.writer._blocks[m.REQUESTS.name]
        assert after[0] is not before[0] and all(a is b for a, b in zip(after[1:], before[1:], strict=True))
        for body, c3 in ((first, 3), (second, 99)):
            reader = zlib.decompressobj(wbits=31)  # one gzip member, nothing after it
            text = reader.decompress(body).decode()
            assert reader.eof and reader.unused_data == b""
            assert gzip.decompress(body).decode() == text  # checks the CRC and the length
            samples = {s.labels["customer"]: s.value for f in parse_text(text) if f.name == "llm_requests"
                       for s in f.samples}
            assert samples["c3"] == c3 and samples["c2052"] == 2052 and len(samples) == 2 * exposition._BLOCK + 5
