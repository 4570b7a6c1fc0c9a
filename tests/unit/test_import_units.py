"""import: every input shape through the one ingest function, out of order, duplicated, partly bad;
the state's totals equal a hand count, the reject report names file and line, a re-run counts
nothing twice, and simulated and real data refuse to share a state."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from harness import REPO, require_binary
from helpers import ev, make_exporter, sample

from exporter.history.importer import run_import

HOUR = 3600.0


def otlp_line(trace: str, span: str, at_ns: int, attributes: dict[str, Any]) -> dict[str, Any]:
    """One OTLP/JSON ExportTraceServiceRequest line, as the Collector's file exporter writes it."""
    def value(v: Any) -> dict[str, Any]:
        return {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}
    span_json = {"traceId": trace, "spanId": span, "name": "chat gpt-4o", "kind": 3,
                 "startTimeUnixNano": str(at_ns - 2_000_000_000), "endTimeUnixNano": str(at_ns),
                 "attributes": [{"key": k, "value": value(v)} for k, v in attributes.items()], "status": {}}
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": "acme"}}]},
                               "scopeSpans": [{"spans": [span_json]}]}]}


def write_ndjson(path: Path, values: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(v) + b"\n" for v in values))
    return path


@pytest.fixture
def promtool() -> str:
    return require_binary("promtool")


