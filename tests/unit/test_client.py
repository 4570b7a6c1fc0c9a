"""The client SDK against the real exporter process: batching, flush, retries, drops, exit flush.

Counts are checked where they matter, in the exporter's own /metrics; each test writes its own
tenant so tests sharing the exporter process cannot see each other's events.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.client import UsageClient
from harness import REPO, ExporterProcess, free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    with ExporterProcess(tmp_path_factory.mktemp("client-exporter")) as process:
        yield process


def metric_sum(exporter: ExporterProcess, name: str, **labels: str) -> float:
    return sum(sample.value
               for family in text_string_to_metric_families(exporter.metrics_text())
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def usage(i: int) -> dict:
    return {"customer": f"c{i % 7}", "model": "gpt-4o", "input_tokens": 100 + i, "output_tokens": i % 50,
            "duration_ms": 250.0, "status": "ok"}


class ScriptedProxy:
    """A stdlib HTTP server in front of the exporter. Each request takes the next step of the script,
    ``(status, forward)``: answer ``status`` (503 and 429 with ``Retry-After: 1``), after forwarding the
    body to the exporter when ``forward`` (a response lost on the way back). With the script used up,
    requests are forwarded and the exporter's answer is relayed."""

    def __init__(self, target: str, script: list[tuple[int, bool]]) -> None:
        self.script = deque(script)
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.requests += 1
                status, forward = proxy.script.popleft() if proxy.script else (None, True)
                payload = b'{"error": "scripted"}'
                if forward:
                    answer = httpx.post(target + self.path, content=body,
                                        headers={"Content-Type": self.headers["Content-Type"]})
                    status, payload = status or answer.status_code, payload if status else answer.content
                self.send_response(status)
                if status in (429, 503):
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_two_thousand_events_arrive_exactly_once(exporter):
    with UsageClient(exporter.url, batch_size=500) as client:
        for i in range(2000):
            client.record(tenant="bulk", **usage(i))
        assert client.flush(timeout=30)
        assert (client.sent, client.accepted, client.duplicates, client.rejected, client.dropped) == (2000, 2000, 0, 0, 0)
    assert metric_sum(exporter, "llm_requests_total", tenant="bulk") == 2000
    assert metric_sum(exporter, "llm_tokens_total", tenant="bulk", token_type="input") == sum(100 + i for i in range(2000))


def test_503_with_retry_after_is_retried_without_loss(exporter):
    with ScriptedProxy(exporter.url, [(503, False), (503, False)]) as proxy, \
            UsageClient(proxy.url, batch_size=100, flush_interval=0.05) as client:
        started = time.monotonic()
        for i in range(100):
            client.record(tenant="retry", **usage(i))
        assert client.flush(timeout=30)
        elapsed = time.monotonic() - started
        assert proxy.requests == 3
        assert (client.retries, client.accepted, client.dropped) == (2, 100, 0)
        assert elapsed >= 1.9, "Retry-After: 1 was not honoured"
    assert metric_sum(exporter, "llm_requests_total", tenant="retry") == 100


def test_retry_after_a_lost_response_is_deduplicated(exporter):
    # The exporter counts the batch but the 200 never reaches the client; the resent ids are duplicates.
    with ScriptedProxy(exporter.url, [(503, True)]) as proxy, \
            UsageClient(proxy.url, batch_size=50, flush_interval=0.05) as client:
        for i in range(50):
            client.record(tenant="lost", **usage(i))
        assert client.flush(timeout=30)
        assert (client.retries, client.accepted, client.duplicates, client.dropped) == (1, 0, 50, 0)
    assert metric_sum(exporter, "llm_requests_total", tenant="lost") == 50


def test_other_4xx_is_not_retried_and_counts_as_rejected(exporter):
    with ScriptedProxy(exporter.url, [(401, False)]) as proxy, \
            UsageClient(proxy.url, batch_size=20, flush_interval=0.05) as client:
        for i in range(20):
            client.record(tenant="refused", **usage(i))
        assert client.flush(timeout=30)
        assert (proxy.requests, client.retries, client.sent, client.rejected, client.accepted) == (1, 0, 20, 20, 0)
    assert metric_sum(exporter, "llm_requests_total", tenant="refused") == 0


