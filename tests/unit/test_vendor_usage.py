"""Vendor usage mapping: documented OpenAI / Anthropic / Gemini / Bedrock shapes → event token fields.

Two ground truths: hand calculation from the fixtures (the point is the cache arithmetic: OpenAI's
prompt tokens include the cached ones, Anthropic's and Bedrock's input tokens exclude them, Gemini's
thoughts and tool-use prompt come on top), and genai-prices' own usage extractors, which must agree
with us on every documented and random usage object.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import pytest
from genai_prices import extract_usage
from hypothesis import given
from hypothesis import strategies as st

from exporter.core.events import Event, Limits, validate_event
from exporter.formats.vendor_usage import TOKEN_FIELDS, USAGE_FORMATS, from_response, map_usage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ZERO = dict.fromkeys(TOKEN_FIELDS, 0)
# Our field → genai-prices' usage key.
GENAI_PRICES_KEYS = {"input_tokens": "input_tokens", "output_tokens": "output_tokens",
                     "cache_read_tokens": "cache_read_tokens", "cache_write_tokens": "cache_write_tokens",
                     "cache_write_1h_tokens": "cache_write_1h_tokens", "reasoning_tokens": "output_reasoning_tokens",
                     "audio_input_tokens": "input_audio_tokens", "audio_output_tokens": "output_audio_tokens"}
# (our usage_format, genai-prices provider id, its api_flavor) for each fixture.
FIXTURE_FORMATS = {"openai_chat_completion.json": ("openai", "openai", "chat"),
                   "openai_chat_audio.json": ("openai", "openai", "chat"),
                   "openai_responses.json": ("openai", "openai", "responses"),
                   "openai_embeddings.json": ("openai", "openai", "embeddings"),
                   "anthropic_message.json": ("anthropic", "anthropic", "default"),
                   "gemini_generate_content.json": ("gemini", "google", "default"),
                   "bedrock_converse.json": ("bedrock", "aws", "default")}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def mapped(name: str) -> dict:
    usage, _model, _tier = from_response(FIXTURE_FORMATS[name][0], fixture(name))
    return map_usage(FIXTURE_FORMATS[name][0], usage)


def genai_prices_usage(document: dict, provider_id: str, flavor: str) -> dict[str, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices about the fixtures' (real, dated) model ids
        usage = extract_usage(document, provider_id=provider_id, api_flavor=flavor).usage
    return {ours: usage.reported_value(theirs) for ours, theirs in GENAI_PRICES_KEYS.items()}


def test_openai_chat_completion():
    # prompt_tokens 2006 already include the 1920 cached and the 64 written to the cache;
    # completion 300 include 192 reasoning.
    assert mapped("openai_chat_completion.json") == {
        **ZERO, "input_tokens": 2006, "output_tokens": 300, "cache_read_tokens": 1920, "cache_write_tokens": 64,
        "reasoning_tokens": 192}


def test_openai_audio_tokens_are_parts_of_prompt_and_completion():
    assert mapped("openai_chat_audio.json") == {
        **ZERO, "input_tokens": 1200, "output_tokens": 310, "audio_input_tokens": 1100, "audio_output_tokens": 300}


def test_openai_responses_api():
    assert mapped("openai_responses.json") == {
        **ZERO, "input_tokens": 5210, "output_tokens": 1200, "cache_read_tokens": 4096, "cache_write_tokens": 512,
        "reasoning_tokens": 896}
    assert from_response("openai", fixture("openai_responses.json"))[1:] == ("o4-mini-2025-04-16", "flex")


def test_anthropic_message_adds_cache_tokens_to_input():
    # 21 uncached + 188 written to the cache (100 for 5 min, 88 for 1 h) + 1470 read = 1679 input tokens;
    # 120 of the 393 output tokens were thinking.
    assert mapped("anthropic_message.json") == {
        **ZERO, "input_tokens": 1679, "output_tokens": 393, "cache_read_tokens": 1470, "cache_write_tokens": 188,
        "cache_write_1h_tokens": 88, "reasoning_tokens": 120, "service_tier": "standard"}


def test_anthropic_ttl_split_alone_gives_the_writes():
    assert map_usage("anthropic", {"input_tokens": 3, "output_tokens": 1, "cache_creation": {
        "ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}}) == {
        **ZERO, "input_tokens": 33, "output_tokens": 1, "cache_write_tokens": 30, "cache_write_1h_tokens": 20}


def test_gemini_usage_metadata():
    # prompt 5000 (4000 of them cached, 800 audio) + 120 tool-use prompt = 5120 input;
    # 200 candidates + 650 thoughts = 850 output.
    expected = {**ZERO, "input_tokens": 5120, "output_tokens": 850, "cache_read_tokens": 4000,
                "reasoning_tokens": 650, "audio_input_tokens": 800}
    assert mapped("gemini_generate_content.json") == expected
    snake = {"usage_metadata": {"prompt_token_count": 5000, "candidates_token_count": 200,
                                "cached_content_token_count": 4000, "thoughts_token_count": 650,
                                "tool_use_prompt_token_count": 120, "total_token_count": 5970,
                                "prompt_tokens_details": [{"modality": "TEXT", "token_count": 4200},
                                                          {"modality": "AUDIO", "token_count": 800}]},
             "model_version": "gemini-2.5-pro"}
    usage, model, _ = from_response("gemini", snake)
    assert (map_usage("gemini", usage), model) == (expected, "gemini-2.5-pro")


def test_bedrock_converse_usage():
    # 30 uncached + 2000 read + 1000 written (600 for 1 h) = 3030 input.
    assert mapped("bedrock_converse.json") == {
        **ZERO, "input_tokens": 3030, "output_tokens": 250, "cache_read_tokens": 2000, "cache_write_tokens": 1000,
        "cache_write_1h_tokens": 600}
    assert from_response("bedrock", fixture("bedrock_converse.json"))[1:] == (None, "priority")


@pytest.mark.parametrize("name", sorted(FIXTURE_FORMATS))
def test_fixtures_agree_with_genai_prices_extractors(name):
    fmt, provider_id, flavor = FIXTURE_FORMATS[name]
    ours = {field: mapped(name)[field] for field in TOKEN_FIELDS}
    assert ours == genai_prices_usage(fixture(name), provider_id, flavor)


counts = st.integers(0, 10**6)


@st.composite
def vendor_usage(draw: st.DrawFn) -> tuple[str, str, str, dict]:
    """A random usage object each vendor could send, with the keys it may leave out left out."""
    def maybe(key: str, value: object) -> dict:
        return {key: value} if draw(st.booleans()) else {}

    kind = draw(st.sampled_from(["chat", "responses", "anthropic", "gemini", "bedrock"]))
    if kind == "chat":
        usage = {"prompt_tokens": draw(counts), "completion_tokens": draw(counts),
                 **maybe("prompt_tokens_details", {"cached_tokens": draw(counts), "audio_tokens": draw(counts),
                                                   **maybe("cache_write_tokens", draw(counts))}),
                 **maybe("completion_tokens_details", {"reasoning_tokens": draw(counts),
                                                       "audio_tokens": draw(counts)})}
        return "openai", "openai", "chat", usage
    if kind == "responses":
        usage = {"input_tokens": draw(counts), "output_tokens": draw(counts),
                 "input_tokens_details": {"cached_tokens": draw(counts), "cache_write_tokens": draw(counts)},
                 "output_tokens_details": {"reasoning_tokens": draw(counts)}}
        return "openai", "openai", "responses", usage
    if kind == "anthropic":
        five, hour = draw(counts), draw(counts)
        usage = {"input_tokens": draw(counts), "output_tokens": draw(counts),
                 **maybe("cache_read_input_tokens", draw(counts)),
                 **maybe("cache_creation_input_tokens", five + hour),
                 **maybe("output_tokens_details", {"thinking_tokens": draw(counts)})}
        if "cache_creation_input_tokens" in usage and draw(st.booleans()):
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour}
        return "anthropic", "anthropic", "default", usage
    if kind == "gemini":
        modalities = st.lists(st.fixed_dictionaries({"modality": st.sampled_from(["TEXT", "AUDIO", "IMAGE"]),
                                                     "tokenCount": counts}), max_size=3, unique_by=lambda d: d["modality"])
        usage = {"promptTokenCount": draw(counts), **maybe("candidatesTokenCount", draw(counts)),
                 **maybe("cachedContentTokenCount", draw(counts)), **maybe("thoughtsTokenCount", draw(counts)),
                 **maybe("toolUsePromptTokenCount", draw(counts)), **maybe("promptTokensDetails", draw(modalities)),
                 **maybe("candidatesTokensDetails", draw(modalities))}
        return "gemini", "google", "default", usage
    five, hour = draw(counts), draw(counts)
    usage = {"inputTokens": draw(counts), "outputTokens": draw(counts), **maybe("cacheReadInputTokens", draw(counts)),
             **maybe("cacheWriteInputTokens", five + hour)}
    if "cacheWriteInputTokens" in usage and draw(st.booleans()):
        usage["cacheDetails"] = [{"ttl": "1h", "inputTokens": hour}, {"ttl": "5m", "inputTokens": five}]
    return "bedrock", "aws", "default", usage


@given(vendor_usage())
def test_random_usage_agrees_with_genai_prices_extractors(case):
    fmt, provider_id, flavor, usage = case
    ours = map_usage(fmt, usage)
    root = "usageMetadata" if fmt == "gemini" else "usage"
    assert {field: ours[field] for field in TOKEN_FIELDS} == genai_prices_usage({root: usage}, provider_id, flavor)


@pytest.mark.parametrize("name", sorted(FIXTURE_FORMATS))
def test_mapped_fields_pass_the_real_validator(name):
    response = fixture(name)
    fields = mapped(name)
    event = validate_event({"id": "x", "timestamp": time.time(), "tenant": "t", "customer": "c",
                            "model": "m", "duration_ms": 900, "status": "ok", **fields}, time.time(), Limits())
    assert isinstance(event, Event), (response, event)
    assert {f: getattr(event, f) for f in TOKEN_FIELDS} == {f: fields[f] for f in TOKEN_FIELDS}


def test_usage_format_in_an_event_replaces_token_fields():
    usage = fixture("gemini_generate_content.json")["usageMetadata"]
    event = validate_event({"id": "x", "timestamp": time.time(), "tenant": "t", "customer": "c", "model": "m",
                            "duration_ms": 900, "status": "ok", "input_tokens": 1, "usage_format": "gemini",
                            "usage": usage}, time.time(), Limits())
    assert isinstance(event, Event) and (event.input_tokens, event.output_tokens) == (5120, 850)


@pytest.mark.parametrize(("fmt", "usage", "errors"), [
    ("google", {}, [("usage_format", "must be one of anthropic, bedrock, gemini, openai")]),
    (None, {}, [("usage_format", "must be one of anthropic, bedrock, gemini, openai")]),
    ("openai", "12 tokens", [("usage", "must be a JSON object (the vendor's usage object)")]),
    ("openai", None, [("usage", "must be a JSON object (the vendor's usage object)")]),
    ("openai", [], [("usage", "must be a JSON object (the vendor's usage object)")]),
    ("openai", {}, [("usage.input_tokens", "is required")]),
    ("openai", {"prompt_tokens": -1, "completion_tokens": "3"},
     [("usage.prompt_tokens", "must be >= 0"), ("usage.completion_tokens", "must be a non-negative integer")]),
    ("openai", {"prompt_tokens": 3.0, "completion_tokens": True},
     [("usage.prompt_tokens", "must be a non-negative integer"),
      ("usage.completion_tokens", "must be a non-negative integer")]),
    ("openai", {"input_tokens": 5, "input_tokens_details": [1, 2]},
     [("usage.input_tokens_details", "must be a JSON object")]),
    ("openai", {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": {"n": 1}}},
     [("usage.prompt_tokens_details.cached_tokens", "must be a non-negative integer")]),
    ("anthropic", {"output_tokens": 5, "cache_read_input_tokens": -2, "service_tier": 3},
     [("usage.input_tokens", "is required"), ("usage.cache_read_input_tokens", "must be >= 0"),
      ("usage.service_tier", "must be a string")]),
    ("gemini", {}, [("usage.promptTokenCount", "is required")]),
    ("gemini", {"promptTokenCount": 5, "promptTokensDetails": {"modality": "AUDIO"}},
     [("usage.promptTokensDetails", "must be a JSON array")]),
    ("gemini", {"prompt_token_count": 5, "prompt_tokens_details": [7, {"modality": "AUDIO", "token_count": "x"}]},
     [("usage.prompt_tokens_details[0]", "must be a JSON object"),
      ("usage.prompt_tokens_details[1].token_count", "must be a non-negative integer")]),
    ("bedrock", {"outputTokens": 1, "cacheDetails": [{"ttl": "1h", "inputTokens": -1}]},
     [("usage.cacheDetails[0].inputTokens", "must be >= 0"), ("usage.inputTokens", "is required")]),
])
def test_bad_input_gives_field_errors(fmt, usage, errors):
    assert map_usage(fmt, usage) == errors


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=30), children, max_size=5),
    max_leaves=20)
usage_keys = st.sampled_from(["prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
                              "prompt_tokens_details", "completion_tokens_details", "input_tokens_details",
                              "output_tokens_details", "cached_tokens", "reasoning_tokens", "audio_tokens",
                              "cache_write_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
                              "cache_creation", "ephemeral_1h_input_tokens", "thinking_tokens", "service_tier",
                              "promptTokenCount", "prompt_token_count", "promptTokensDetails", "modality",
                              "tokenCount", "thoughtsTokenCount", "inputTokens", "cacheDetails", "ttl"])
usage_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4) | st.just("AUDIO") | st.just("1h"),
    lambda children: st.dictionaries(usage_keys, children, max_size=6) | st.lists(children, max_size=2),
    max_leaves=15)


@given(fmt=st.sampled_from([*USAGE_FORMATS, "other"]) | json_values, usage=json_values | usage_like)
def test_map_usage_never_raises(fmt, usage):
    result = map_usage(fmt, usage)
    if isinstance(result, dict):
        assert set(result) - {"service_tier"} == set(TOKEN_FIELDS)
        assert all(type(result[f]) is int and result[f] >= 0 for f in TOKEN_FIELDS)
    else:
        assert result and all(isinstance(f, str) and isinstance(m, str) for f, m in result)
