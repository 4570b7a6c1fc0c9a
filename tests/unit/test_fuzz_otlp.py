"""Fuzzing OTLP/HTTP traces (``POST /v1/otlp/v1/traces``) through the real app over HTTP, JSON and
protobuf, plain and gzip: nothing a client sends may produce a 5xx, every answer is a 200 in the
request's encoding or a 4xx with a problem body, the exporter stays up, and the valid GenAI spans
sent beside hostile ones are counted exactly (nothing lost, nothing made up).

The harness is ``test_fuzz_http``'s (a fresh exporter behind Starlette's TestClient per structured
example, ``promtool check metrics`` on its /metrics); ``FUZZ_EXAMPLES`` (default 40) bounds the
examples per property, and the ``-m slow`` variants run 25 times as many.

Structured generation: valid ExportTraceServiceRequests whose "bad" spans get random or mutated
attributes (every ``gen_ai.*`` / ``llm.*`` name the decoder reads, set to wrong types, huge and
negative ints, NaN/inf doubles, "NaN" strings, bytes, nested arrays and maps, the reserved
``__other__``), missing or repeated ids, parent cycles, absurd times and error statuses; the same
requests as OTLP/JSON with JSON-level junk in their bad spans (numbers where strings belong, ids
that are not hex, nulls: refused whole with a 400, or the good spans counted exactly); then
unstructured bodies, all sent to one exporter that must still count at the end: random bytes, byte
mutations of valid requests, truncated, doubled or trailing-garbage gzip, unknown encodings, deep
nesting, and OTLP/JSON documents with junk in every field.

Nothing found so far (1000 examples of each property): the decoder and the front door held.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections import Counter
from typing import Any, Iterator

import httpx
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, \
    ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from exporter.formats import otlp
from test_fuzz_http import FUZZ, KNOWN_MODELS, _mutate, fresh_client, samples, scrape

PATH = otlp.PATH
ALLOWED = {200, 400, 413, 415}
LONG = settings(FUZZ, max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")) * 25)
STATS: Counter[str] = Counter()
GOOD_TRACE = b"\x11" * 16  # good and bad spans never share a trace, so a bad span cannot nest in a good one
BAD_TRACE = b"\xbb" * 16


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\notlp fuzz: {dict(STATS)}")


# --- values ----------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # protobuf strings are valid UTF-8
ODD_STRINGS = ["NaN", "nan", "Infinity", "-1", "1e30", "12", "12.5", "", " ", "\t", "__other__", "_OTHER", "x" * 2000,
               "gpt-4o", "timeout", "429", "500", "chat", "invoke_agent", "execute_tool", "embeddings", "🙂"]
ODD_INTS = [0, 1, -1, 10**10, 10**10 + 1, 2**53 + 1, 2**63 - 1, -2**63, 10**6 + 1]
ODD_DOUBLES = [0.0, -0.0, 0.5, 100.0, 3.5, 1e30, -1e30, 1e308, float("nan"), float("inf"), float("-inf"), 5e-324]


def _scalar() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.tuples(st.just("string_value"), st.one_of(st.sampled_from(ODD_STRINGS), _text)),
        st.tuples(st.just("int_value"), st.one_of(st.sampled_from(ODD_INTS), st.integers(-2**63, 2**63 - 1))),
        st.tuples(st.just("double_value"), st.one_of(st.sampled_from(ODD_DOUBLES), st.floats())),
        st.tuples(st.just("bool_value"), st.booleans()),
        st.tuples(st.just("bytes_value"), st.binary(max_size=16)),
    )


# A value: a scalar, or arrays and maps of values (a few levels; deeper nesting has its own property).
any_value = st.recursive(_scalar(), lambda inner: st.one_of(
    st.tuples(st.just("array_value"), st.lists(inner, max_size=3)),
    st.tuples(st.just("kvlist_value"), st.lists(st.tuples(_text, inner), max_size=3))), max_leaves=8)


def set_value(target: AnyValue, value: tuple[str, Any]) -> None:
    kind, payload = value
    if kind == "array_value":
        target.array_value.SetInParent()
        for item in payload:
            set_value(target.array_value.values.add(), item)
    elif kind == "kvlist_value":
        target.kvlist_value.SetInParent()
        for key, item in payload:
            pair = target.kvlist_value.values.add()
            pair.key = key
            set_value(pair.value, item)
    else:
        setattr(target, kind, payload)


def add_attribute(attributes: Any, key: str, value: tuple[str, Any]) -> None:
    pair: KeyValue = attributes.add()
    pair.key = key
    set_value(pair.value, value)


# Every attribute name the decoder reads, plus the labels' and a few it must ignore.
READ_KEYS = sorted({*(n for names in otlp.TOKEN_ATTRIBUTES.values() for n in names), *otlp.MODEL_ATTRIBUTES,
                    *otlp.AGENT_MODEL_ATTRIBUTES, *otlp.PROVIDER_ATTRIBUTES, *otlp.SERVICE_TIER_ATTRIBUTES,
                    *otlp.TTFT_ATTRIBUTES, otlp.RESPONSE_ID_ATTRIBUTE, otlp.TENANT_ATTRIBUTE, otlp.CUSTOMER_ATTRIBUTE,
                    "gen_ai.operation.name", "error.type", "llm.request.type", "openinference.span.kind",
                    "http.request.method", "gen_ai.unknown.thing"})


# --- requests ----------------------------------------------------------------------------------------

@st.composite
def good_span(draw: st.DrawFn, number: int, now: float) -> dict[str, Any]:
    """A model call the exporter must count, and what it must count."""
    end = int((now - draw(st.floats(1, 3000))) * 1e9)
    return {"span_id": (number + 1).to_bytes(8, "big"), "end": end, "start": end - draw(st.integers(0, 10**11)),
            "customer": f"good-{number}", "model": draw(st.sampled_from(KNOWN_MODELS)),
            "input": draw(st.integers(0, 10**9)), "output": draw(st.integers(0, 10**6)),
            "operation": draw(st.sampled_from([None, "chat", "text_completion"])),
            "error": draw(st.booleans())}


def add_good(scope: Any, spec: dict[str, Any]) -> None:
    span: Span = scope.spans.add()
    span.trace_id, span.span_id = GOOD_TRACE, spec["span_id"]
    span.start_time_unix_nano, span.end_time_unix_nano = spec["start"], spec["end"]
    add_attribute(span.attributes, "gen_ai.request.model", ("string_value", spec["model"]))
    add_attribute(span.attributes, "tenant.id", ("string_value", "acme"))
    add_attribute(span.attributes, "customer.id", ("string_value", spec["customer"]))
    add_attribute(span.attributes, "gen_ai.usage.input_tokens", ("int_value", spec["input"]))
    add_attribute(span.attributes, "gen_ai.usage.output_tokens", ("int_value", spec["output"]))
    if spec["operation"]:
        add_attribute(span.attributes, "gen_ai.operation.name", ("string_value", spec["operation"]))
    if spec["error"]:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = "upstream said no"


MUTATIONS = ["set", "set", "set", "set", "delete", "no trace id", "no span id", "repeat span id", "parent",
             "self parent", "times", "error status", "duplicate key", "many attributes"]


@st.composite
def bad_span(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """The mutations applied to an otherwise valid GenAI span (of the bad trace)."""
    return draw(st.lists(st.one_of(
        st.tuples(st.just("set"), st.tuples(st.sampled_from(READ_KEYS), any_value)),
        st.tuples(st.sampled_from(MUTATIONS[4:]), st.tuples(st.sampled_from(READ_KEYS), any_value,
                                                            st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)))),
        min_size=1, max_size=5))


def add_bad(scope: Any, number: int, mutations: list[tuple[str, Any]], now: float) -> None:
    span: Span = scope.spans.add()
    span.trace_id, span.span_id = BAD_TRACE, (1000 + number).to_bytes(8, "big")
    span.end_time_unix_nano = int((now - 10) * 1e9)
    span.start_time_unix_nano = span.end_time_unix_nano - 10**9
    attributes = {"gen_ai.request.model": ("string_value", "gpt-4o"), "tenant.id": ("string_value", "acme"),
                  "customer.id": ("string_value", f"bad-{number}"), "gen_ai.usage.input_tokens": ("int_value", 10),
                  "gen_ai.usage.output_tokens": ("int_value", 2)}
    extra: list[tuple[str, Any]] = []
    for kind, args in mutations:
        key, value = args[0], args[1]
        if kind == "set":
            attributes[key] = value
        elif kind == "delete":
            attributes.pop(key, None)
        elif kind == "no trace id":
            span.trace_id = b""
        elif kind == "no span id":
            span.span_id = b""
        elif kind == "repeat span id":
            span.span_id = (1000).to_bytes(8, "big")
        elif kind == "parent":
            span.parent_span_id = (1000 + args[2] % 8).to_bytes(8, "big")
        elif kind == "self parent":
            span.parent_span_id = span.span_id
        elif kind == "times":
            span.start_time_unix_nano, span.end_time_unix_nano = args[2], args[3]
        elif kind == "error status":
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = "x" * (args[2] % 500)
        elif kind == "duplicate key":
            extra.append((key, value))
        else:  # many attributes
            extra += [(f"{key}.{i}", value) for i in range(200)]
    for key, value in [*attributes.items(), *extra]:
        add_attribute(span.attributes, key, value)


@st.composite
def mixed_request(draw: st.DrawFn) -> tuple[ExportTraceServiceRequest, list[dict[str, Any]], int]:
    """Good spans (their own resource), mutated spans and non-GenAI spans (another resource, whose
    attributes may be junk too), in random order within their scopes."""
    now = time.time()
    good = [draw(good_span(i, now)) for i in range(draw(st.integers(0, 6)))]
    bad = [draw(bad_span()) for i in range(draw(st.integers(0, 6)))]
    request = ExportTraceServiceRequest()
    good_resource = request.resource_spans.add()
    add_attribute(good_resource.resource.attributes, "service.name", ("string_value", "good"))
    scope = good_resource.scope_spans.add()
    for spec in draw(st.permutations(good)):
        add_good(scope, spec)
    bad_resource = request.resource_spans.add()
    for key, value in draw(st.lists(st.tuples(st.sampled_from(READ_KEYS), any_value), max_size=3)):
        add_attribute(bad_resource.resource.attributes, key, value)
    bad_scope = bad_resource.scope_spans.add()
    for number, mutations in enumerate(bad):
        add_bad(bad_scope, number, mutations, now)
    for number in range(draw(st.integers(0, 2))):  # HTTP spans: skipped, never rejected
        span = bad_scope.spans.add()
        span.trace_id, span.span_id = BAD_TRACE, (5000 + number).to_bytes(8, "big")
        add_attribute(span.attributes, "http.request.method", ("string_value", "GET"))
    return request, good, len(bad)


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as exporters write it: the protobuf JSON mapping with hex trace and span ids."""
    document = json_format.MessageToDict(request)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = __import__("base64").b64decode(span[key]).hex()
    return json.dumps(document).encode()  # json, not orjson: doubles may be the strings "NaN" / "Infinity"


