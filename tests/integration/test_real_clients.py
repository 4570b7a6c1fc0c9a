"""Software no one here wrote, end to end: the official ``openai``, ``anthropic`` and ``google-genai`` SDKs talk to a fake
vendor on loopback (tests/fakevendor.py, the vendors' documented bodies and event streams), and their
usage reaches the real exporter process two ways:

* through our SDK helpers (``UsageClient.record_openai`` / ``record_anthropic``), where the ground
  truth is genai-prices' own usage extractor run on the very bodies the vendor sent;
* through OTLP, from the real instrumentations exporting with the real OTLP/HTTP exporter:
  opentelemetry-instrumentation-openai-v2, OpenLLMetry's -openai and -anthropic, the Anthropic SDK's
  own spans, pydantic-ai's agent instrumentation. Each instrumentation reports only part of the
  vendor's usage; the expected events below are hand-written from the fixtures and say, field by
  field, what each one carries (a 0 where the vendor reported more is a loss in that instrumentation,
  listed in the README).

Counters are read from /metrics of the exporter process; the OTLP mapping is also checked event by
event on the spans the instrumentations produced (same bytes the OTLP exporter sends).
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import anthropic
import openai
import pytest
from genai_prices import extract_usage
from google import genai
from google.genai import types as genai_types
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from exporter.client import UsageClient
from exporter.core.events import normalize_service_tier
from exporter.formats.otlp import PATH, spans_to_events
from fakevendor import FakeVendor, fixture
from groundtruth import expected_cost
from harness import ExporterProcess

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the fixtures' dated model ids

FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
          "reasoning_tokens", "audio_input_tokens", "audio_output_tokens")
# Exposed token counters: llm_tokens_total{token_type} and llm_token_details_total{token_type}.
COUNTERS = {"input_tokens": ("llm_tokens_total", "input"), "output_tokens": ("llm_tokens_total", "output"),
            "cache_read_tokens": ("llm_token_details_total", "cache_read"),
            "cache_write_tokens": ("llm_token_details_total", "cache_write"),
            "reasoning_tokens": ("llm_token_details_total", "reasoning")}
GENAI_PRICES_KEYS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",
                     "cache_read_tokens": "cache_read_tokens", "cache_write_tokens": "cache_write_tokens",
                     "cache_write_1h_tokens": "cache_write_1h_tokens", "reasoning_tokens": "output_reasoning_tokens",
                     "audio_input_tokens": "input_audio_tokens", "audio_output_tokens": "output_audio_tokens"}
CHAT_MODEL, RESPONSES_MODEL, EMBEDDING_MODEL = "o3-2025-04-16", "o4-mini-2025-04-16", "text-embedding-3-small"
CLAUDE, GEMINI = "claude-sonnet-4-20250514", "gemini-2.5-pro"


def tokens(**counts: int) -> dict[str, int]:
    return {field: counts.get(field, 0) for field in FIELDS}


# The vendor's usage in each fixture, by hand (tests/unit/test_vendor_usage.py shows the arithmetic).
CHAT = tokens(input_tokens=2006, output_tokens=300, cache_read_tokens=1920, cache_write_tokens=64, reasoning_tokens=192)
TOOL_CALL = tokens(input_tokens=1500, output_tokens=120, cache_read_tokens=1024, reasoning_tokens=64)
RESPONSES = tokens(input_tokens=5210, output_tokens=1200, cache_read_tokens=4096, cache_write_tokens=512,
                   reasoning_tokens=896)
EMBEDDING = tokens(input_tokens=8)
GEMINI_USAGE = tokens(input_tokens=5120, output_tokens=850, cache_read_tokens=4000, reasoning_tokens=650,
                      audio_input_tokens=800)
MESSAGE = tokens(input_tokens=1679, output_tokens=393, cache_read_tokens=1470, cache_write_tokens=188,
                 cache_write_1h_tokens=88, reasoning_tokens=120)


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    with ExporterProcess(tmp_path_factory.mktemp("real-clients")) as process:
        yield process


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


def counted(exporter: ExporterProcess, tenant: str) -> dict[str, float]:
    """The exporter's token counters for ``tenant``, and its request count."""
    samples = [sample for family in text_string_to_metric_families(exporter.metrics_text())
               for sample in family.samples if sample.labels.get("tenant") == tenant]
    totals = {field: sum(s.value for s in samples if s.name == name and s.labels.get("token_type") == kind)
              for field, (name, kind) in COUNTERS.items()}
    totals["requests"] = sum(s.value for s in samples if s.name == "llm_requests_total")
    totals["cost_usd"] = sum(s.value for s in samples if s.name == "llm_cost_usd_total")
    return totals


