"""OTLP/HTTP traces → usage events, so apps already instrumented with OpenTelemetry GenAI need no SDK.

GenAI instrumentations (OpenAI, Anthropic, LangChain, agent frameworks...) put model, provider,
operation and token usage on spans as ``gen_ai.*`` attributes. Each such span becomes one event and
goes through the same :meth:`Aggregator.ingest` as ``POST /v1/events``, so validation, pricing,
caps and dedupe are identical. The event id is trace id + span id: an exporter or collector that
retries a request cannot double count. Spans without a model are not LLM usage (HTTP, database,
app spans) and are skipped, not rejected.

Token attributes follow the semantic conventions: ``gen_ai.usage.input_tokens`` *includes* cached
input, like our ``input_tokens``; cache and reasoning counts are parts of input and output.
"""

from __future__ import annotations

import base64
from typing import Any, Iterable, Mapping

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from . import PayloadError, TooManyEvents
from .jsonbody import check_value_budget, loads
from ..core.events import KNOWN_ERROR_TYPES, OTHER_ERROR_TYPE

PATH = "/v1/otlp/v1/traces"  # so OTEL_EXPORTER_OTLP_ENDPOINT=http://<exporter>:9477/v1/otlp works as is
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TENANT_ATTRIBUTE = "tenant.id"
CUSTOMER_ATTRIBUTE = "customer.id"

# gen_ai.operation.name → our operation; spans of other operations (create_agent, retrieval, ...) are
# not billed model calls and are skipped. A GenAI span without the attribute is a chat call.
OPERATIONS = {"chat": "chat", "generate_content": "chat", "text_completion": "text_completion",
              "embeddings": "embeddings", "invoke_agent": "agent_run", "execute_tool": "tool_call"}
# First attribute present wins: the current semantic convention, then names older instrumentations use.
TOKEN_ATTRIBUTES = {
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    "cache_read_tokens": ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"),
    "cache_write_tokens": ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens"),
    "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens",),
}
# error.type carries exception class names or HTTP status codes; fold the common ones into our known
# error types so dashboards can tell rate limits from timeouts (anything else is exported as _OTHER).
HTTP_ERROR_TYPES = {"400": "invalid_request", "401": "auth", "403": "auth", "404": "invalid_request",
                    "408": "timeout", "413": "invalid_request", "422": "invalid_request", "429": "rate_limited",
                    "504": "timeout"}
ERROR_NAME_HINTS = (("ratelimit", "rate_limited"), ("timeout", "timeout"), ("timedout", "timeout"),
                    ("authentication", "auth"), ("permissiondenied", "auth"), ("badrequest", "invalid_request"),
                    ("contentfilter", "content_filter"), ("internalserver", "server_error"),
                    ("overloaded", "server_error"), ("serviceunavailable", "server_error"))
MAX_SUMMARY_SPANS = 5


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    """Scalar attributes as Python values; arrays, maps and bytes never hold what we read."""
    values = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        if kind in ("string_value", "int_value", "double_value", "bool_value"):
            values[pair.key] = getattr(pair.value, kind)
    return values