def encode(request: ExportTraceServiceRequest, media: str, gzipped: bool) -> tuple[bytes, dict[str, str]]:
    body = request.SerializeToString() if media == otlp.PROTOBUF else otlp_json(request)
    headers = {"Content-Type": media}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    return body, headers


def post(client: TestClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST and hold the line: never a 5xx; a 200 in the request's encoding or a 4xx problem body."""
    response = client.post(PATH, content=body, headers=headers)
    STATS["requests"] += 1
    STATS[f"status {response.status_code}"] += 1
    assert response.status_code < 500, f"{response.status_code} for {headers} {body[:300]!r}: {response.text[:300]}"
    assert response.status_code in ALLOWED, (response.status_code, response.text[:300])
    if response.status_code == 200:
        sent = headers["Content-Type"].split(";")[0].strip().lower()
        assert response.headers["content-type"].split(";")[0] == sent, "answered in the request's encoding"
        assert rejected_spans(response) >= 0
    else:
        problem = response.json()
        assert isinstance(problem.get("error"), str) and problem["error"], problem
    return response


def rejected_spans(response: httpx.Response) -> int:
    """``partial_success.rejected_spans`` of a 200, parsed in the encoding the request used."""
    if response.headers["content-type"].startswith("application/json"):
        document = response.json()
        assert set(document) <= {"partialSuccess"}, document
        return int(document.get("partialSuccess", {}).get("rejectedSpans", 0))
    assert response.headers["content-type"] == otlp.PROTOBUF
    return ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans


def events_counted(families: list[Any], result: str) -> float:
    return sum(s.value for s in samples(families, "llm_exporter_events_total")
               if s.labels["source"] == "otlp" and s.labels["result"] == result)


def alive(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200


# --- properties ------------------------------------------------------------------------------------

def check_counted(client: TestClient, response: httpx.Response, good: list[dict[str, Any]], bad: int) -> None:
    """A 200 counted every good span once with its tokens, rejected only mutated spans, and says so;
    a refused request counted nothing. /metrics passes promtool either way."""
    families = scrape(client)
    requests = samples(families, "llm_requests_total")
    counted = sum(s.value for s in requests)
    if response.status_code != 200:
        assert counted == 0 and events_counted(families, "accepted") == 0, "a refused request counts nothing"
        STATS["whole requests refused"] += 1
        return
    rejected = rejected_spans(response)
    assert rejected <= bad, "only mutated spans may be rejected"
    for spec in good:  # each good span counted once, with its tokens, whatever surrounded it
        mine = [s for s in requests if s.labels["customer"] == spec["customer"]]
        assert sum(s.value for s in mine) == 1, (spec, [s.labels for s in mine])
        assert mine[0].labels["status"] == ("error" if spec["error"] else "ok")
        tokens = {s.labels["token_type"]: s.value for s in samples(families, "llm_tokens_total")
                  if s.labels["customer"] == spec["customer"]}
        assert (tokens.get("input", 0), tokens.get("output", 0)) == (spec["input"], spec["output"])
    assert counted == events_counted(families, "accepted"), "every accepted event is in the series"
    assert events_counted(families, "rejected") == rejected, "partial_success says what was refused"
    assert counted - len(good) <= bad
    STATS["good spans counted"] += len(good)
    STATS["bad spans rejected"] += rejected
    STATS["bad spans accepted"] += int(counted - len(good))


def check_mixed(case: tuple[ExportTraceServiceRequest, list[dict[str, Any]], int], media: str, gzipped: bool) -> None:
    request, good, bad = case
    STATS["mixed examples"] += 1
    body, headers = encode(request, media, gzipped)
    with fresh_client() as client:
        response = post(client, body, headers)
        assert response.status_code == 200, response.text[:500]  # a valid request, however odd its attributes
        check_counted(client, response, good, bad)
        alive(client)


@FUZZ
@given(case=mixed_request(), media=st.sampled_from([otlp.PROTOBUF, otlp.JSON]), gzipped=st.booleans())
def test_good_spans_beside_hostile_ones_are_counted_exactly(case, media, gzipped):
    check_mixed(case, media, gzipped)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@LONG
@given(case=mixed_request(), media=st.sampled_from([otlp.PROTOBUF, otlp.JSON]), gzipped=st.booleans())
def test_good_spans_beside_hostile_ones_long(case, media, gzipped):
    check_mixed(case, media, gzipped)


_junk_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False), _text,
                         st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1", "0x10", "", "!!", "AAAA"]))
_junk = st.recursive(_junk_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["intValue", "doubleValue", "stringValue", "boolValue", "bytesValue", "arrayValue",
                     "kvlistValue", "values", "key", "value", "x"]), inner, max_size=3), max_leaves=10)