def expected_counters(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Token sums by hand; cost from genai-prices' own calculator on each call (rows need ``model``,
    ``provider`` and, where the call had one, ``service_tier``)."""
    totals: dict[str, float] = {field: sum(row[field] for row in rows) for field in COUNTERS}
    totals["requests"] = len(rows)
    totals["cost_usd"] = pytest.approx(sum(
        0.0 if row.get("operation") == "agent_run" else expected_cost(
            {**row, "timestamp": time.time(), "service_tier": normalize_service_tier(row.get("service_tier"))})
        for row in rows), rel=1e-9)
    return totals


# ---------------------------------------------------------------------------------------------------
# Our SDK helpers, fed by the official SDKs' response objects


def truth(path: str, document: dict[str, Any]) -> dict[str, int]:
    """genai-prices' own extractor on the body the fake vendor sent: the independent ground truth."""
    provider, flavor = {"/v1/chat/completions": ("openai", "chat"), "/v1/responses": ("openai", "responses"),
                        "/v1/embeddings": ("openai", "embeddings"), "/v1/messages": ("anthropic", "default"),
                        ":generateContent": ("google", "default")}[path]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        usage = extract_usage(document, provider_id=provider, api_flavor=flavor).usage
    return {ours: usage.reported_value(theirs) for ours, theirs in GENAI_PRICES_KEYS.items()}


def test_sdk_helpers_record_what_the_vendor_reported(vendor, exporter):
    oai = openai.OpenAI(base_url=vendor.url + "/v1", api_key="sk-test", max_retries=0)
    claude = anthropic.Anthropic(base_url=vendor.url, api_key="sk-ant-test", max_retries=0, open_telemetry=False)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    with UsageClient(exporter.url) as usage:
        record = {"tenant": "sdk-helpers", "customer": "c1", "duration_ms": 800}
        usage.record_openai(oai.chat.completions.create(model=CHAT_MODEL, messages=messages).model_dump(), **record)
        *_, last = oai.chat.completions.create(model=CHAT_MODEL, messages=messages, stream=True,
                                               stream_options={"include_usage": True})
        usage.record_openai(last.model_dump(), **record)  # the usage chunk of the stream
        usage.record_openai(oai.responses.create(model=RESPONSES_MODEL, input="Capital of France?").model_dump(),
                            **record)
        with oai.responses.stream(model=RESPONSES_MODEL, input="Capital of France?") as stream:
            usage.record_openai(stream.get_final_response().model_dump(), **record)
        usage.record_openai(oai.embeddings.create(model=EMBEDDING_MODEL, input="Paris").model_dump(), **record)
        usage.record_anthropic(claude.messages.create(model=CLAUDE, max_tokens=512, messages=messages).model_dump(),
                               **record)
        with claude.messages.stream(model=CLAUDE, max_tokens=512, messages=messages) as stream:
            usage.record_anthropic(stream.get_final_message().model_dump(), **record)
        gemini = genai.Client(api_key="test", http_options=genai_types.HttpOptions(base_url=vendor.url))
        usage.record_response("gemini", gemini.models.generate_content(model=GEMINI, contents="Capital?").model_dump(),
                              **record)
        assert usage.flush(timeout=30)
        assert (usage.accepted, usage.rejected) == (8, 0)
    paths = [":generateContent" if path.endswith(":generateContent") else path for path, _ in vendor.requests]
    assert paths == ["/v1/chat/completions"] * 2 + ["/v1/responses"] * 2 + ["/v1/embeddings"] + [
        "/v1/messages"] * 2 + [":generateContent"]
    sent = [truth(path, vendor.documents[path]) for path in paths]
    assert sent == [CHAT, CHAT, RESPONSES, RESPONSES, EMBEDDING, MESSAGE, MESSAGE, GEMINI_USAGE]  # hand = genai-prices
    calls = [("openai", CHAT_MODEL, "default")] * 2 + [("openai", RESPONSES_MODEL, "flex")] * 2 + [
        ("openai", EMBEDDING_MODEL, None)] + [("anthropic", CLAUDE, "standard")] * 2 + [("gcp.gemini", GEMINI, None)]
    rows = [{**usage, "provider": provider, "model": model, "service_tier": tier}
            for usage, (provider, model, tier) in zip(sent, calls)]
    assert counted(exporter, "sdk-helpers") == expected_counters(rows)


# ---------------------------------------------------------------------------------------------------
# Real instrumentations → real OTLP exporter → the exporter process


