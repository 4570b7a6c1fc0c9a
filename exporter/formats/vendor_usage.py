"""Vendor usage objects → our event token fields.

OpenAI and Anthropic count the same tokens differently: OpenAI's prompt/input tokens already
*include* the cached ones, Anthropic's ``input_tokens`` *exclude* cache reads and cache writes.
Our events treat cache and reasoning tokens as parts of input and output (see DESIGN.md), so each
vendor needs its own arithmetic; getting it wrong double-counts or under-bills cached prompts.
Clients can send the vendor's usage object verbatim and let this module do the sums.

Pure functions on plain JSON values, no vendor SDK: the same code runs in the client SDK and in
the ingest validator, and bad input becomes ``(field, message)`` errors, never an exception.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


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

    def get(self, *path: str, required: bool = False) -> int:
        """The count at ``path`` (e.g. ``prompt_tokens_details``, ``cached_tokens``); absent or null is 0,
        because vendors omit or null the details they did not use."""
        field = "usage." + ".".join(path)
        value: Any = self.usage
        for key in path:
            if value is None:
                break
            if not isinstance(value, Mapping):
                self.errors.append((field, "parent must be a JSON object"))
                return 0
            value = value.get(key)
        if value is None:
            if required:
                self.errors.append((field, "is required"))
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors.append((field, "must be a non-negative integer"))
            return 0
        if value < 0:
            self.errors.append((field, "must be >= 0"))
            return 0
        return value

    def result(self, **fields: int) -> dict[str, int]:
        if self.errors:
            raise UsageError(self.errors)
        return fields


def from_openai(usage: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI Chat Completions (``prompt_tokens``...) or Responses API (``input_tokens``...) usage.

    Cached tokens are already inside the prompt count, so they map across unchanged. Embeddings
    usage has no completion tokens: output is 0. Raises :class:`UsageError`.
    """
    counts = _Counts(usage)
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        names = ("prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details")
    else:
        names = ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")
    prompt, completion, prompt_details, completion_details = names
    return counts.result(
        input_tokens=counts.get(prompt, required=True),
        output_tokens=counts.get(completion),
        cache_read_tokens=counts.get(prompt_details, "cached_tokens"),
        cache_write_tokens=0,
        reasoning_tokens=counts.get(completion_details, "reasoning_tokens"),
    )


def from_anthropic(usage: Mapping[str, Any]) -> dict[str, int]:
    """Anthropic Messages usage: ``input_tokens`` excludes the cache, so input is the sum of all three.

    Raises :class:`UsageError`.
    """
    counts = _Counts(usage)
    uncached = counts.get("input_tokens", required=True)
    cache_read = counts.get("cache_read_input_tokens")
    cache_write = counts.get("cache_creation_input_tokens")
    return counts.result(
        input_tokens=uncached + cache_read + cache_write,
        output_tokens=counts.get("output_tokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=0,
    )


USAGE_FORMATS: dict[str, Callable[[Mapping[str, Any]], dict[str, int]]] = {
    "openai": from_openai,
    "anthropic": from_anthropic,
}


def map_usage(usage_format: Any, usage: Any) -> dict[str, int] | list[tuple[str, str]]:
    """All five token fields of :data:`TOKEN_FIELDS` (zeros included, so they replace any the event
    carried), or (field, message) errors. Never raises, whatever JSON value it is given."""
    mapper = USAGE_FORMATS.get(usage_format) if isinstance(usage_format, str) else None
    if mapper is None:
        return [("usage_format", f"must be one of {', '.join(sorted(USAGE_FORMATS))}")]
    if not isinstance(usage, Mapping):
        return [("usage", "must be a JSON object (the vendor's usage object)")]
    try:
        return mapper(usage)
    except UsageError as exc:
        return exc.errors