def _label(value: Any) -> Any:
    """Ids set as int attributes (``customer.id=42``) are still ids; other types go on to the validator."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _error_type(raw: str) -> str:
    if raw in KNOWN_ERROR_TYPES:
        return raw
    if raw in HTTP_ERROR_TYPES:
        return HTTP_ERROR_TYPES[raw]
    if len(raw) == 3 and raw.startswith("5") and raw.isdigit():
        return "server_error"
    folded = raw.lower().replace("_", "").replace("-", "")
    return next((kind for hint, kind in ERROR_NAME_HINTS if hint in folded), raw)


def span_to_event(span: Span, resource: Mapping[str, Any], tenant_attribute: str = TENANT_ATTRIBUTE,
                  customer_attribute: str = CUSTOMER_ATTRIBUTE, default_tenant: str | None = None) -> dict[str, Any] | None:
    """One span → one raw event (validated later, like any client's), or None when it is not LLM usage."""
    attrs = _attributes(span.attributes)
    model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
    operation = OPERATIONS.get(attrs.get("gen_ai.operation.name", "chat"))
    if model is None or operation is None:
        return None
    event: dict[str, Any] = {
        "id": span.trace_id.hex() + span.span_id.hex(),
        "timestamp": (span.end_time_unix_nano or span.start_time_unix_nano) / 1e9,
        "model": model,
        "operation": operation,
        "duration_ms": (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6,
        "status": "ok",
    }
    for name, attribute, default in (("tenant", tenant_attribute, default_tenant),
                                     ("customer", customer_attribute, None)):
        value = attrs.get(attribute, resource.get(attribute, default))
        if value is not None:
            event[name] = _label(value)
    provider = attrs.get("gen_ai.provider.name", attrs.get("gen_ai.system"))
    if provider is not None:
        event["provider"] = provider
    for field, names in TOKEN_ATTRIBUTES.items():
        # A span without usage still counts as a request: failed calls (429, timeouts) report none.
        event[field] = next((attrs[n] for n in names if n in attrs), 0)
    ttft = attrs.get("gen_ai.response.time_to_first_chunk")
    if isinstance(ttft, (int, float)) and not isinstance(ttft, bool):
        event["ttft_ms"] = ttft * 1000.0
    error_type = attrs.get("error.type")
    if error_type is not None or span.status.code == Status.STATUS_CODE_ERROR:
        event["status"] = "error"
        event["error_type"] = _error_type(str(error_type)) if error_type is not None else OTHER_ERROR_TYPE
        if span.status.message:
            event["error_message"] = span.status.message
    return event


def spans_to_events(request: ExportTraceServiceRequest, tenant_attribute: str = TENANT_ATTRIBUTE,
                    customer_attribute: str = CUSTOMER_ATTRIBUTE,
                    default_tenant: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Events from every GenAI span of an export request, and how many spans were skipped as non-GenAI.
    Tenant and customer come from the span's attributes, else its resource's, else ``default_tenant``."""
    events: list[dict[str, Any]] = []
    skipped = 0
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                event = span_to_event(span, resource, tenant_attribute, customer_attribute, default_tenant)
                if event is None:
                    skipped += 1
                else:
                    events.append(event)
    return events, skipped


def _items(parent: Any, key: str) -> list[Any]:
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, list) else []


def _hex_ids_to_base64(document: Any) -> None:
    """OTLP/JSON writes trace and span ids as hex, where the protobuf JSON mapping expects base64."""
    for resource_spans in _items(document, "resourceSpans"):
        for scope_spans in _items(resource_spans, "scopeSpans"):
            for span in _items(scope_spans, "spans"):
                for holder, keys in [(span, ("traceId", "spanId", "parentSpanId")),
                                     *((link, ("traceId", "spanId")) for link in _items(span, "links"))]:
                    for key in keys:
                        value = holder.get(key) if isinstance(holder, dict) else None
                        if isinstance(value, str):
                            try:
                                holder[key] = base64.b64encode(bytes.fromhex(value)).decode()
                            except ValueError:
                                raise PayloadError(f"{key} {value[:40]!r} is not hex") from None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise PayloadError("body is not an OTLP ExportTraceServiceRequest: truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes, start: int, end: int) -> Iterable[tuple[int, int, int]]:
    """(field number, start, end) of every length-delimited field in ``data[start:end]``; other
    wire types are skipped by their size. Walks tags only, never builds a message."""
    pos = start
    while pos < end:
        tag, pos = _varint(data, pos)
        wire_type = tag & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise PayloadError("body is not an OTLP ExportTraceServiceRequest: a field runs past its message")
            yield tag >> 3, pos, pos + size
            pos += size
        else:
            raise PayloadError(f"body is not an OTLP ExportTraceServiceRequest: wire type {wire_type}")
    if pos > end:
        raise PayloadError("body is not an OTLP ExportTraceServiceRequest: a field runs past its message")


def count_spans(body: bytes, max_spans: int) -> int:
    """Spans in a binary export request, counted from the wire format (resource_spans = 1 →
    scope_spans = 2 → spans = 2) before anything is parsed; :class:`TooManyEvents` as soon as the
    count, or the count of resource/scope entries, passes ``max_spans``."""
    spans = containers = 0
    for number, start, end in _fields(body, 0, len(body)):
        if number != 1:
            continue
        for scope_number, scope_start, scope_end in _fields(body, start, end):
            if scope_number != 2:
                continue
            containers += 1
            for span_number, _, _ in _fields(body, scope_start, scope_end):
                if span_number == 2:
                    spans += 1
                    if spans > max_spans:
                        raise TooManyEvents(f"more than {max_spans} spans exceed the batch limit of "
                                            f"{max_spans}; export smaller batches")
        if containers > max_spans:
            raise TooManyEvents(f"more than {max_spans} scope_spans entries; export smaller batches")
    return spans


def _json_span_count(document: Any) -> int:
    return sum(len(_items(scope_spans, "spans")) for resource_spans in _items(document, "resourceSpans")
               for scope_spans in _items(resource_spans, "scopeSpans"))


def decode_request(body: bytes, media: str, max_spans: int) -> ExportTraceServiceRequest:
    """An OTLP/HTTP trace export body, binary protobuf (``PROTOBUF``) or OTLP/JSON (``JSON``), counted
    against ``max_spans`` before it is parsed; :class:`PayloadError` / :class:`TooManyEvents` otherwise."""
    request = ExportTraceServiceRequest()
    if media == PROTOBUF:
        count_spans(body, max_spans)
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError) as exc:
            raise PayloadError(f"body is not an OTLP ExportTraceServiceRequest: {exc}") from None
        return request
    check_value_budget(body, max_spans)
    document = loads(body)
    if not isinstance(document, dict):
        raise PayloadError("OTLP/JSON body must be an ExportTraceServiceRequest object")
    spans = _json_span_count(document)
    if spans > max_spans:
        raise TooManyEvents(f"{spans} spans exceed the batch limit of {max_spans}; export smaller batches")
    _hex_ids_to_base64(document)
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (ValueError, RecursionError, json_format.ParseError) as exc:
        raise PayloadError(f"body is not OTLP/JSON: {str(exc)[:300]}") from None
    return request


def _summary(errors: list[dict[str, Any]], rejected: int) -> str:
    """``partial_success.error_message``: the first few problems, naming the attribute to fix."""
    hints = {"tenant": f" (set the {TENANT_ATTRIBUTE!r} span or resource attribute)",
             "customer": f" (set the {CUSTOMER_ATTRIBUTE!r} span or resource attribute)"}
    spans: dict[int, list[str]] = {}
    for error in errors:
        if error["index"] in spans or len(spans) < MAX_SUMMARY_SPANS:
            spans.setdefault(error["index"], [f"span {error['id']}:"]).append(
                f"{error['field']} {error['message']}{hints.get(error['field'], '')}")
    more = rejected - len(spans)
    return "; ".join(f"{head} {', '.join(problems)}" for head, *problems in spans.values()) + (
        f"; and {more} more spans" if more > 0 else "")


def encode_response(rejected: int, errors: list[dict[str, Any]], warnings: list[dict[str, Any]], media: str) -> bytes:
    """The OTLP success body in the request's encoding. ``partial_success`` carries the rejected spans
    and, as the OTLP spec allows for warnings (rejected_spans 0, a message), the caveats of accepted ones."""
    message = ExportTraceServiceResponse()
    summaries = []
    if rejected:
        message.partial_success.rejected_spans = rejected
        summaries.append(_summary(errors, rejected))
    if warnings:
        summaries.append("warnings: " + _summary(warnings, len({w["index"] for w in warnings})))
    if summaries:
        message.partial_success.error_message = "; ".join(summaries)
    if media == JSON:
        return json_format.MessageToJson(message, indent=None, unquote_int64_if_possible=True).encode()
    return message.SerializeToString()
