"""OTLP span → event mapping: every attribute name we read, nested duplicates, agent runs.

Spans are built as protobuf messages here (the real instrumentations' spans are in
tests/integration/test_real_clients.py); expected events are written out by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from exporter.formats.otlp import TOKEN_ATTRIBUTES, spans_to_events

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")


def request(*spans: dict[str, Any]) -> ExportTraceServiceRequest:
    """Spans given as {"id": int, "parent": int | None, "attrs": {...}, "error": bool}, 2 s each."""
    message = ExportTraceServiceRequest()
    resource = message.resource_spans.add()
    attribute = resource.resource.attributes.add()
    attribute.key, attribute.value.string_value = "tenant.id", "acme"
    scope = resource.scope_spans.add()
    for spec in spans:
        span = scope.spans.add()
        span.trace_id = TRACE
        span.span_id = spec["id"].to_bytes(8, "big")
        if spec.get("parent"):
            span.parent_span_id = spec["parent"].to_bytes(8, "big")
        span.start_time_unix_nano = 1_800_000_000 * 10**9
        span.end_time_unix_nano = span.start_time_unix_nano + 2 * 10**9
        if spec.get("error"):
            span.status.code = Status.STATUS_CODE_ERROR
        for key, value in {"customer.id": "c1", **spec.get("attrs", {})}.items():
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, bool):
                kv.value.bool_value = value
            elif isinstance(value, int):
                kv.value.int_value = value
            elif isinstance(value, float):
                kv.value.double_value = value
            else:
                kv.value.string_value = value
    return message


def events(*spans: dict[str, Any]) -> list[dict[str, Any]]:
    return spans_to_events(request(*spans))[0]


CHAT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}


@pytest.mark.parametrize(("field", "name"), [(f, n) for f, names in TOKEN_ATTRIBUTES.items() for n in names])
def test_every_token_attribute_name_is_read(field, name):
    totals = {} if field in ("input_tokens", "output_tokens") else {
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 1000}
    (event,) = events({"id": 1, "attrs": {**CHAT, **totals, name: 7}})
    assert event[field] == 7
    assert all(event[other] == (1000 if totals and other in ("input_tokens", "output_tokens") else 0)
               for other in TOKEN_ATTRIBUTES if other != field)


def test_first_name_wins_over_older_names():
    (event,) = events({"id": 1, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.prompt_tokens": 90,
                                          "gen_ai.usage.reasoning.output_tokens": 5, "gen_ai.usage.reasoning_tokens": 4}})
    assert (event["input_tokens"], event["reasoning_tokens"]) == (100, 5)


def test_anthropic_sdk_span():
    """Attributes exactly as the Anthropic SDK's own span (anthropic 2.10.0) sets them."""
    (event,) = events({"id": 1, "attrs": {
        "gen_ai.provider.name": "anthropic", "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.response.model": "claude-sonnet-4-5-20250929",
        "gen_ai.usage.input_tokens": 1679, "gen_ai.usage.cache_write.input_tokens": 188,
        "gen_ai.usage.cache_read.input_tokens": 1470, "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 100,
        "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 88, "anthropic.response.service_tier": "standard",
        "gen_ai.usage.output_tokens": 393, "gen_ai.usage.reasoning.output_tokens": 120,
        "gen_ai.response.time_to_first_chunk": 0.25}})
    assert event == {
        "id": TRACE.hex() + (1).to_bytes(8, "big").hex(), "timestamp": 1_800_000_002.0,
        "model": "claude-sonnet-4-5-20250929", "operation": "chat", "duration_ms": 2000.0, "status": "ok",
        "tenant": "acme", "customer": "c1", "provider": "anthropic", "input_tokens": 1679, "output_tokens": 393,
        "cache_read_tokens": 1470, "cache_write_tokens": 188, "cache_write_1h_tokens": 88, "reasoning_tokens": 120,
        "audio_input_tokens": 0, "audio_output_tokens": 0, "service_tier": "standard", "ttft_ms": 250.0}