# What a hand-written or buggy OTLP/JSON writer puts where an AnyValue or a span field belongs.
_parses = st.one_of(  # well-formed OTLP/JSON, odd values: these reach the span mapping
    st.builds(lambda n: {"intValue": n}, st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(-2**63, 2**63 - 1).map(str))),
    st.builds(lambda d: {"doubleValue": d}, st.one_of(st.sampled_from(["NaN", "Infinity", "-Infinity"]), st.floats(
        allow_nan=False, allow_infinity=False))),
    st.builds(lambda t: {"stringValue": t}, st.one_of(_text, st.sampled_from(ODD_STRINGS))),
    st.sampled_from([{}, None, {"boolValue": True}, {"bytesValue": "AAAA"}, {"arrayValue": {}},
                     {"kvlistValue": {"values": []}}, {"arrayValue": {"values": [{"intValue": "5"}]}}]))
json_value = st.one_of(
    _parses, _parses, _parses,
    st.dictionaries(st.sampled_from(["intValue", "doubleValue", "stringValue", "boolValue", "bytesValue"]),
                    _junk_scalar, min_size=1, max_size=2),
    st.builds(lambda v: {"arrayValue": {"values": v}}, _junk),
    st.builds(lambda v: {"kvlistValue": {"values": v}}, _junk),
    _junk)