def test_mixed_shapes_out_of_order_with_duplicates_and_bad_lines(tmp_path, promtool):
    now = time.time()
    old = now - 3 * HOUR
    events = [ev(id=f"n{i}", timestamp=old + (7 - i) * 600, customer=f"c{i % 3}") for i in range(8)]  # newest first
    vendor = ev(id="vendor-1", timestamp=old + 60, usage_format="openai",
                usage={"prompt_tokens": 300, "completion_tokens": 20})
    for key in ("input_tokens", "output_tokens"):
        vendor.pop(key)
    batch = {"events": [ev(id="b1", timestamp=old + 120), ev(id="b2", timestamp=old + 130, input_tokens=-5)]}
    span = otlp_line("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", int((old + 900) * 1e9),
                     {"gen_ai.request.model": "gpt-4o", "gen_ai.operation.name": "chat", "customer.id": "otel-c",
                      "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100})
    first = write_ndjson(tmp_path / "a.ndjson", [*events[:5], vendor, batch, events[1]])  # events[1] twice
    with gzip.open(tmp_path / "b.ndjson.gz", "wb") as out:
        out.write(b"".join(orjson.dumps(v) + b"\n" for v in [*events[5:], span]) + b"this is not json\n")
    document = tmp_path / "c.json"
    document.write_text(json.dumps([ev(id="d1", timestamp=old + 30), ev(id="d2", timestamp="yesterday")], indent=2))

    ex = make_exporter(tmp_path)
    report = run_import(ex.aggregator, [first, tmp_path / "b.ndjson.gz", document], tmp_path / "blocks",
                        step=300, progress=False, promtool=promtool, now=now)
    accepted_ids = 8 + 1 + 1 + 1 + 1  # n0..n7, vendor-1, b1, the span, d1
    assert (report.accepted, report.duplicates, report.rejected) == (accepted_ids, 1, 3)
    assert sample(ex, "llm_requests_total", tenant="acme", customer="c1", model="gpt-4o", provider="openai",
                  operation="chat", status="ok") == 3 + sum(1 for e in events if e["customer"] == "c1")  # vendor b1 d1
    assert sample(ex, "llm_tokens_total", tenant="acme", customer="otel-c", model="gpt-4o", provider="openai",
                  token_type="input") == 1000
    assert sample(ex, "llm_tokens_total", tenant="acme", customer="c1", model="gpt-4o", provider="openai",
                  token_type="input") == 1000 * (2 + 3) + 300  # b1 d1 and n1 n4 n7, plus the vendor event

    rejected = [json.loads(line) for line in Path(report.rejected_report).read_text().splitlines()]
    where = {(Path(r["file"]).name, r["line"], r["reason"]) for r in rejected}
    assert where == {("a.ndjson", 7, "invalid_field"), ("b.ndjson.gz", 5, "invalid_line"),
                     ("c.json", 1, "invalid_field")}
    by_id = {r["id"]: r for r in rejected}
    assert by_id["b2"]["field"] == "input_tokens" and ">= 0" in by_id["b2"]["message"]
    assert "RFC 3339" in by_id["d2"]["message"]
    assert report.blocks >= 1 and list((tmp_path / "blocks").glob("01*/meta.json"))
    assert ex.aggregator.meta["history_until"] == now
    assert ex.aggregator.sources == {"import"}


def test_rerun_counts_nothing_twice_and_older_events_are_refused(tmp_path, promtool):
    now = time.time()
    path = write_ndjson(tmp_path / "usage.ndjson", [ev(id=f"r{i}", timestamp=now - HOUR + i) for i in range(20)])
    ex = make_exporter(tmp_path)
    assert run_import(ex.aggregator, [path], tmp_path / "blocks", progress=False, promtool=promtool,
                      now=now).accepted == 20
    again = run_import(ex.aggregator, [path], tmp_path / "blocks2", progress=False, promtool=promtool, now=now + 60)
    assert again.already_imported and again.accepted == 0

    # A different file holding the same period: refused line by line (blocks for it already exist).
    edited = write_ndjson(tmp_path / "more.ndjson", [ev(id="late", timestamp=now - 10),
                                                     ev(id="new", timestamp=now + 30)])
    third = run_import(ex.aggregator, [edited], tmp_path / "blocks3", progress=False, promtool=promtool, now=now + 60)
    assert (third.accepted, third.before_history) == (1, 1)
    assert sample(ex, "llm_requests_total", tenant="acme", customer="c1", model="gpt-4o", provider="openai",
                  operation="chat", status="ok") == 21
    line = json.loads(Path(third.rejected_report).read_text())
    assert (line["line"], line["reason"], line["id"]) == (1, "before_history", "late")
    assert "before this state's history" in line["message"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_simulated_and_real_never_share_a_state(tmp_path, promtool):
    now = time.time()
    real = tmp_path / "real.db"
    path = write_ndjson(tmp_path / "usage.ndjson", [ev(id="x1", timestamp=now - 600)])
    done = run_cli("import", str(path), "--out", str(tmp_path / "b1"), f"--storage.path={real}", "--no-progress")
    assert done.returncode == 0, done.stderr

    refused = run_cli("backfill", "--days", "0.01", "--out", str(tmp_path / "b2"), f"--storage.path={real}",
                      "--no-progress")
    assert refused.returncode == 2
    assert "holds real events (sources: import)" in refused.stderr and "--storage.allow-mixed-sources" in refused.stderr
    serve = run_cli("--simulator.enabled=true", f"--storage.path={real}", "--web.listen-address=127.0.0.1:0")
    assert serve.returncode == 2 and "holds real events" in serve.stderr

    demo = tmp_path / "demo.db"
    assert run_cli("backfill", "--days", "0.01", "--out", str(tmp_path / "b3"), f"--storage.path={demo}",
                   "--no-progress").returncode == 0
    refused = run_cli("import", str(path), "--out", str(tmp_path / "b4"), f"--storage.path={demo}", "--no-progress")
    assert refused.returncode == 2 and "holds simulated history (sources: backfill)" in refused.stderr
    serve = run_cli(f"--storage.path={demo}", "--web.listen-address=127.0.0.1:0")
    assert serve.returncode == 2 and "holds simulated history" in serve.stderr
    newer = write_ndjson(tmp_path / "newer.ndjson", [ev(id="x2", timestamp=time.time() + 60)])  # after the backfill
    forced = run_cli("import", str(newer), "--out", str(tmp_path / "b5"), f"--storage.path={demo}", "--no-progress",
                     "--storage.allow-mixed-sources=true")
    assert forced.returncode == 0, forced.stderr


def test_nothing_importable_exits_non_zero(tmp_path):
    path = tmp_path / "junk.ndjson"
    path.write_text("not json\n{\"id\": 1}\n")
    result = run_cli("import", str(path), "--out", str(tmp_path / "blocks"), f"--storage.path={tmp_path / 's.db'}",
                     "--no-progress")
    assert result.returncode == 1
    assert "imported 0 of 1 events" in result.stdout and "import-rejected.ndjson" in result.stdout


def test_daily_rollups_follow_event_days(tmp_path, promtool):
    now = time.time()
    today = int(now // 86400)
    path = write_ndjson(tmp_path / "days.ndjson", [
        ev(id="d0", timestamp=(today - 2) * 86400 + 100, customer="c1"),
        ev(id="d1", timestamp=(today - 2) * 86400 + 200, customer="c2", status="error", error_type="timeout"),
        ev(id="d2", timestamp=now - 60, customer="c1", input_tokens=10, output_tokens=1)])
    ex = make_exporter(tmp_path)
    run_import(ex.aggregator, [path], tmp_path / "blocks", progress=False, promtool=promtool, now=now)
    rows = ex.aggregator.daily_rows("acme", None, 3, today)
    assert [r["events"] for r in rows] == [2, 0, 1]
    assert rows[0]["errors"] == 1 and rows[2]["input_tokens"] == 10
    assert [r["events"] for r in ex.aggregator.daily_rows("acme", "c2", 3, today)] == [1, 0, 0]
    ex.aggregator.checkpoint()
    ex.store.close()
    reopened = make_exporter(tmp_path)  # persisted like the customers table
    assert reopened.aggregator.daily_rows("acme", None, 3, today) == rows