@pytest.mark.parametrize(("attrs", "operation"), [
    ({"gen_ai.system": "openai", "gen_ai.request.model": "m"}, "chat"),
    ({"llm.request.type": "embedding", "gen_ai.request.model": "m"}, "embeddings"),
    ({"llm.request.type": "completion", "gen_ai.request.model": "m"}, "text_completion"),
    ({"openinference.span.kind": "LLM", "llm.model_name": "m", "llm.provider": "openai"}, "chat"),
    ({"openinference.span.kind": "EMBEDDING", "embedding.model_name": "m"}, "embeddings"),
    ({"gen_ai.operation.name": "generate_content", "gen_ai.request.model": "m"}, "chat"),
])
def test_operation_from_current_and_older_conventions(attrs, operation):
    (event,) = events({"id": 1, "attrs": attrs})
    assert (event["operation"], event["model"]) == (operation, "m")


@pytest.mark.parametrize("attrs", [
    {"http.request.method": "GET"},
    {"gen_ai.operation.name": "create_agent", "gen_ai.request.model": "m"},
    {"openinference.span.kind": "CHAIN", "llm.model_name": "m"},
    {"llm.request.type": "rerank", "gen_ai.request.model": "m"},
])
def test_spans_that_are_not_model_calls_are_skipped(attrs):
    assert spans_to_events(request({"id": 1, "attrs": attrs})) == ([], 1)


def test_nested_model_call_spans_are_one_call():
    # pydantic-ai's chat span around openai-v2's span around OpenLLMetry's: one call, three views.
    outer = {"id": 1, "attrs": {**CHAT, "gen_ai.system": "openai", "gen_ai.usage.input_tokens": 2006,
                                "gen_ai.usage.output_tokens": 300, "gen_ai.usage.cache_read.input_tokens": 1920}}
    middle = {"id": 2, "parent": 1, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 2006,
                                              "gen_ai.usage.output_tokens": 300,
                                              "openai.response.service_tier": "default"}}
    inner = {"id": 3, "parent": 2, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 2006,
                                             "gen_ai.usage.output_tokens": 300, "gen_ai.usage.reasoning_tokens": 192}}
    found, skipped = spans_to_events(request(inner, middle, outer))
    assert skipped == 2
    (event,) = found
    assert event["id"].endswith((1).to_bytes(8, "big").hex())
    assert (event["input_tokens"], event["output_tokens"], event["cache_read_tokens"], event["reasoning_tokens"],
            event["service_tier"]) == (2006, 300, 1920, 192, "default")


def test_innermost_span_wins_where_two_views_disagree():
    # OpenLLMetry's Anthropic stream span says 394 output tokens; the SDK's own span under it, 393.
    outer = {"id": 1, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 1679, "gen_ai.usage.output_tokens": 394}}
    inner = {"id": 2, "parent": 1, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 1679,
                                             "gen_ai.usage.output_tokens": 393,
                                             "gen_ai.usage.reasoning.output_tokens": 120}}
    (event,) = events(outer, inner)
    assert (event["output_tokens"], event["reasoning_tokens"]) == (393, 120)


def test_agent_run_counts_its_calls_and_carries_no_tokens():
    agent = {"id": 10, "attrs": {"gen_ai.operation.name": "invoke_agent", "model_name": "gpt-4o",
                                 "gen_ai.agent.name": "support", "gen_ai.aggregated_usage.input_tokens": 3000,
                                 "gen_ai.usage.input_tokens": 3000}}
    chat1 = {"id": 11, "parent": 10, "attrs": {**CHAT, "gen_ai.provider.name": "openai",
                                               "gen_ai.usage.input_tokens": 1000}}
    duplicate = {"id": 12, "parent": 11, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 1000}}
    tool = {"id": 13, "parent": 10, "attrs": {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}}
    chat2 = {"id": 14, "parent": 10, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 2000}}
    sub_agent = {"id": 20, "parent": 13, "attrs": {"gen_ai.operation.name": "invoke_agent",
                                                   "gen_ai.request.model": "gpt-4o-mini"}}
    sub_chat = {"id": 21, "parent": 20, "attrs": {**CHAT, "gen_ai.request.model": "gpt-4o-mini",
                                                  "gen_ai.usage.input_tokens": 50}}
    found = {e["id"][-2:]: e for e in events(agent, chat1, duplicate, tool, chat2, sub_agent, sub_chat)}
    assert set(found) == {"0a", "0b", "0e", "14", "15"}  # agents 10 and 20, chats 11, 14, 21
    run = found["0a"]
    assert (run["operation"], run["model"], run["llm_calls"], run["tool_calls"], run["provider"]) == (
        "agent_run", "gpt-4o", 2, 1, "openai")
    assert all(run[field] == 0 for field in TOKEN_ATTRIBUTES)
    assert (found["14"]["llm_calls"], found["14"]["tool_calls"], found["14"]["model"]) == (1, 0, "gpt-4o-mini")
    assert sum(e["input_tokens"] for e in found.values()) == 1000 + 2000 + 50


