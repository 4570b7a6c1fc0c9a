"""End to end with real parts: the exporter under uvicorn, the real Prometheus binary scraping it
every second, and assertions through PromQL on totals this test computes itself."""

from __future__ import annotations

import random
import time

import pytest

from groundtruth import expected_cost
from harness import ExporterProcess, PrometheusProcess

MODELS = ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash", "llama-3.3-70b-versatile"]


def make_batch(rng: random.Random, now: float, n: int) -> list[dict]:
    events = []
    for i in range(n):
        input_tokens = rng.randint(10, 20_000)
        output_tokens = rng.randint(0, 4000)
        event = {"id": f"it-{i}", "timestamp": now - rng.uniform(0, 600), "tenant": rng.choice(["acme", "globex"]),
                 "customer": f"cust-{rng.randint(1, 6)}", "model": rng.choice(MODELS),
                 "input_tokens": input_tokens, "output_tokens": output_tokens,
                 "cache_read_tokens": rng.randint(0, input_tokens // 2), "reasoning_tokens": rng.randint(0, output_tokens),
                 "duration_ms": rng.choice([80, 700, 3000, 12_000]) * rng.uniform(0.9, 1.1),
                 "ttft_ms": rng.uniform(50, 70), "status": "ok"}
        if rng.random() < 0.2:
            event.update(status="error", error_type=rng.choice(["timeout", "rate_limited", "server_error"]))
        events.append(event)
    return events


def test_prometheus_sees_exactly_what_was_sent(tmp_path):
    rng = random.Random(1234)
    now = time.time()
    good = make_batch(rng, now, 300)
    invalid = [dict(good[0], id="bad-1", input_tokens=-5), dict(good[1], id="bad-2", status="maybe"),
               dict(good[2], id="bad-3", timestamp=now + 3600), {"id": "bad-4"}]
    duplicates = [dict(good[5]), dict(good[6])]
    batch = good[:150] + invalid + duplicates + good[150:]

    exp_cost = sum(expected_cost(e) for e in good)
    exp_tokens = {"input": sum(e["input_tokens"] for e in good), "output": sum(e["output_tokens"] for e in good)}
    exp_errors = sum(e["status"] == "error" for e in good)
    exp_cache = sum(e["cache_read_tokens"] for e in good)

    with ExporterProcess(tmp_path / "exporter") as exporter, \
            PrometheusProcess(tmp_path / "prom", [f"127.0.0.1:{exporter.port}"]) as prom:
        response = exporter.post(batch)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["accepted"], body["duplicates"], body["rejected"]) == (300, 2, 4)
        assert sorted({e["index"] for e in body["errors"]}) == [150, 151, 152, 153]
        sent = time.time()
        prom.wait_for_scrape_after(sent)

        assert prom.scalar("sum(llm_cost_usd_total)") == pytest.approx(exp_cost, rel=1e-12, abs=1e-9)
        assert prom.by_label("sum by (token_type) (llm_tokens_total)", "token_type") == exp_tokens
        assert prom.scalar('sum(llm_requests_total{status="error"})') == exp_errors
        assert prom.scalar('sum(llm_token_details_total{token_type="cache_read"})') == exp_cache
        assert prom.scalar('sum(llm_exporter_events_total{result="rejected"})') == 4
        per_tenant = prom.by_label("sum by (tenant) (llm_cost_usd_total)", "tenant")
        for tenant in ("acme", "globex"):
            assert per_tenant[tenant] == pytest.approx(sum(expected_cost(e) for e in good if e["tenant"] == tenant))

        # Durations cluster at 80 ms, 700 ms, 3 s and 12 s (±10 %); the median must land in the bucket
        # holding the true median, and histogram_quantile interpolates within the bucket bounds.
        durations = sorted(e["duration_ms"] / 1000 for e in good)
        true_p50 = durations[len(durations) // 2]
        p50 = prom.scalar("histogram_quantile(0.5, sum by (le) (llm_request_duration_seconds_bucket))")
        bounds = [0.01 * 2 ** i for i in range(17)]
        upper = next(b for b in bounds if b >= true_p50 - 1e-9)
        lower = bounds[bounds.index(upper) - 1]
        assert lower <= p50 <= upper, (p50, true_p50)
        ttft_p99 = prom.scalar("histogram_quantile(0.99, sum by (le) (llm_time_to_first_token_seconds_bucket))")
        assert 0.04 <= ttft_p99 <= 0.08  # every TTFT was 50-70 ms: the 0.04-0.06 and 0.06-0.08 buckets

        # Restart on the same state file: counters continue, duplicates stay duplicates.
        exporter.stop()
        exporter.start()
        again = exporter.post(good[:10] + [dict(good[0], id="fresh-1")]).json()
        assert (again["accepted"], again["duplicates"]) == (1, 10)
        prom.wait_for_scrape_after(time.time())
        assert prom.scalar("sum(llm_cost_usd_total)") == pytest.approx(exp_cost + expected_cost(good[0]), rel=1e-12)
        assert prom.scalar('sum(llm_requests_total)') == 301
        # Prometheus saw no counter reset across the restart.
        assert prom.scalar("sum(resets(llm_requests_total[5m]))") == 0


def test_bad_requests_leave_counters_untouched(tmp_path):
    with ExporterProcess(tmp_path / "exporter") as exporter:
        client = exporter.client
        cases = [
            (client.post("/v1/events", content=b"{not json", headers={"Content-Type": "application/json"}), 400),
            (client.post("/v1/events", content=b'{"events": 5}', headers={"Content-Type": "application/json"}), 400),
            (client.post("/v1/events", content=b'{"events": []}', headers={"Content-Type": "text/csv"}), 415),
            (client.post("/v1/events", content=b"x" * (11 * 1024 * 1024),
                         headers={"Content-Type": "application/json"}), 413),
            (client.get("/v1/events"), 405),
        ]
        for response, status in cases:
            assert response.status_code == status, response.text
        text = exporter.metrics_text()
        assert "llm_requests_total{" not in text
        assert 'llm_exporter_rejections_total{reason="bad_request",tenant=""} 2.0' in text
        assert 'llm_exporter_rejections_total{reason="too_large",tenant=""} 1.0' in text


def test_foreign_and_missing_tokens_over_real_http(tmp_path):
    tokens = tmp_path / "acme.token"
    tokens.write_text("acme-token-abcdefghijklmnop\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"tenants:\n  acme: {{token_file: {tokens}}}\n  globex: {{token_env: GLOBEX_TOKEN}}\n")
    event = {"id": "1", "timestamp": time.time(), "tenant": "globex", "customer": "c", "model": "gpt-4o",
             "input_tokens": 1, "output_tokens": 1, "duration_ms": 5, "status": "ok"}
    with ExporterProcess(tmp_path / "exporter", f"--config.file={config}",
                         env={"GLOBEX_TOKEN": "globex-token-abcdefghijklmnop"}) as exporter:
        assert exporter.post([event]).status_code == 401
        assert exporter.post([event], token="acme-token-abcdefghijklmnop").status_code == 403
        assert exporter.post([event], token="globex-token-abcdefghijklmnop").json()["accepted"] == 1
        log = exporter.log_path.read_text()
        assert "abcdefghijklmnop" not in log, "tokens never reach the log"
