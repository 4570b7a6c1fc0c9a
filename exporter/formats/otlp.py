"""OTLP/HTTP traces → usage events, so apps already instrumented with OpenTelemetry GenAI need no SDK.

GenAI instrumentations (OpenAI, Anthropic, LangChain, agent frameworks...) put model, provider,
operation and token usage on spans as ``gen_ai.*`` attributes (older ones as ``llm.*``). Each model
call becomes one event and goes through the same front door as ``POST /v1/events``, so
validation, pricing, caps and dedupe are identical. Spans without a model are not LLM usage (HTTP,
database, app spans) and are skipped, not rejected.

Token attributes follow the semantic conventions: ``gen_ai.usage.input_tokens`` *includes* cached
input, like our ``input_tokens``; cache, audio and reasoning counts are parts of input and output.
Every name we read is in :data:`TOKEN_ATTRIBUTES` (and the README's table).

One call, one event, however many instrumentations traced it: spans of the same call (nested in
each other, or carrying the same vendor response id) join into one event whose id is the response
id, else trace id + span id, so retried exports and a second instrumentation's copy in another
request are deduplicated. ``invoke_agent`` spans become agent runs that count their calls but carry
no tokens, since the calls are already counted.
"""

from __future__ import annotations

import base64
import hashlib
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

# gen_ai.operation.name → our operation. Spans of other operations (create_agent, retrieval, ...) are
# not billed model calls and are skipped. Without the attribute, older OpenLLMetry's llm.request.type
# or OpenInference's openinference.span.kind says what the span is; a span with none of them is a chat call.
OPERATIONS = {"chat": "chat", "generate_content": "chat", "text_completion": "text_completion",
              "embeddings": "embeddings", "invoke_agent": "agent_run", "execute_tool": "tool_call"}
LEGACY_OPERATIONS = (("llm.request.type", {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}),
                     ("openinference.span.kind", {"LLM": "chat", "EMBEDDING": "embeddings", "AGENT": "agent_run",
                                                  "TOOL": "tool_call"}))
MODEL_CALLS = frozenset({"chat", "text_completion", "embeddings"})
# First attribute present wins: the current semantic convention, then the names real instrumentations
# emit (read from their source: opentelemetry-util-genai / openai-v2, OpenLLMetry, the Anthropic SDK's
# own spans, pydantic-ai, OpenInference). Every input name *includes* cached and audio input, every
# output name reasoning and audio output, as our fields do.
TOKEN_ATTRIBUTES = {
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens",
                     "llm.token_count.prompt"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens",
                      "llm.token_count.completion"),
    "cache_read_tokens": ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
                          "llm.token_count.prompt_details.cache_read"),
    "cache_write_tokens": ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens",
                           "gen_ai.usage.cache_creation_input_tokens", "llm.token_count.prompt_details.cache_write"),
    "cache_write_1h_tokens": ("anthropic.usage.cache_creation.ephemeral_1h_input_tokens",
                              "gen_ai.usage.details.ephemeral_1h_input_tokens"),
    "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
                         "llm.usage.reasoning_tokens", "gen_ai.usage.details.reasoning_tokens",
                         "gen_ai.usage.details.thinking_tokens", "llm.token_count.completion_details.reasoning"),
    "audio_input_tokens": ("gen_ai.usage.audio.input_tokens", "gen_ai.usage.details.input_audio_tokens",
                           "llm.token_count.prompt_details.audio"),
    "audio_output_tokens": ("gen_ai.usage.audio.output_tokens", "gen_ai.usage.details.output_audio_tokens",
                            "llm.token_count.completion_details.audio"),
}
MODEL_ATTRIBUTES = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "embedding.model_name")
AGENT_MODEL_ATTRIBUTES = (*MODEL_ATTRIBUTES, "model_name")  # pydantic-ai names its agent's model so
PROVIDER_ATTRIBUTES = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
SERVICE_TIER_ATTRIBUTES = ("openai.response.service_tier", "gen_ai.openai.response.service_tier",
                           "anthropic.response.service_tier")
TTFT_ATTRIBUTES = ("gen_ai.response.time_to_first_chunk",)  # seconds
# The vendor's id of the response (chatcmpl-..., msg_..., resp_...): the same call, whoever traced it.
RESPONSE_ID_ATTRIBUTE = "gen_ai.response.id"
MAX_RESPONSE_ID = 100
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


def _first(attrs: Mapping[str, Any], names: Iterable[str]) -> Any:
    return next((attrs[name] for name in names if name in attrs), None)


def _error_type(raw: str) -> str:
    if raw in KNOWN_ERROR_TYPES:
        return raw
    if raw in HTTP_ERROR_TYPES:
        return HTTP_ERROR_TYPES[raw]
    if len(raw) == 3 and raw.startswith("5") and raw.isdigit():
        return "server_error"
    folded = raw.lower().replace("_", "").replace("-", "")
    return next((kind for hint, kind in ERROR_NAME_HINTS if hint in folded), raw)


