"""OTLP/HTTP traces in, Prometheus counters out: the real OpenTelemetry SDK and its OTLP/HTTP exporter
send GenAI spans to the real exporter process, and the counters must match what the spans carried.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from exporter.formats import PayloadError
from exporter.formats.otlp import JSON, PATH, decode_request
from harness import ExporterProcess

TOKEN_ACME = "acme-otlp-token-0123456789abcdef"


@contextlib.contextmanager
def otlp_exporter(tmp_path: Path, yaml_data: dict[str, Any] | None = None, **flags: str) -> Iterator[str]:
    """The real exporter process (the OTLP route is part of create_app); yields its base URL."""
    args = [f"--{name}={value}" for name, value in flags.items()]
    if yaml_data:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(yaml_data))
        args.append(f"--config.file={config}")
    with ExporterProcess(tmp_path / "exporter", *args) as exporter:
        yield exporter.url


def metric_sum(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics").text
    return sum(sample.value
               for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def genai_spans(n: int) -> list[dict[str, Any]]:
    """Span specs with known attributes: models, providers (new and legacy attribute), operations,
    customers from span or resource, a tenant override, cache/reasoning tokens and errors."""
    specs = []
    operations = ["chat", "chat", "embeddings", "invoke_agent", "execute_tool"]
    for i in range(n):
        anthropic = i % 3 == 0
        operation = operations[i % len(operations)]
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": "claude-sonnet-4-5" if anthropic else "gpt-4o",
            "gen_ai.usage.input_tokens": 1000 + 37 * i,
            "gen_ai.usage.output_tokens": 0 if operation == "embeddings" else 20 + 3 * i,
        }
        if anthropic:
            attributes["gen_ai.system"] = "anthropic"  # the deprecated name, still common
        else:
            attributes["gen_ai.provider.name"] = "openai"
            attributes["gen_ai.response.model"] = "gpt-4o-2024-08-06"
        if i % 4 == 0:
            attributes["gen_ai.usage.cache_read.input_tokens"] = 512
        if i % 5 == 1:
            attributes["gen_ai.usage.reasoning.output_tokens"] = 10
        if i % 2 == 0:
            attributes["customer.id"] = f"cust-{i % 6}"
        if i % 10 == 7:
            attributes["tenant.id"] = "globex"
        error = None
        if i % 8 == 3:
            attributes["error.type"] = "openai.RateLimitError" if i % 16 == 3 else "504"
            error = "upstream said no"
        specs.append({"name": f"{operation} {attributes['gen_ai.request.model']}", "attributes": attributes,
                      "error": error})
    return specs


def emit(specs: list[dict[str, Any]], endpoint: str, headers: dict[str, str] | None = None,
         resource: dict[str, Any] | None = None) -> InMemorySpanExporter:
    """Send the spans through the SDK's OTLP/HTTP exporter, plus non-GenAI parent spans that must be
    skipped; returns an in-memory copy of everything exported."""
    provider = TracerProvider(resource=Resource.create(resource or {}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, headers=headers)))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test-otlp")
    for number, spec in enumerate(specs):
        with tracer.start_as_current_span(f"POST /answer/{number}", kind=SpanKind.SERVER):
            with tracer.start_as_current_span(spec["name"], kind=SpanKind.CLIENT, attributes=spec["attributes"]) as span:
                if spec["error"]:
                    span.set_status(Status(StatusCode.ERROR, spec["error"]))
    provider.shutdown()
    return memory


def test_sdk_spans_become_counters(tmp_path):
    specs = genai_spans(50)
    attrs = [s["attributes"] for s in specs]
    with otlp_exporter(tmp_path) as url:
        memory = emit(specs, url + PATH, resource={"service.name": "chatbot", "tenant.id": "acme",
                                                    "customer.id": "internal"})
        assert len(memory.get_finished_spans()) == 100  # 50 GenAI spans and their 50 HTTP parents

        assert metric_sum(url, "llm_exporter_events_total", source="otlp", result="accepted") == 50
        assert metric_sum(url, "llm_exporter_events_total", source="otlp", result="rejected") == 0
        tenants = {t: metric_sum(url, "llm_requests_total", tenant=t) for t in ("acme", "globex")}
        assert tenants == {"globex": sum(a.get("tenant.id") == "globex" for a in attrs),
                           "acme": sum(a.get("tenant.id") is None for a in attrs)}
        assert metric_sum(url, "llm_requests_total", customer="internal") == sum("customer.id" not in a for a in attrs)
        # Agent runs carry no tokens of their own (their model calls are counted as their own events).
        billed = [a for a in attrs if a["gen_ai.operation.name"] != "invoke_agent"]
        assert metric_sum(url, "llm_tokens_total", token_type="input") == sum(a["gen_ai.usage.input_tokens"] for a in billed)
        assert metric_sum(url, "llm_tokens_total", token_type="output") == sum(a["gen_ai.usage.output_tokens"] for a in billed)
        assert metric_sum(url, "llm_token_details_total", token_type="cache_read") == 512 * sum(
            "gen_ai.usage.cache_read.input_tokens" in a for a in billed)
        assert metric_sum(url, "llm_token_details_total", token_type="reasoning") == 10 * sum(
            "gen_ai.usage.reasoning.output_tokens" in a for a in billed)
        assert metric_sum(url, "llm_requests_total", provider="anthropic") == sum("gen_ai.system" in a for a in attrs)
        assert metric_sum(url, "llm_requests_total", model="gpt-4o") == sum("gen_ai.provider.name" in a for a in attrs)
        for ours, theirs in (("agent_run", "invoke_agent"), ("tool_call", "execute_tool"), ("embeddings", "embeddings")):
            assert metric_sum(url, "llm_requests_total", operation=ours) == sum(
                a["gen_ai.operation.name"] == theirs for a in attrs)
        assert metric_sum(url, "llm_requests_total", status="error") == sum(s["error"] is not None for s in specs)
        assert metric_sum(url, "llm_request_errors_total", error_type="rate_limited") == sum(
            a.get("error.type") == "openai.RateLimitError" for a in attrs)
        assert metric_sum(url, "llm_request_errors_total", error_type="timeout") == sum(
            a.get("error.type") == "504" for a in attrs)

        # An exporter retrying the same spans: trace id + span id dedupe them.
        replay = OTLPSpanExporter(endpoint=url + PATH)
        assert replay.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
        assert metric_sum(url, "llm_exporter_events_total", source="otlp", result="duplicate") == 50
        assert metric_sum(url, "llm_exporter_events_total", source="otlp", result="accepted") == 50


def otlp_json_span(trace: str, span: str, attributes: dict[str, Any], status_code: int = 1) -> dict[str, Any]:
    """A span as OTLP/JSON writes it: hex ids, int64 as strings, enums as integers; 1.25 s long, recent."""
    def value(v: Any) -> dict[str, Any]:
        return {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}
    start = time.time_ns() - 5_000_000_000
    return {"traceId": trace, "spanId": span, "name": "chat", "kind": 3,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_250_000_000),
            "attributes": [{"key": k, "value": value(v)} for k, v in attributes.items()],
            "status": {"code": status_code}}


def test_otlp_json_request_with_partial_success(tmp_path):
    trace = "5b8efff798038103d269b633813fc60c"
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": "acme"}}]},
        "scopeSpans": [{"scope": {"name": "manual"}, "spans": [
            otlp_json_span(trace, "eee19b7ec3c1b174", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                                       "gen_ai.provider.name": "openai", "customer.id": "c1",
                                                       "gen_ai.usage.input_tokens": 1200,
                                                       "gen_ai.usage.output_tokens": 300}),
            otlp_json_span(trace, "eee19b7ec3c1b175", {"gen_ai.request.model": "gpt-4o", "customer.id": "c1",
                                                       "gen_ai.usage.input_tokens": 10, "error.type": "timeout"},
                           status_code=2),
            otlp_json_span(trace, "eee19b7ec3c1b176", {"gen_ai.request.model": "gpt-4o",
                                                       "gen_ai.usage.input_tokens": 7}),  # no customer anywhere
            otlp_json_span(trace, "eee19b7ec3c1b177", {"http.request.method": "GET"}),  # not GenAI: skipped
        ]}]}]}
    with otlp_exporter(tmp_path) as url:
        response = httpx.post(url + PATH, content=orjson.dumps(body), headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        partial = response.json()["partialSuccess"]
        assert partial["rejectedSpans"] == 1
        assert partial["errorMessage"] == (f"span {trace}eee19b7ec3c1b176: customer is required "
                                           "(set the 'customer.id' span or resource attribute)")
        assert metric_sum(url, "llm_requests_total", tenant="acme", customer="c1") == 2
        assert metric_sum(url, "llm_request_errors_total", error_type="timeout") == 1
        assert metric_sum(url, "llm_tokens_total", token_type="input") == 1210
        assert metric_sum(url, "llm_request_duration_seconds_sum") == pytest.approx(2.5)

        # All accepted → an empty response (no partial_success), as OTLP/HTTP specifies.
        good = {"resourceSpans": [dict(body["resourceSpans"][0], scopeSpans=[{"spans": [
            otlp_json_span(trace, "aaa19b7ec3c1b174", {"gen_ai.request.model": "gpt-4o", "customer.id": "c2",
                                                       "gen_ai.usage.input_tokens": 1})]}])]}
        response = httpx.post(url + PATH, content=orjson.dumps(good), headers={"Content-Type": "application/json"})
        assert (response.status_code, response.json()) == (200, {})


def test_gzip_protobuf_gets_a_protobuf_partial_success(tmp_path):
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes(range(16)), bytes(range(8))
    span.start_time_unix_nano = time.time_ns() - 10**9
    span.end_time_unix_nano = time.time_ns()
    for key, value in (("gen_ai.request.model", "gpt-4o"), ("customer.id", "c1")):
        attribute = span.attributes.add()
        attribute.key, attribute.value.string_value = key, value
    attribute = span.attributes.add()
    attribute.key, attribute.value.int_value = "gen_ai.usage.input_tokens", -5
    with otlp_exporter(tmp_path) as url:
        response = httpx.post(url + PATH, content=gzip.compress(request.SerializeToString()),
                              headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-protobuf"
        answer = ExportTraceServiceResponse.FromString(response.content)
        assert answer.partial_success.rejected_spans == 1
        assert "input_tokens must be >= 0" in answer.partial_success.error_message
        assert "tenant is required" in answer.partial_success.error_message


@pytest.mark.parametrize(("body", "headers", "status"), [
    (b"\xff\xff\xff garbage", {"Content-Type": "application/x-protobuf"}, 400),
    (b"{not json", {"Content-Type": "application/json"}, 400),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', {"Content-Type": "application/json"}, 400),
    (b'{"resourceSpans": {"a": 1}}', {"Content-Type": "application/json"}, 400),
    (b"{}", {"Content-Type": "text/plain"}, 415),
    (b"{}", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415),
    (b"not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400),
    (gzip.compress(b"{}" + b" " * 2_000_000), {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 413),
])
def test_bad_requests_are_refused_with_4xx(tmp_path, body, headers, status):
    with otlp_exporter(tmp_path, **{"web.max-body-bytes": "1000000"}) as url:
        response = httpx.post(url + PATH, content=body, headers=headers)
        assert response.status_code == status, response.text
        assert "error" in response.json()


def test_token_tenant_is_the_default_and_the_limit(tmp_path):
    (tmp_path / "acme.token").write_text(TOKEN_ACME + "\n")
    yaml_data = {"tenants": {"acme": {"token_file": str(tmp_path / "acme.token")}, "globex": {}}}
    specs = genai_spans(10)
    for spec in specs:
        spec["attributes"].pop("tenant.id", None)
    with otlp_exporter(tmp_path, yaml_data, **{"auth.mode": "required"}) as url:
        emit(specs, url + PATH, headers={"Authorization": f"Bearer {TOKEN_ACME}"}, resource={"customer.id": "c"})
        assert metric_sum(url, "llm_requests_total", tenant="acme") == 10

        foreign = {"resourceSpans": [{"resource": {"attributes": [{"key": "tenant.id", "value": {"stringValue": "globex"}}]},
                                      "scopeSpans": [{"spans": [{"traceId": "ab" * 16, "spanId": "cd" * 8, "attributes": [
                                          {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}]}]}]}]}
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN_ACME}"}
        assert httpx.post(url + PATH, content=orjson.dumps(foreign), headers=headers).status_code == 403
        assert httpx.post(url + PATH, content=b"{}", headers={"Content-Type": "application/json"}).status_code == 401
        assert metric_sum(url, "llm_requests_total", tenant="globex") == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "links", "attributes",
                         "key", "value", "intValue", "stringValue", "status", "code", "resource", "x"]),
        children, max_size=4),
    max_leaves=25)


@settings(max_examples=300)
@given(document=json_values)
def test_decode_request_refuses_junk_with_payload_errors_only(document):
    try:
        decode_request(json.dumps(document).encode(), JSON, 10_000)
    except PayloadError:
        pass