def test_agent_run_without_children_in_the_request_and_failed():
    (run,) = events({"id": 1, "error": True, "attrs": {"gen_ai.operation.name": "invoke_agent",
                                                         "gen_ai.request.model": "claude-sonnet-4-5",
                                                         "error.type": "TimeoutError"}})
    assert (run["status"], run["error_type"], run["llm_calls"], run["duration_ms"]) == ("error", "timeout", 0, 2000.0)


def test_agent_without_any_model_is_skipped():
    assert spans_to_events(request({"id": 1, "attrs": {"gen_ai.operation.name": "invoke_agent"}})) == ([], 1)


def test_parent_cycle_and_repeated_span_terminate():
    a = {"id": 1, "parent": 2, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 5}}
    b = {"id": 2, "parent": 1, "attrs": {"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "m"}}
    found, skipped = spans_to_events(request(a, b, a))
    assert len(found) + skipped == 3 and len(found) >= 1


def test_long_chain_is_linear():
    chain = [{"id": 1, "attrs": {"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "m"}}]
    chain += [{"id": i, "parent": i - 1, "attrs": {"x": 1}} for i in range(2, 20_000)]
    chain.append({"id": 20_000, "parent": 19_999, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 3}})
    found = events(*chain)
    assert sorted((e["operation"], e.get("llm_calls")) for e in found) == [("agent_run", 1), ("chat", None)]


def test_same_response_id_is_one_call_even_unnested():
    # OpenLLMetry's anthropic span and the SDK's own span are separate root spans of one call.
    ollm = {"id": 1, "attrs": {**CHAT, "gen_ai.response.id": "msg_01", "gen_ai.usage.input_tokens": 1679,
                               "gen_ai.usage.output_tokens": 394}}
    sdk = {"id": 2, "attrs": {**CHAT, "gen_ai.response.id": "msg_01", "gen_ai.usage.input_tokens": 1679,
                              "gen_ai.usage.output_tokens": 393, "gen_ai.usage.reasoning.output_tokens": 120}}
    nested_in_sdk = {"id": 3, "parent": 2, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 1}}
    other = {"id": 4, "attrs": {**CHAT, "gen_ai.response.id": "msg_02", "gen_ai.usage.input_tokens": 7}}
    found, skipped = spans_to_events(request(ollm, sdk, nested_in_sdk, other))
    assert skipped == 2
    assert sorted((e["id"], e["input_tokens"], e["output_tokens"]) for e in found) == [
        ("response:msg_01", 1679, 393), ("response:msg_02", 7, 0)]
    # Exported alone, in another request, the SDK's span gets the same id: the exporter drops it as a duplicate.
    (again,) = events(sdk)
    assert again["id"] == "response:msg_01"


def test_input_counted_without_the_cache_gets_it_added_back():
    # An instrumentation that copied Anthropic's usage.input_tokens (21, without the 1470 + 188 cached).
    (event,) = events({"id": 1, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 21,
                                          "gen_ai.usage.cache_read_input_tokens": 1470,
                                          "gen_ai.usage.cache_creation_input_tokens": 188}})
    assert event["input_tokens"] == 1679
    (event,) = events({"id": 1, "attrs": {**CHAT, "gen_ai.usage.input_tokens": 1679,
                                          "gen_ai.usage.cache_read.input_tokens": 1470}})
    assert event["input_tokens"] == 1679  # the conventions' way: already included
