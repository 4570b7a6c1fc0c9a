"""Vendor usage objects → our event token fields, for every vendor shape we accept.

Vendors count the same tokens differently. OpenAI's prompt/input tokens already *include* cached
and audio tokens; Anthropic's and Bedrock's ``input_tokens`` *exclude* cache reads and writes;
Gemini reports thinking and tool-use prompt tokens *beside* its candidates and prompt counts. Our
events treat cache, audio and reasoning tokens as parts of input and output (README, event fields),
so each vendor needs its own arithmetic; getting it wrong double-counts or under-bills.

The arithmetic is the one genai-prices' own usage extractors do (``genai_prices.extract_usage``;
tests/unit/test_vendor_usage.py checks equality on documented and random usage objects). We do not
call the extractors at run time: this module also runs inside the client SDK, which must stay
standard library + httpx, and a client needs *every* bad field of a usage object named at once,
where an extractor stops at the first with an exception.

Pure functions on plain JSON values: bad input becomes ``(field, message)`` errors, never an exception.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens",
                "reasoning_tokens", "audio_input_tokens", "audio_output_tokens")


class UsageError(ValueError):
    """A usage object that cannot be mapped; ``errors`` holds (field, message) pairs for the client."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))
        self.errors = errors


class _Counts:
    """Reads token counts out of one usage object, collecting every problem instead of stopping at the first."""

    def __init__(self, usage: Mapping[str, Any]) -> None:
        self.usage = usage
        self.errors: list[tuple[str, str]] = []

    def _walk(self, path: tuple[str, ...]) -> Any:
        value: Any = self.usage
        for depth, key in enumerate(path):
            if value is None:
                return None
            if not isinstance(value, Mapping):
                self.fail("usage." + ".".join(path[:depth]), "must be a JSON object")
                return None
            value = value.get(key)
        return value

    def fail(self, field: str, message: str) -> None:
        """Record a problem once, however many counts are read below the same bad parent."""
        if (field, message) not in self.errors:
            self.errors.append((field, message))

    def _count(self, field: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, "must be a non-negative integer")
            return 0
        if value < 0:
            self.fail(field, "must be >= 0")
            return 0
        return value

    def has(self, *path: str) -> bool:
        """Whether the count at ``path`` is given (absent and null both mean "not reported")."""
        value: Any = self.usage
        for key in path:
            if not isinstance(value, Mapping):
                return False
            value = value.get(key)
        return value is not None

    def get(self, *path: str, required: bool = False) -> int:
        """The count at ``path`` (e.g. ``prompt_tokens_details``, ``cached_tokens``); absent or null is 0,
        because vendors omit or null the details they did not use."""
        value = self._walk(path)
        if value is None:
            if required:
                self.fail("usage." + ".".join(path), "is required")
            return 0
        return self._count("usage." + ".".join(path), value)

    def matching(self, list_key: str, match_key: str, match: str, count_key: str) -> int:
        """The sum of ``count_key`` over the items of the list ``list_key`` whose ``match_key`` is ``match``
        (Gemini's per-modality details, Bedrock's cache writes per TTL)."""
        items = self.usage.get(list_key)
        if items is None:
            return 0
        if not isinstance(items, list):
            self.fail(f"usage.{list_key}", "must be a JSON array")
            return 0
        total = 0
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                self.fail(f"usage.{list_key}[{index}]", "must be a JSON object")
            elif item.get(match_key) == match and item.get(count_key) is not None:
                total += self._count(f"usage.{list_key}[{index}].{count_key}", item[count_key])
        return total

    def text(self, *path: str) -> str | None:
        """An optional string (a service tier); anything else is an error."""
        value = self._walk(path)
        if value is not None and not isinstance(value, str):
            self.fail("usage." + ".".join(path), "must be a string")
            return None
        return value

    def result(self, service_tier: str | None = None, **fields: int) -> dict[str, Any]:
        if self.errors:
            raise UsageError(self.errors)
        return {**fields, "service_tier": service_tier} if service_tier is not None else fields


