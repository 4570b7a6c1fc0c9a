"""The state store fails under a running exporter: POST gets 503 and counts nothing, /readyz is 503,
and both recover by themselves once the store does.

How the store is broken, and why that way: the tests run as root, and root ignores file permissions,
so ``chmod a-w`` on the state directory breaks nothing. Two failures that hold for root too:

1. **Disk full, for this process only**: ``RLIMIT_FSIZE=0`` set on the running exporter with
   ``prlimit(2)`` (allowed for a process of the same user, no privilege needed). The kernel refuses any
   write that extends a file with ``EFBIG`` (Python ignores ``SIGXFSZ``), so the next WAL append fails
   exactly like a full disk ("disk I/O error"). The failed write makes ``StateStore._fail`` close the
   connection, which also releases the exclusive lock the exporter holds on the database.
2. **Lock held by another process**: while the exporter's connection is closed, a second process opens
   the same database and holds ``BEGIN EXCLUSIVE``. With the disk limit lifted the exporter reopens
   its connection on the next request but cannot take the write lock ("database is locked" after its
   0.5 s busy timeout). Committing the other process's transaction lets the exporter recover.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import ExporterProcess, wait_until

LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


def batch(prefix: str, n: int) -> list[dict]:
    now = time.time()
    return [{"id": f"{prefix}-{i}", "timestamp": now - 1, "tenant": "acme", "customer": f"c{i % 3}",
             "model": "gpt-4o", "input_tokens": 100, "output_tokens": 10, "duration_ms": 500, "status": "ok"}
            for i in range(n)]


def scrape(exporter: ExporterProcess) -> dict[str, float]:
    """Totals that matter here: usage requests, and a few self-metrics."""
    out: dict[str, float] = {"requests": 0.0}
    for family in text_string_to_metric_families(exporter.metrics_text()):
        for s in family.samples:
            if s.name == "llm_requests_total":
                out["requests"] += s.value
            elif s.name == "llm_exporter_store_up":
                out["store_up"] = s.value
            elif s.name == "llm_exporter_rejections_total" and s.labels["reason"] == "store_unavailable":
                out["store_503s"] = s.value
    return out


def set_file_size_limit(pid: int, soft: int) -> None:
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def assert_503(response, cause: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers.get("Retry-After") == "5"
    message = response.json()["error"]
    assert "state store" in message and cause in message, message


def test_store_failure_gives_503_counts_nothing_and_recovers(tmp_path):
    exporter = ExporterProcess(tmp_path / "exporter")
    with exporter:
        pid = exporter.proc.pid
        before = batch("before", 10)
        assert exporter.post(before).json()["accepted"] == 10
        assert scrape(exporter)["requests"] == 10

        during = batch("during", 500)
        locker = None
        set_file_size_limit(pid, 0)  # 1. the disk is "full" for the exporter
        try:
            response = exporter.post(during)
            assert_503(response, "disk I/O error")
            assert "nothing from this request was counted" in response.json()["error"]
            assert_503(exporter.post(during), "disk I/O error")  # the reopen fails too: still 503
            ready = exporter.client.get("/readyz")
            assert ready.status_code == 503 and "disk I/O error" in ready.json()["reason"]
            assert exporter.client.get("/healthz").status_code == 200  # alive, just not ready
            state = scrape(exporter)
            assert state["requests"] == 10 and state["store_up"] == 0

            # 2. meanwhile another process takes the write lock (the exporter's connection is closed)
            locker = subprocess.Popen([sys.executable, "-c", LOCKER, exporter.storage], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
            assert locker.stdout.readline().strip() == "locked"
        finally:
            set_file_size_limit(pid, resource.RLIM_INFINITY)
        try:
            response = exporter.post(during)  # disk fine again, but the store is locked: still 503
            assert_503(response, "database is locked")
            assert exporter.client.get("/readyz").status_code == 503
            assert scrape(exporter)["requests"] == 10, "a refused request must count nothing"
        finally:
            locker.stdin.write("\n")
            locker.stdin.flush()
            assert locker.stdout.readline().strip() == "released"
            locker.wait(timeout=10)

        # Recovery without a restart: ready again, the same batch is new (nothing of it was kept).
        wait_until(lambda: exporter.client.get("/readyz").status_code == 200, timeout=10, what="/readyz 200")
        body = exporter.post(during).json()
        assert (body["accepted"], body["duplicates"], body["rejected"]) == (500, 0, 0), body
        assert exporter.post(before).json()["duplicates"] == 10
        state = scrape(exporter)
        assert state["requests"] == 510 and state["store_up"] == 1 and state["store_503s"] == 3

    # And it is all durable: a restart on the same state file shows the same totals.
    with ExporterProcess(tmp_path / "exporter", storage=exporter.storage, port=exporter.port) as again:
        assert scrape(again)["requests"] == 510
        assert again.post(during + before).json()["duplicates"] == 510


def test_readyz_is_not_ready_while_the_disk_is_full(tmp_path):
    """A nearly full disk: files may grow to 32 KiB (room to reopen the database, whose WAL index takes
    32 KiB) but not to hold a 10,000-event batch's log record (16 KiB compressed) next to what the
    database and its WAL already hold. Every POST fails, so /readyz must not say ready."""
    with ExporterProcess(tmp_path / "exporter") as exporter:
        assert exporter.post(batch("before", 10)).json()["accepted"] == 10
        set_file_size_limit(exporter.proc.pid, 32 * 1024)
        try:
            for attempt in range(3):
                assert_503(exporter.post(batch("during", 10_000)), "disk I/O error")
                ready = exporter.client.get("/readyz")
                state = scrape(exporter)
                assert state["requests"] == 10
                assert ready.status_code == 503, f"/readyz said {ready.status_code} {ready.text} while writes fail"
                assert state["store_up"] == 0
        finally:
            set_file_size_limit(exporter.proc.pid, resource.RLIM_INFINITY)


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_store_failure_refuses_whole_batch_of_mixed_events(tmp_path, content_type):
    """A batch with good, bad and duplicate events refused by the store: nothing of it counts, and its
    retry after recovery gives exactly the answer the first attempt would have given."""
    with ExporterProcess(tmp_path / "exporter") as exporter:
        assert exporter.post(batch("seen", 3)).json()["accepted"] == 3
        events = batch("new", 5) + batch("seen", 3) + [{"id": "bad", "tenant": "acme"}]
        if content_type == "application/json":
            body = orjson.dumps({"events": events})
        else:
            body = b"\n".join(orjson.dumps(e) for e in events)
        headers = {"Content-Type": content_type}
        set_file_size_limit(exporter.proc.pid, 0)
        try:
            assert_503(exporter.client.post("/v1/events", content=body, headers=headers), "disk I/O error")
        finally:
            set_file_size_limit(exporter.proc.pid, resource.RLIM_INFINITY)
        assert scrape(exporter)["requests"] == 3
        response = exporter.client.post("/v1/events", content=body, headers=headers)
        assert response.status_code == 200
        body_json = response.json()
        assert (body_json["accepted"], body_json["duplicates"], body_json["rejected"]) == (5, 3, 1)
        assert scrape(exporter)["requests"] == 8