SPAN_FIELDS = ["startTimeUnixNano", "endTimeUnixNano", "status", "kind", "parentSpanId", "traceId", "spanId", "name",
               "droppedAttributesCount", "events", "links", "traceState", "flags"]


@st.composite
def json_mutated(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]], int]:
    """A valid mixed request as OTLP/JSON, whose bad spans then get JSON-level junk: values of the
    wrong JSON type, numbers where strings belong, ids that are not hex, fields that are null."""
    request, good, bad = draw(mixed_request())
    document = json.loads(otlp_json(request))
    spans = [span for resource in document.get("resourceSpans", []) for scope in resource.get("scopeSpans", [])
             for span in scope.get("spans", []) if span.get("traceId") == BAD_TRACE.hex()]
    for span in draw(st.lists(st.sampled_from(spans), max_size=2)) if spans else []:
        for _ in range(draw(st.integers(1, 2))):
            if draw(st.booleans()) and span.get("attributes"):
                attribute = draw(st.sampled_from(span["attributes"]))
                attribute[draw(st.sampled_from(["value", "value", "key"]))] = draw(json_value)
            else:
                span[draw(st.sampled_from(SPAN_FIELDS))] = draw(st.one_of(_junk, st.sampled_from(
                    ["ab" * 8, "ab" * 3, "zz", "", "-1", str(2**64), str(2**63), "0", None, 0, 2, 99, {}, []])))
    return json.dumps(document).encode(), good, bad