def from_openai(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI Chat Completions / Embeddings (``prompt_tokens``...) or Responses / Realtime (``input_tokens``...).

    Cached, cache-write and audio tokens are already inside the prompt count, reasoning and audio
    tokens inside the completion count, so all map across unchanged. Responses' cache writes by
    retention (``cache_write_tokens_details``: 30 min / 12 h) have no 1-hour part: they stay plain
    cache writes. The service tier is on the response, not in its usage (the client SDK reads it).
    Raises :class:`UsageError`.
    """
    counts = _Counts(usage)
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt, completion, prompt_details, completion_details = (
            "prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details")
    else:  # Responses say input_tokens_details; Realtime's response.done says input_token_details
        prompt, completion = "input_tokens", "output_tokens"
        prompt_details = "input_token_details" if "input_token_details" in usage else "input_tokens_details"
        completion_details = "output_token_details" if "output_token_details" in usage else "output_tokens_details"
    return counts.result(
        input_tokens=counts.get(prompt, required=True),
        output_tokens=counts.get(completion),
        cache_read_tokens=counts.get(prompt_details, "cached_tokens"),
        cache_write_tokens=counts.get(prompt_details, "cache_write_tokens"),
        cache_write_1h_tokens=0,
        reasoning_tokens=counts.get(completion_details, "reasoning_tokens"),
        audio_input_tokens=counts.get(prompt_details, "audio_tokens"),
        audio_output_tokens=counts.get(completion_details, "audio_tokens"),
    )


def from_anthropic(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic Messages usage: ``input_tokens`` excludes the cache, so input is the sum of all three.

    ``cache_creation`` splits the writes by TTL (5 min / 1 h); when only the split is given, the
    writes are its sum. Thinking tokens (``output_tokens_details.thinking_tokens``) are part of
    ``output_tokens``. ``service_tier`` (standard / priority / batch) is in the usage itself.
    Raises :class:`UsageError`.
    """
    counts = _Counts(usage)
    uncached = counts.get("input_tokens", required=True)
    cache_read = counts.get("cache_read_input_tokens")
    write_1h = counts.get("cache_creation", "ephemeral_1h_input_tokens")
    if counts.has("cache_creation_input_tokens"):
        cache_write = counts.get("cache_creation_input_tokens")
    else:
        cache_write = counts.get("cache_creation", "ephemeral_5m_input_tokens") + write_1h
    return counts.result(
        input_tokens=uncached + cache_read + cache_write,
        output_tokens=counts.get("output_tokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=counts.get("output_tokens_details", "thinking_tokens"),
        audio_input_tokens=0,
        audio_output_tokens=0,
        service_tier=counts.text("service_tier"),
    )


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def from_gemini(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Google Gemini ``usageMetadata`` (REST, camelCase) or ``usage_metadata`` (google-genai SDK's
    ``model_dump()``, snake_case).

    ``promptTokenCount`` includes the cached content; tool-use prompt tokens (results of built-in
    tools fed back to the model) come on top of it as input, thinking tokens on top of the
    candidates as output. Audio is the ``AUDIO`` modality of the prompt, tool-use prompt and
    candidates details. Raises :class:`UsageError`.
    """
    snake = any(key in usage for key in ("prompt_token_count", "candidates_token_count", "cached_content_token_count"))
    key: Callable[[str], str] = _snake if snake else str
    counts = _Counts(usage)

    def audio(details: str) -> int:
        return counts.matching(key(details), "modality", "AUDIO", key("tokenCount"))

    thoughts = counts.get(key("thoughtsTokenCount"))
    return counts.result(
        input_tokens=counts.get(key("promptTokenCount"), required=True) + counts.get(key("toolUsePromptTokenCount")),
        output_tokens=counts.get(key("candidatesTokenCount")) + thoughts,
        cache_read_tokens=counts.get(key("cachedContentTokenCount")),
        cache_write_tokens=0,
        cache_write_1h_tokens=0,
        reasoning_tokens=thoughts,
        audio_input_tokens=audio("promptTokensDetails") + audio("toolUsePromptTokensDetails"),
        audio_output_tokens=audio("candidatesTokensDetails"),
    )


def from_bedrock(usage: Mapping[str, Any]) -> dict[str, Any]:
    """AWS Bedrock Converse / ConverseStream ``usage``: like Anthropic, ``inputTokens`` excludes cache
    reads and writes; ``cacheDetails`` splits the writes by TTL. The service tier
    (``serviceTier.type``) is on the response, not in its usage. Raises :class:`UsageError`."""
    counts = _Counts(usage)
    write_1h = counts.matching("cacheDetails", "ttl", "1h", "inputTokens")
    if counts.has("cacheWriteInputTokens"):
        cache_write = counts.get("cacheWriteInputTokens")
    else:
        cache_write = write_1h + counts.matching("cacheDetails", "ttl", "5m", "inputTokens")
    cache_read = counts.get("cacheReadInputTokens")
    return counts.result(
        input_tokens=counts.get("inputTokens", required=True) + cache_read + cache_write,
        output_tokens=counts.get("outputTokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=0,
        audio_input_tokens=0,
        audio_output_tokens=0,
    )


USAGE_FORMATS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "openai": from_openai,
    "anthropic": from_anthropic,
    "gemini": from_gemini,
    "bedrock": from_bedrock,
}


def _dig(document: Mapping[str, Any], *path: str) -> Any:
    value: Any = document
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


# Where a whole response (not only its usage) keeps the usage object, the model and the service tier.
RESPONSE_FIELDS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, ...], ...], tuple[str, ...]]] = {
    "openai": (("usage",), (("model",),), ("service_tier",)),
    "anthropic": (("usage",), (("model",),), ("usage", "service_tier")),
    "gemini": (("usageMetadata",), (("modelVersion",), ("model_version",)), ()),
    "bedrock": (("usage",), (), ("serviceTier", "type")),
}


def from_response(usage_format: str, response: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(usage object, model, service tier) of a whole vendor response; each is None when absent.
    Gemini's snake_case ``usage_metadata`` (google-genai's ``model_dump()``) is found too; a Bedrock
    Converse response names no model (the caller passes the model id it called)."""
    usage_path, model_paths, tier_path = RESPONSE_FIELDS[usage_format]
    usage = _dig(response, *usage_path)
    if usage is None and usage_format == "gemini":
        usage = response.get("usage_metadata")
    model = next((m for path in model_paths if (m := _dig(response, *path)) is not None), None)
    return usage, model, _dig(response, *tier_path) if tier_path else None


def map_usage(usage_format: Any, usage: Any) -> dict[str, Any] | list[tuple[str, str]]:
    """All token fields of :data:`TOKEN_FIELDS` (zeros included, so they replace any the event
    carried) plus ``service_tier`` when the usage object reports one, or (field, message) errors.
    Never raises, whatever JSON value it is given."""
    mapper = USAGE_FORMATS.get(usage_format) if isinstance(usage_format, str) else None
    if mapper is None:
        return [("usage_format", f"must be one of {', '.join(sorted(USAGE_FORMATS))}")]
    if not isinstance(usage, Mapping):
        return [("usage", "must be a JSON object (the vendor's usage object)")]
    try:
        return mapper(usage)
    except UsageError as exc:
        return exc.errors