def _operation(attrs: Mapping[str, Any]) -> str | None:
    if "gen_ai.operation.name" in attrs:
        return OPERATIONS.get(attrs["gen_ai.operation.name"])
    for attribute, operations in LEGACY_OPERATIONS:
        if attribute in attrs:
            return operations.get(attrs[attribute])
    return "chat"


class _Span:
    """One span of an export request, with what the mapping needs to know about it and its place in the trace."""

    __slots__ = ("span", "resource", "attrs", "operation", "key", "parent", "depth", "outer_call", "agent", "children")

    def __init__(self, span: Span, resource: Mapping[str, Any]) -> None:
        self.span, self.resource = span, resource
        self.attrs = _attributes(span.attributes)
        self.operation = _operation(self.attrs)
        self.key = (span.trace_id, span.span_id)
        self.parent = (span.trace_id, span.parent_span_id) if span.parent_span_id else None
        self.depth = 0  # below the topmost ancestor present in the request
        self.outer_call: _Span | None = None  # the outermost model-call span above this one, if any
        self.agent: _Span | None = None  # the nearest invoke_agent span above this one, if any
        self.children: list[_Span] = []  # model calls (counted once each) and tool calls under this agent


def _is_model_call(node: _Span) -> bool:
    return node.operation in MODEL_CALLS and _first(node.attrs, MODEL_ATTRIBUTES) is not None


def _place(spans: dict[tuple[bytes, bytes], _Span]) -> None:
    """Fill each span's ``outer_call`` and ``agent`` from its ancestors in the same request. Iterative
    with memoisation (linear in the number of spans); a cycle of parent ids (only a broken or hostile
    exporter sends one) is cut where it closes."""
    done: set[tuple[bytes, bytes]] = set()
    for start in spans.values():
        chain: list[_Span] = []
        seen: set[tuple[bytes, bytes]] = set()
        node: _Span | None = start
        while node is not None and node.key not in done and node.key not in seen:
            seen.add(node.key)
            chain.append(node)
            node = spans.get(node.parent) if node.parent else None
        for child in reversed(chain):  # from the topmost unplaced ancestor down
            parent = spans.get(child.parent) if child.parent else None
            if parent is not None and parent.key in done:
                child.depth = parent.depth + 1
                child.outer_call = parent.outer_call or (parent if _is_model_call(parent) else None)
                child.agent = parent if parent.operation == "agent_run" else parent.agent
            done.add(child.key)


def _event(node: _Span, model: Any, operation: str, tenant_attribute: str, customer_attribute: str,
           default_tenant: str | None) -> dict[str, Any]:
    span, attrs = node.span, node.attrs
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
        value = attrs.get(attribute, node.resource.get(attribute, default))
        if value is not None:
            event[name] = _label(value)
    provider = _first(attrs, PROVIDER_ATTRIBUTES)
    if provider is not None:
        event["provider"] = provider
    error_type = attrs.get("error.type")
    if error_type is not None or span.status.code == Status.STATUS_CODE_ERROR:
        event["status"] = "error"
        event["error_type"] = _error_type(str(error_type)) if error_type is not None else OTHER_ERROR_TYPE
        if span.status.message:
            event["error_message"] = span.status.message
    return event


def _add_cache_to_input(event: dict[str, Any]) -> None:
    """An input count smaller than its cache parts was counted the Anthropic API's way, without the
    cache (older instrumentations copy ``usage.input_tokens`` as is): add the parts back, as the
    conventions define ``gen_ai.usage.input_tokens``, instead of refusing the call. Non-integers are
    left for the validator to report."""
    parts = (event["input_tokens"], event["cache_read_tokens"], event["cache_write_tokens"])
    if all(isinstance(v, int) and not isinstance(v, bool) for v in parts) and parts[1] + parts[2] > parts[0]:
        event["input_tokens"] = sum(parts)


def _reported(node: _Span) -> int:
    return sum(any(name in node.attrs for name in names) for names in TOKEN_ATTRIBUTES.values())


