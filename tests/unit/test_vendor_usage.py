"""Vendor usage mapping: documented OpenAI / Anthropic response shapes → event token fields.

Expected values are computed by hand from the fixtures; the point is the cache arithmetic (OpenAI's
prompt tokens include the cached ones, Anthropic's input tokens exclude them).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.core.events import Event, Limits, validate_event
from exporter.formats.vendor_usage import TOKEN_FIELDS, USAGE_FORMATS, from_anthropic, from_openai, map_usage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def test_openai_chat_completion():
    # prompt_tokens 2006 already include the 1920 cached; completion 300 include 192 reasoning.
    assert from_openai(fixture("openai_chat_completion.json")["usage"]) == {
        "input_tokens": 2006, "output_tokens": 300, "cache_read_tokens": 1920, "cache_write_tokens": 0,
        "reasoning_tokens": 192}


def test_openai_responses_api():
    assert from_openai(fixture("openai_responses.json")["usage"]) == {
        "input_tokens": 5210, "output_tokens": 1200, "cache_read_tokens": 4096, "cache_write_tokens": 0,
        "reasoning_tokens": 896}


def test_anthropic_message_adds_cache_tokens_to_input():
    # 21 uncached + 188 written to the cache + 1470 read from it = 1679 input tokens.
    assert from_anthropic(fixture("anthropic_message.json")["usage"]) == {
        "input_tokens": 1679, "output_tokens": 393, "cache_read_tokens": 1470, "cache_write_tokens": 188,
        "reasoning_tokens": 0}


def test_openai_embeddings_and_null_details():
    assert map_usage("openai", {"prompt_tokens": 8, "total_tokens": 8}) == {
        "input_tokens": 8, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    assert map_usage("openai", {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None,
                                "completion_tokens_details": None})["input_tokens"] == 10
    assert map_usage("anthropic", {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": None,
                                   "cache_creation_input_tokens": None})["input_tokens"] == 5


@pytest.mark.parametrize(("fmt", "name"), [("openai", "openai_chat_completion.json"),
                                           ("openai", "openai_responses.json"),
                                           ("anthropic", "anthropic_message.json")])
def test_mapped_fields_pass_the_real_validator(fmt, name):
    response = fixture(name)
    mapped = map_usage(fmt, response["usage"])
    event = validate_event({"id": "x", "timestamp": time.time(), "tenant": "t", "customer": "c",
                            "model": response["model"], "duration_ms": 900, "status": "ok", **mapped},
                           time.time(), Limits())
    assert isinstance(event, Event), event
    assert {f: getattr(event, f) for f in TOKEN_FIELDS} == mapped


@pytest.mark.parametrize(("fmt", "usage", "errors"), [
    ("gemini", {}, [("usage_format", "must be one of anthropic, openai")]),
    (None, {}, [("usage_format", "must be one of anthropic, openai")]),
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
     [("usage.input_tokens_details.cached_tokens", "parent must be a JSON object")]),
    ("openai", {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": {"n": 1}}},
     [("usage.prompt_tokens_details.cached_tokens", "must be a non-negative integer")]),
    ("anthropic", {"output_tokens": 5, "cache_read_input_tokens": -2},
     [("usage.input_tokens", "is required"), ("usage.cache_read_input_tokens", "must be >= 0")]),
])
def test_bad_input_gives_field_errors(fmt, usage, errors):
    assert map_usage(fmt, usage) == errors


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=30), children, max_size=5),
    max_leaves=20)
usage_keys = st.sampled_from(["prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
                              "prompt_tokens_details", "completion_tokens_details", "input_tokens_details",
                              "output_tokens_details", "cached_tokens", "reasoning_tokens",
                              "cache_read_input_tokens", "cache_creation_input_tokens"])
usage_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda children: st.dictionaries(usage_keys, children, max_size=6) | st.lists(children, max_size=2),
    max_leaves=15)


@given(fmt=st.sampled_from([*USAGE_FORMATS, "other"]) | json_values, usage=json_values | usage_like)
def test_map_usage_never_raises(fmt, usage):
    result = map_usage(fmt, usage)
    if isinstance(result, dict):
        assert set(result) == set(TOKEN_FIELDS)
        assert all(type(v) is int and v >= 0 for v in result.values())
    else:
        assert result and all(isinstance(f, str) and isinstance(m, str) for f, m in result)