def openai_calls(vendor: FakeVendor) -> None:
    client = openai.OpenAI(base_url=vendor.url + "/v1", api_key="sk-test", max_retries=0)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    client.chat.completions.create(model=CHAT_MODEL, messages=messages)
    for _chunk in client.chat.completions.create(model=CHAT_MODEL, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}):
        pass
    client.responses.create(model=RESPONSES_MODEL, input="Capital of France?")
    client.embeddings.create(model=EMBEDDING_MODEL, input="Paris")


def anthropic_calls(vendor: FakeVendor, provider: TracerProvider | None = None) -> None:
    """A message and a streamed message; the SDK's own spans go to ``provider`` (off without one)."""
    client = anthropic.Anthropic(base_url=vendor.url, api_key="sk-ant-test", max_retries=0,
                                 open_telemetry={"tracer_provider": provider} if provider else False)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    client.messages.create(model=CLAUDE, max_tokens=512, messages=messages)
    with client.messages.stream(model=CLAUDE, max_tokens=512, messages=messages) as stream:
        stream.get_final_message()


@contextlib.contextmanager
def instrumented(instrumentor: Any, provider: TracerProvider) -> Iterator[None]:
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def run_openai_v2(vendor: FakeVendor, provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    with instrumented(OpenAIInstrumentor(), provider):
        openai_calls(vendor)


def run_openllmetry_openai(vendor: FakeVendor, provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    with instrumented(OpenAIInstrumentor(), provider):
        openai_calls(vendor)


def run_openllmetry_anthropic(vendor: FakeVendor, provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    with instrumented(AnthropicInstrumentor(), provider):
        anthropic_calls(vendor)


def run_anthropic_sdk(vendor: FakeVendor, provider: TracerProvider) -> None:
    anthropic_calls(vendor, provider)


def run_both_on_anthropic(vendor: FakeVendor, provider: TracerProvider) -> None:
    """The double-instrumentation trap: OpenLLMetry's span and, nested in it, the SDK's own span."""
    from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
    with instrumented(AnthropicInstrumentor(), provider):
        anthropic_calls(vendor, provider)


def run_pydantic_ai(vendor: FakeVendor, provider: TracerProvider) -> None:
    """Two agents: one calls a tool then answers (two chat calls), one answers at once."""
    from pydantic_ai import Agent
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.anthropic import AnthropicProvider
    from pydantic_ai.providers.openai import OpenAIProvider

    vendor.documents["/v1/chat/completions"] = [fixture("openai_chat_tool_call.json"),
                                                fixture("openai_chat_completion.json")]
    settings = InstrumentationSettings(tracer_provider=provider)
    support = Agent(OpenAIChatModel(CHAT_MODEL, provider=OpenAIProvider(base_url=vendor.url + "/v1", api_key="sk")),
                    name="support")
    support.instrument = settings

    @support.tool_plain
    def lookup_capital(country: str) -> str:
        return {"France": "Paris"}.get(country, "unknown")

    assert support.run_sync("What is the capital of France?").output
    client = anthropic.AsyncAnthropic(base_url=vendor.url, api_key="sk-ant", open_telemetry=False)
    writer = Agent(AnthropicModel(CLAUDE, provider=AnthropicProvider(anthropic_client=client)), name="writer")
    writer.instrument = settings
    assert writer.run_sync("What is the capital of France?").output


def call(operation: str, model: str, counts: dict[str, int], **more: Any) -> dict[str, Any]:
    return {"operation": operation, "model": model, **counts, **more}


# What each instrumentation's spans carry, mapped: field by field against the fixtures' truth above.
SCENARIOS: dict[str, tuple[Callable[[FakeVendor, TracerProvider], None], list[dict[str, Any]]]] = {
    # openai-v2 2.4b0: input/output only (cache reads, cache writes, reasoning lost); no Responses span.
    "openai-v2": (run_openai_v2, [
        call("chat", CHAT_MODEL, tokens(input_tokens=2006, output_tokens=300), service_tier="default"),
        call("chat", CHAT_MODEL, tokens(input_tokens=2006, output_tokens=300), service_tier="default"),
        call("embeddings", EMBEDDING_MODEL, EMBEDDING)]),
    # OpenLLMetry openai 0.62.4: cache reads and reasoning; no cache writes; streams lose reasoning and tier.
    "openllmetry-openai": (run_openllmetry_openai, [
        call("chat", CHAT_MODEL, {**CHAT, "cache_write_tokens": 0}, service_tier="default"),
        call("chat", CHAT_MODEL, {**CHAT, "cache_write_tokens": 0, "reasoning_tokens": 0}),
        call("chat", RESPONSES_MODEL, {**RESPONSES, "cache_write_tokens": 0}, service_tier="flex"),
        call("embeddings", EMBEDDING_MODEL, EMBEDDING)]),
    # OpenLLMetry anthropic 0.62.4: no 1 h split, no thinking; its stream counts one output token too many.
    "openllmetry-anthropic": (run_openllmetry_anthropic, [
        call("chat", CLAUDE, {**MESSAGE, "cache_write_1h_tokens": 0, "reasoning_tokens": 0}),
        call("chat", CLAUDE, {**MESSAGE, "cache_write_1h_tokens": 0, "reasoning_tokens": 0, "output_tokens": 394})]),
    # The Anthropic SDK's own spans (anthropic 2.10.0): everything, and time to first chunk on the stream.
    "anthropic-sdk": (run_anthropic_sdk, [
        call("chat", CLAUDE, MESSAGE, service_tier="standard"),
        call("chat", CLAUDE, MESSAGE, service_tier="standard", ttft=True)]),
    # Both at once, exported in one batch: each call counted once, the SDK's inner span winning.
    "openllmetry-and-anthropic-sdk": (run_both_on_anthropic, [
        call("chat", CLAUDE, MESSAGE, service_tier="standard"),
        call("chat", CLAUDE, MESSAGE, service_tier="standard", ttft=True)]),
    # pydantic-ai 2.68.0: per-request chat spans with cache, 1 h and thinking details; agent runs from
    # invoke_agent with their calls counted from the child spans and no tokens of their own.
    "pydantic-ai": (run_pydantic_ai, [
        call("chat", CHAT_MODEL, TOOL_CALL),
        call("chat", CHAT_MODEL, CHAT),
        call("agent_run", CHAT_MODEL, tokens(), llm_calls=2, tool_calls=1),
        call("chat", CLAUDE, MESSAGE),
        call("agent_run", CLAUDE, tokens(), llm_calls=1, tool_calls=0)]),
}


def shape(event: dict[str, Any]) -> dict[str, Any]:
    """The parts of a mapped event these tests pin down."""
    found = {"operation": event["operation"], "model": event["model"], **{f: event[f] for f in FIELDS}}
    if "service_tier" in event:
        found["service_tier"] = event["service_tier"]
    if "ttft_ms" in event:
        found["ttft"] = event["ttft_ms"] > 0
    if event["operation"] == "agent_run":
        found.update(llm_calls=event["llm_calls"], tool_calls=event["tool_calls"])
    return found


def order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: json.dumps(e, sort_keys=True))


@pytest.mark.parametrize("name", SCENARIOS)
def test_instrumentation_spans_through_otlp(name, vendor, exporter):
    run, expected = SCENARIOS[name]
    provider = TracerProvider(resource=Resource.create({"service.name": name, "tenant.id": f"otlp-{name}",
                                                        "customer.id": "c1"}))
    # One export request per flush (as a BatchSpanProcessor sends a burst of spans), plus a copy.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=exporter.url + PATH),
                                                   schedule_delay_millis=600_000, max_export_batch_size=512))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    run(vendor, provider)
    assert provider.force_flush(30_000)
    provider.shutdown()

    events, _skipped = spans_to_events(encode_spans(memory.get_finished_spans()))
    assert order([shape(e) for e in events]) == order(expected)
    rows = [{**row, "provider": "anthropic" if row["model"] == CLAUDE else "openai"} for row in expected]
    assert counted(exporter, f"otlp-{name}") == expected_counters(rows)


def test_double_instrumentation_in_separate_requests_counts_each_call_once(vendor, exporter):
    """Span by span export (SimpleSpanProcessor): OpenLLMetry's and the SDK's spans of one call arrive
    in different requests; the vendor's response id makes the second one a duplicate."""
    provider = TracerProvider(resource=Resource.create({"tenant.id": "otlp-double-apart", "customer.id": "c1"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=exporter.url + PATH)))
    duplicates = counted_duplicates(exporter)
    run_both_on_anthropic(vendor, provider)
    provider.shutdown()
    totals = counted(exporter, "otlp-double-apart")
    assert (totals["requests"], totals["input_tokens"], totals["cache_write_tokens"]) == (2, 2 * 1679, 2 * 188)
    assert counted_duplicates(exporter) - duplicates == 2


def counted_duplicates(exporter: ExporterProcess) -> float:
    return sum(sample.value for family in text_string_to_metric_families(exporter.metrics_text())
               for sample in family.samples if sample.name == "llm_exporter_events_total"
               and sample.labels.get("source") == "otlp" and sample.labels.get("result") == "duplicate")