def test_unreachable_exporter_drops_after_max_retries():
    with UsageClient(f"http://127.0.0.1:{free_port()}", max_retries=2, backoff=0.01, flush_interval=0.05) as client:
        for i in range(10):
            client.record(tenant="nowhere", **usage(i))
        assert client.flush(timeout=30)
        assert (client.retries, client.sent, client.dropped) == (2, 0, 10)


def test_full_buffer_drops_and_counts(exporter):
    with UsageClient(exporter.url, batch_size=1000, max_buffer=100, flush_interval=60) as client:
        for i in range(150):
            client.record(tenant="overflow", **usage(i))
        assert client.dropped == 50
        assert client.flush(timeout=30)
        assert (client.sent, client.accepted) == (100, 100)
    assert metric_sum(exporter, "llm_requests_total", tenant="overflow") == 100


def test_vendor_helpers_record_the_usage_arithmetic(exporter):
    def fixture(name: str) -> dict:
        return json.loads((FIXTURES / name).read_text())

    with UsageClient(exporter.url) as client:
        client.record_openai(fixture("openai_chat_completion.json"), tenant="vendor", customer="c1", duration_ms=1800)
        client.record_anthropic(fixture("anthropic_message.json"), tenant="vendor", customer="c1", duration_ms=2400,
                                ttft_ms=300)
        client.record_response("gemini", fixture("gemini_generate_content.json"), tenant="vendor", customer="c1",
                               duration_ms=2000)
        client.record_response("bedrock", fixture("bedrock_converse.json"), tenant="vendor", customer="c1",
                               duration_ms=1500, model="anthropic.claude-sonnet-4-20250514-v1:0")
        with pytest.raises(ValueError, match=r"usage\.input_tokens: is required"):
            client.record_anthropic({"model": "claude-sonnet-4-5", "usage": {}}, tenant="vendor", customer="c1",
                                    duration_ms=1)
        with pytest.raises(ValueError, match=r"model: is required"):  # a Converse response names no model
            client.record_response("bedrock", fixture("bedrock_converse.json"), tenant="vendor", customer="c1",
                                   duration_ms=1)
        assert client.flush(timeout=30)
        assert client.accepted == 4
    # Hand sums over the four fixtures (see tests/unit/test_vendor_usage.py for each one's arithmetic).
    assert metric_sum(exporter, "llm_tokens_total", tenant="vendor", token_type="input") == 2006 + 1679 + 5120 + 3030
    assert metric_sum(exporter, "llm_tokens_total", tenant="vendor", token_type="output") == 300 + 393 + 850 + 250
    details = {kind: metric_sum(exporter, "llm_token_details_total", tenant="vendor", token_type=kind)
               for kind in ("cache_read", "cache_write", "reasoning")}
    assert details == {"cache_read": 1920 + 1470 + 4000 + 2000, "cache_write": 64 + 188 + 1000,
                       "reasoning": 192 + 120 + 650}
    providers = {kind: metric_sum(exporter, "llm_requests_total", tenant="vendor", provider=kind)
                 for kind in ("openai", "anthropic", "gcp.gemini", "aws.bedrock")}
    assert providers == {"openai": 1, "anthropic": 1, "gcp.gemini": 1, "aws.bedrock": 1}


def test_events_recorded_just_before_exit_are_flushed(exporter):
    script = ("from exporter.client import UsageClient\n"
              f"client = UsageClient({exporter.url!r}, flush_interval=60)\n"
              "for i in range(10):\n"
              "    client.record(tenant='atexit', customer='c', model='gpt-4o', input_tokens=1, output_tokens=1,"
              " duration_ms=5, status='ok')\n")
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=60)
    assert metric_sum(exporter, "llm_requests_total", tenant="atexit") == 10