def check_json_mutated(case: tuple[bytes, list[dict[str, Any]], int], gzipped: bool) -> None:
    body, good, bad = case
    STATS["json-level examples"] += 1
    headers = {"Content-Type": otlp.JSON}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    with fresh_client() as client:
        response = post(client, body, headers)  # 400 when the junk is not OTLP/JSON at all: refused whole
        check_counted(client, response, good, bad)
        alive(client)


@FUZZ
@given(case=json_mutated(), gzipped=st.booleans())
def test_json_level_junk_beside_good_spans_is_refused_whole_or_counted_exactly(case, gzipped):
    check_json_mutated(case, gzipped)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@LONG
@given(case=json_mutated(), gzipped=st.booleans())
def test_json_level_junk_long(case, gzipped):
    check_json_mutated(case, gzipped)


@pytest.fixture(scope="module")
def shared() -> Iterator[TestClient]:
    """One exporter for all the unstructured junk: it must still be up, and still count, at the end."""
    with fresh_client() as client:
        yield client


def _deep(depth: int, kind: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = b"\x22" * 16, b"\x01" * 8
    pair = span.attributes.add()
    pair.key = "gen_ai.usage.input_tokens"
    value = pair.value
    for _ in range(depth):
        if kind == "array":
            value = value.array_value.values.add()
        else:
            inner = value.kvlist_value.values.add()
            inner.key = "k"
            value = inner.value
    value.int_value = 1
    return request


def _deep_json(depth: int, kind: str) -> bytes:
    """The OTLP/JSON of :func:`_deep`, written as text (the protobuf JSON printer itself recurses)."""
    head, tail = (b'{"arrayValue": {"values": [', b"]}}") if kind == "array" else (
        b'{"kvlistValue": {"values": [{"key": "k", "value": ', b"}]}}")
    value = head * depth + b'{"intValue": "1"}' + tail * depth
    return (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "' + b"22" * 16 + b'", "spanId": "'
            + b"01" * 8 + b'", "attributes": [{"key": "gen_ai.usage.input_tokens", "value": ' + value + b"}]}]}]}]}")


def _truncate(body: bytes, cut: int) -> bytes:
    return body[:max(1, cut % max(len(body), 1))]


_valid = mixed_request().map(lambda case: case[0])
junk_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(
        ["resourceSpans", "scopeSpans", "spans", "traceId", "spanId", "parentSpanId", "attributes", "key", "value",
         "intValue", "doubleValue", "stringValue", "arrayValue", "kvlistValue", "values", "status", "code",
         "startTimeUnixNano", "endTimeUnixNano", "resource", "x"]), children, max_size=4), max_leaves=25)


def _json_with(document: Any) -> bytes:
    """A junk document inside a valid request shape, so the junk reaches the span mapping."""
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [document]}]}]}
                      if isinstance(document, dict) else document).encode()


