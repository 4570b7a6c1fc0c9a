"""One table of request cases run against every ingest format: /v1/events (JSON), OTLP/JSON and
OTLP/protobuf must answer each case with the same status, because they share one front door.

The events are built once as dicts; each format encodes them its own way (an OTLP span per event,
with the tenant and customer as attributes), so a difference in status is a difference in the rules.
"""

from __future__ import annotations

import gzip
import time
import zlib
from typing import Any, Callable

import orjson
import pytest
import zstandard
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, \
    ExportTraceServiceResponse
from starlette.testclient import TestClient

from exporter.server.app import create_app
from helpers import ev, make_exporter, sample

TOKEN_A = "acme-secret-token-0123456789"
TOKEN_B = "globex-secret-token-0123456789"
OTLP = "/v1/otlp/v1/traces"


def otlp_request(events: list[dict[str, Any]]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n, event in enumerate(events):
        span = scope.spans.add()
        span.trace_id = abs(hash(event["id"])).to_bytes(16, "big")
        span.span_id = (n + 1).to_bytes(8, "big")
        end = int(event["timestamp"] * 1e9)
        span.start_time_unix_nano, span.end_time_unix_nano = end - int(event["duration_ms"] * 1e6), end
        for key, value in (("gen_ai.request.model", event["model"]), ("tenant.id", event["tenant"]),
                           ("customer.id", event["customer"])):
            attribute = span.attributes.add()
            attribute.key, attribute.value.string_value = key, value
        for key, value in (("gen_ai.usage.input_tokens", event["input_tokens"]),
                           ("gen_ai.usage.output_tokens", event["output_tokens"])):
            attribute = span.attributes.add()
            attribute.key, attribute.value.int_value = key, value
    return request


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    document = json_format.MessageToDict(request)
    for resource_spans in document.get("resourceSpans", []):  # OTLP/JSON writes ids as hex
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId"):
                    span[key] = __import__("base64").b64decode(span[key]).hex()
    return orjson.dumps(document)


# name → (path, content type, encode events → body, accepted count from a 200 response)
FORMATS: dict[str, tuple[str, str, Callable[[list[dict[str, Any]]], bytes], Callable[[Any], int]]] = {
    "events-json": ("/v1/events", "application/json", lambda events: orjson.dumps({"events": events}),
                    lambda r: r.json()["accepted"]),
    "otlp-json": (OTLP, "application/json", lambda events: otlp_json(otlp_request(events)),
                  lambda r: -r.json().get("partialSuccess", {}).get("rejectedSpans", 0)),
    "otlp-protobuf": (OTLP, "application/x-protobuf", lambda events: otlp_request(events).SerializeToString(),
                      lambda r: -ExportTraceServiceResponse.FromString(r.content).partial_success.rejected_spans),
}


def deflate(data: bytes) -> bytes:
    return zlib.compress(data)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def two_gzip_members(data: bytes) -> bytes:
    return gzip.compress(data[:10]) + gzip.compress(data[10:])


# name → (token, tenant of the events, number of events, body transform, extra headers, status)
CASES: dict[str, tuple[str | None, str, int, Callable[[bytes], bytes], dict[str, str], int]] = {
    "ok": (TOKEN_A, "acme", 2, lambda b: b, {}, 200),
    "no token": (None, "acme", 1, lambda b: b, {}, 401),
    "unknown token": ("nope-0123456789abcdef", "acme", 1, lambda b: b, {}, 401),
    "token in query": (TOKEN_A, "acme", 1, lambda b: b, {"?": "access_token=x"}, 401),
    "other tenant's events": (TOKEN_A, "globex", 1, lambda b: b, {}, 403),
    "batch over the event limit": (TOKEN_A, "acme", 4, lambda b: b, {}, 413),
    "body over the byte limit": (TOKEN_A, "acme", 1, lambda b: b + b" " * 20_000, {}, 413),
    "gzip": (TOKEN_A, "acme", 2, gzip.compress, {"Content-Encoding": "gzip"}, 200),
    "gzip, two members": (TOKEN_A, "acme", 2, two_gzip_members, {"Content-Encoding": "gzip"}, 200),
    "deflate (zlib)": (TOKEN_A, "acme", 2, deflate, {"Content-Encoding": "deflate"}, 200),
    "deflate (raw)": (TOKEN_A, "acme", 2, raw_deflate, {"Content-Encoding": "deflate"}, 200),
    "zstd": (TOKEN_A, "acme", 2, zstandard.ZstdCompressor().compress, {"Content-Encoding": "zstd"}, 200),
    "identity": (TOKEN_A, "acme", 2, lambda b: b, {"Content-Encoding": "identity"}, 200),
    "unknown encoding": (TOKEN_A, "acme", 1, lambda b: b, {"Content-Encoding": "br"}, 415),
    "two encodings": (TOKEN_A, "acme", 1, lambda b: gzip.compress(gzip.compress(b)),
                      {"Content-Encoding": "gzip, gzip"}, 415),
    "not gzip": (TOKEN_A, "acme", 1, lambda b: b, {"Content-Encoding": "gzip"}, 400),
    "truncated gzip": (TOKEN_A, "acme", 1, lambda b: gzip.compress(b)[:-6], {"Content-Encoding": "gzip"}, 400),
    "gzip + trailing garbage": (TOKEN_A, "acme", 1, lambda b: gzip.compress(b) + b"xyz",
                                {"Content-Encoding": "gzip"}, 400),
    "gzip + one trailing byte": (TOKEN_A, "acme", 1, lambda b: gzip.compress(b) + b"\0",
                                 {"Content-Encoding": "gzip"}, 400),
    "bad gzip checksum": (TOKEN_A, "acme", 1, lambda b: gzip.compress(b)[:-8] + b"\0" * 8,
                          {"Content-Encoding": "gzip"}, 400),
    "deflate + trailing garbage": (TOKEN_A, "acme", 1, lambda b: deflate(b) + b"xyz",
                                   {"Content-Encoding": "deflate"}, 400),
    "zstd garbage": (TOKEN_A, "acme", 1, lambda b: b"\x28\xb5\x2f\xfd garbage", {"Content-Encoding": "zstd"}, 400),
    "gzip inflating past the limit": (TOKEN_A, "acme", 1, lambda b: gzip.compress(b + b" " * 50_000),
                                      {"Content-Encoding": "gzip"}, 413),
    "zstd inflating past the limit": (TOKEN_A, "acme", 1,
                                      lambda b: zstandard.ZstdCompressor().compress(b + b" " * 50_000),
                                      {"Content-Encoding": "zstd"}, 413),
    "wrong content type": (TOKEN_A, "acme", 1, lambda b: b, {"Content-Type": "text/plain"}, 415),
}


@pytest.fixture
def app(tmp_path):
    (tmp_path / "a").write_text(TOKEN_A + "\n")
    (tmp_path / "b").write_text(TOKEN_B + "\n")
    ex = make_exporter(auth_mode="required", web_max_batch_events=3, web_max_body_bytes=10_000,
                       yaml={"tenants": {"acme": {"token_file": str(tmp_path / "a")},
                                         "globex": {"token_file": str(tmp_path / "b")}}})
    with TestClient(create_app(ex.config, exporter=ex)) as client:
        client.exporter = ex
        yield client


def send(client: TestClient, fmt: str, events: list[dict[str, Any]], token: str | None,
         transform: Callable[[bytes], bytes] = lambda b: b, headers: dict[str, str] | None = None) -> Any:
    path, content_type, encode, _ = FORMATS[fmt]
    headers = {"Content-Type": content_type, **(headers or {})}
    query = headers.pop("?", "")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return client.post(path + (f"?{query}" if query else ""), content=transform(encode(events)), headers=headers)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("case", list(CASES))
def test_every_format_answers_the_same_table(app, fmt, case):
    token, tenant, n, transform, headers, status = CASES[case]
    events = [ev(tenant=tenant) for _ in range(n)]
    response = send(app, fmt, events, token, transform, headers)
    assert response.status_code == status, (case, fmt, response.text[:300])
    if status == 200:
        assert FORMATS[fmt][3](response) in (n, 0)  # /v1/events: accepted; OTLP: no rejected spans
        assert sample(app.exporter, "llm_requests_total", tenant=tenant, customer="c1", model="gpt-4o",
                      provider="openai", operation="chat", status="ok") == n
    else:
        assert "error" in response.json()
        assert sample(app.exporter, "llm_requests_total", tenant=tenant, customer="c1", model="gpt-4o",
                      provider="openai", operation="chat", status="ok") is None


def test_rate_limits_apply_to_every_format_alike():
    """acme may send 5 events/s (a 10-event burst): whichever endpoint spends the burst, the next
    batch is refused with 429 on all of them, and globex is not affected."""
    table = {}
    for fmt in FORMATS:
        ex = make_exporter(yaml={"tenants": {"acme": {"rate_limit_events_per_second": 5}, "globex": {}}})
        with TestClient(create_app(ex.config, exporter=ex)) as client:
            first = send(client, fmt, [ev(tenant="acme") for _ in range(10)], None)
            second = {other: send(client, other, [ev(tenant="acme") for _ in range(5)], None)
                      for other in FORMATS}
            spared = send(client, fmt, [ev(tenant="globex") for _ in range(10)], None)
        table[fmt] = (first.status_code, {k: r.status_code for k, r in second.items()}, spared.status_code)
        assert first.status_code == 200
        assert all(r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 for r in second.values()), table[fmt]
        assert spared.status_code == 200
        assert sample(ex, "llm_exporter_rejections_total", reason="rate_limited", tenant="acme") == len(FORMATS)
    print("\nrate limit table (acme 5/s, burst 10): burst of 10 via <row>, then 5 more via each column",
          *(f"{fmt:>14}: {row}" for fmt, row in table.items()), sep="\n")


def test_store_down_is_503_nothing_counted_on_every_format(tmp_path):
    ex = make_exporter(tmp_path)
    with TestClient(create_app(ex.config, exporter=ex)) as client:
        ex.store.close()
        (tmp_path / "state.db").unlink()
        (tmp_path / "state.db").mkdir()  # the path can no longer be opened as a database
        for fmt in FORMATS:
            response = send(client, fmt, [ev()], None)
            assert response.status_code == 503, (fmt, response.text)
            assert "nothing from this request was counted" in response.json()["error"]
    assert sample(ex, "llm_exporter_events_total", source="api", result="accepted") is None


def test_otlp_warnings_reach_partial_success(app):
    response = send(app, "otlp-json", [ev(tenant="acme", model="no-such-model-xyz")], TOKEN_A)
    assert response.status_code == 200
    partial = response.json()["partialSuccess"]
    assert "rejectedSpans" not in partial and "no price for model 'no-such-model-xyz'" in partial["errorMessage"]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_big_batches_are_counted_whole_through_the_steps(fmt):
    """Past the pause interval of Aggregator.ingest_steps and the off-loop decode size, a batch is
    still counted exactly once, with per-event errors at their batch index."""
    ex = make_exporter(web_max_batch_events=5000)
    events = [ev(customer=f"c{i % 7}") for i in range(4000)]
    events[3333]["input_tokens"] = -1  # one bad event: the per-event path, and its index must be right
    with TestClient(create_app(ex.config, exporter=ex)) as client:
        response = send(client, fmt, events, None)
    assert response.status_code == 200
    total = sum(sample(ex, "llm_requests_total", tenant="acme", customer=f"c{c}", model="gpt-4o", provider="openai",
                       operation="chat", status="ok") or 0 for c in range(7))
    assert total == 3999
    if fmt == "events-json":
        assert response.json()["errors"][0]["index"] == 3333