def _usage_event(node: _Span, same_call: list[_Span], **labels: Any) -> dict[str, Any]:
    """A model call (or a tool call that names a model) from all the spans that saw it: ``node``
    and ``same_call``, spans nested in it or carrying the same vendor response id (the same call
    traced by more instrumentations). Field by field, the span that reports the most token fields
    wins and the others fill in what it leaves out; among equals the innermost, the closest to the
    wire. So the Anthropic SDK's own span beats OpenLLMetry's (whose stream output count is one too
    many), and pydantic-ai's chat span adds the cache reads openai-v2's span has none of.

    The event id is the vendor's response id when a span has one, so the same call exported by two
    instrumentations in different requests is deduplicated like a retry; else trace id + span id."""
    event = _event(node, _first(node.attrs, MODEL_ATTRIBUTES), node.operation, **labels)
    views = [view.attrs for view in sorted([node, *same_call], key=lambda v: (-_reported(v), -v.depth))]
    response_id = next((r for attrs in views if isinstance(r := attrs.get(RESPONSE_ID_ATTRIBUTE), str) and r), None)
    if response_id is not None:
        event["id"] = "response:" + (response_id if len(response_id) <= MAX_RESPONSE_ID
                                     else hashlib.sha256(response_id.encode()).hexdigest())
    for field, names in TOKEN_ATTRIBUTES.items():
        # A span without usage still counts as a request: failed calls (429, timeouts) report none.
        event[field] = next((value for attrs in views if (value := _first(attrs, names)) is not None), 0)
    _add_cache_to_input(event)
    tier = next((t for attrs in views if (t := _first(attrs, SERVICE_TIER_ATTRIBUTES)) is not None), None)
    if tier is not None:
        event["service_tier"] = tier
    ttft = next((t for attrs in views if (t := _first(attrs, TTFT_ATTRIBUTES)) is not None), None)
    if isinstance(ttft, (int, float)) and not isinstance(ttft, bool):
        event["ttft_ms"] = ttft * 1000.0
    return event


def _agent_run_event(node: _Span, **labels: Any) -> dict[str, Any] | None:
    """An agent run: duration, outcome, and the model and tool calls made under it in this request.
    It carries no tokens: its model calls are counted as their own events, and the run's own usage
    attributes (pydantic-ai's ``gen_ai.aggregated_usage.*``, util-genai's ``gen_ai.usage.*`` on
    ``invoke_agent``) are the same tokens again."""
    calls = [child for child in node.children if _is_model_call(child)]
    model = _first(node.attrs, AGENT_MODEL_ATTRIBUTES)
    if model is None:
        model = next((m for call in calls if (m := _first(call.attrs, MODEL_ATTRIBUTES)) is not None), None)
    if model is None:
        return None
    event = _event(node, model, "agent_run", **labels)
    if "provider" not in event:
        provider = next((p for call in calls if (p := _first(call.attrs, PROVIDER_ATTRIBUTES)) is not None), None)
        if provider is not None:
            event["provider"] = provider
    event.update(dict.fromkeys(TOKEN_ATTRIBUTES, 0), llm_calls=len(calls),
                 tool_calls=sum(child.operation == "tool_call" for child in node.children))
    return event


def spans_to_events(request: ExportTraceServiceRequest, tenant_attribute: str = TENANT_ATTRIBUTE,
                    customer_attribute: str = CUSTOMER_ATTRIBUTE,
                    default_tenant: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Events from the GenAI spans of an export request, and how many spans were skipped (not GenAI
    usage, or a model call already counted through another span of the same call).

    Each model call (chat, text_completion, embeddings span with a model) is one event. A model-call
    span nested in another, or carrying a vendor response id another span of the request carries,
    is the same call seen by two instrumentations and joins it (:func:`_usage_event`). Each ``invoke_agent`` span is an agent-run event counting the model and tool calls
    whose nearest agent it is. Tenant and customer come from the span's attributes, else its
    resource's, else ``default_tenant``."""
    spans: dict[tuple[bytes, bytes], _Span] = {}
    total = 0
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                total += 1
                node = _Span(span, resource)
                spans.setdefault(node.key, node)  # a span sent twice in one request is one span
    _place(spans)
    # Each model call once: spans nested in a model-call span, then model-call spans carrying a
    # response id already seen, join the call's first span.
    calls: dict[tuple[bytes, bytes], list[_Span]] = {}
    by_response: dict[str, _Span] = {}
    for node in spans.values():
        if node.outer_call is None and _is_model_call(node):
            response_id = node.attrs.get(RESPONSE_ID_ATTRIBUTE)
            first = by_response.setdefault(response_id, node) if isinstance(response_id, str) and response_id else node
            calls.setdefault(first.key, []).extend([] if first is node else [node])
    for node in spans.values():
        if node.outer_call is not None and node.outer_call.key in calls:
            calls[node.outer_call.key].append(node)
        elif node.outer_call is not None:  # nested in a call that joined another through its response id
            outer_id = node.outer_call.attrs.get(RESPONSE_ID_ATTRIBUTE)
            calls[by_response[outer_id].key].append(node)
    for key in calls:
        node = spans[key]
        if node.agent is not None:
            node.agent.children.append(node)
    for node in spans.values():
        if node.agent is not None and node.operation == "tool_call":
            node.agent.children.append(node)
    labels = {"tenant_attribute": tenant_attribute, "customer_attribute": customer_attribute,
              "default_tenant": default_tenant}
    events: list[dict[str, Any]] = []
    for node in spans.values():
        event = None
        if node.key in calls:
            event = _usage_event(node, calls[node.key], **labels)
        elif node.operation == "tool_call" and node.outer_call is None and _first(node.attrs, MODEL_ATTRIBUTES):
            event = _usage_event(node, [], **labels)
        elif node.operation == "agent_run":
            event = _agent_run_event(node, **labels)
        if event is not None:
            events.append(event)
    return events, total - len(events)


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