raw_body = st.one_of(
    st.tuples(st.just(otlp.PROTOBUF), st.binary(max_size=2048), st.just(None)),
    st.tuples(st.just(otlp.PROTOBUF), st.builds(_mutate, _valid.map(lambda r: r.SerializeToString()), st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8)),
        st.just(None)),
    st.tuples(st.just(otlp.JSON), st.builds(_mutate, _valid.map(otlp_json), st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8)),
        st.just(None)),
    st.tuples(st.sampled_from([otlp.PROTOBUF, otlp.JSON]), junk_json.map(_json_with), st.just(None)),
    st.tuples(st.just(otlp.JSON), st.builds(lambda r: otlp_json(r).replace(b'"intValue": "', b'"intValue": "99999999999999999999'),
                                            _valid), st.just(None)),
    st.tuples(st.just(otlp.PROTOBUF), st.builds(lambda d, k: _deep(d, k).SerializeToString(), st.sampled_from(
        [10, 40, 50, 60, 99, 101, 200, 1000]), st.sampled_from(["array", "kvlist"])), st.just(None)),
    st.tuples(st.just(otlp.JSON), st.builds(_deep_json, st.sampled_from(
        [10, 60, 200, 400, 5000]), st.sampled_from(["array", "kvlist"])), st.just(None)),
    # gzip: truncated, trailing garbage, two members, gzip of junk
    st.tuples(st.sampled_from([otlp.PROTOBUF, otlp.JSON]), st.builds(
        lambda r, cut: _truncate(gzip.compress(r.SerializeToString()), cut), _valid, st.integers(0, 10**6)),
        st.just("gzip")),
    st.tuples(st.just(otlp.PROTOBUF), st.builds(lambda r, tail: gzip.compress(r.SerializeToString()) + tail, _valid,
                                                st.binary(min_size=1, max_size=20)), st.just("gzip")),
    st.tuples(st.just(otlp.PROTOBUF), st.builds(lambda r: gzip.compress(r.SerializeToString()) * 2, _valid),
              st.just("gzip")),
    st.tuples(st.sampled_from([otlp.PROTOBUF, otlp.JSON]), st.binary(max_size=512).map(gzip.compress),
              st.just("gzip")),
    st.tuples(st.sampled_from([otlp.PROTOBUF, otlp.JSON]), st.binary(max_size=64),
              st.sampled_from(["gzip", "deflate", "zstd", "br", "gzip, gzip", "identity"])),
)
content_types = st.sampled_from(["", "; charset=utf-8", " ", "; proto=1"])


def check_raw(client: TestClient, media: str, body: bytes, encoding: str | None, suffix: str) -> None:
    STATS["raw examples"] += 1
    before = scrape_counts(client)
    headers = {"Content-Type": media + suffix, **({"Content-Encoding": encoding} if encoding else {})}
    response = post(client, body, headers)
    after = scrape_counts(client)
    if response.status_code != 200:
        assert after == before, "a refused request counts nothing"
    else:
        assert after[1] - before[1] == rejected_spans(response)
        assert after[0] - before[0] == after[2] - before[2], "every accepted event is in the series"
    alive(client)


def scrape_counts(client: TestClient) -> tuple[float, float, float]:
    """(accepted, rejected) OTLP events and llm_requests_total, from /metrics (parsed, no promtool: fast)."""
    families = list(text_string_to_metric_families(client.get("/metrics").text))
    return (events_counted(families, "accepted"), events_counted(families, "rejected"),
            sum(s.value for s in samples(families, "llm_requests_total")))


@FUZZ
@given(case=raw_body, suffix=content_types)
def test_random_and_broken_bodies_never_5xx(shared, case, suffix):
    check_raw(shared, *case, suffix)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@LONG
@given(case=raw_body, suffix=content_types)
def test_random_and_broken_bodies_long(shared, case, suffix):
    check_raw(shared, *case, suffix)


def test_the_shared_exporter_still_counts_after_the_junk(shared):
    """Runs after the junk properties (file order): a valid span is counted, /metrics passes promtool."""
    request = ExportTraceServiceRequest()
    spec = {"span_id": b"\x77" * 8, "end": time.time_ns() - 10**9, "start": time.time_ns() - 2 * 10**9,
            "customer": "after-the-junk", "model": "gpt-4o", "input": 7, "output": 3, "operation": None,
            "error": False}
    add_good(request.resource_spans.add().scope_spans.add(), spec)
    for media in (otlp.PROTOBUF, otlp.JSON):
        body, headers = encode(request, media, gzipped=True)
        assert rejected_spans(post(shared, body, headers)) == 0
    requests = samples(scrape(shared), "llm_requests_total")
    assert sum(s.value for s in requests if s.labels["customer"] == "after-the-junk") == 1  # the retry is a duplicate
    assert STATS["raw examples"] > 0
