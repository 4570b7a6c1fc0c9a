"""The usage event: parse a client's JSON object into an :class:`Event` or a list of field errors.

Validation is strict about what would corrupt money or counters (negative or fractional tokens,
cache tokens larger than the input they are part of, NaN) and lenient about what does not
(unknown fields are ignored). Every problem is reported with its field name, so a client can fix a
whole batch from one response.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Callable, Literal, Mapping

import msgspec

from ..formats.vendor_usage import map_usage

OPERATIONS = frozenset({"chat", "text_completion", "embeddings", "agent_run", "tool_call"})
KNOWN_ERROR_TYPES = frozenset({"timeout", "rate_limited", "server_error", "invalid_request", "content_filter", "auth"})
OTHER_ERROR_TYPE = "_OTHER"
MAX_ID_LENGTH = 128
MAX_ERROR_MESSAGE = 200
MAX_TOKENS = 10**10  # far above any context window; keeps one typo from dwarfing a month of counters
MAX_COST_USD = 10**6
MAX_DURATION_MS = 7 * 86400 * 1000.0
MAX_CALLS = 10**6
# The bucket capped label values fold into: a client may not send it, or its usage would be
# indistinguishable from the overflow (and the overflow alert would point at the wrong cause).
OVERFLOW_LABEL = "__other__"
MAX_LABEL_LENGTH = 1024  # hard ceiling; limits.max-label-length (default 128) is checked on top

# Service tiers a price can depend on. Clients send the vendor's value; "auto" (OpenAI's default
# request setting) and "standard" (Anthropic's name) mean the default tier. Any other value is kept
# as sent: pricing prices it at the default tier and warns (the event is never refused for it).
SERVICE_TIERS = ("default", "flex", "batch", "priority")
SERVICE_TIER_ALIASES = {"auto": "default", "standard": "default", "standard_only": "default", "scale": "priority"}

# The token breakdowns: each group of detail fields is *part of* its total, never billed on top.
# One statement of the rule, read by both the fast path (:func:`_finish`) and :func:`validate_event`.
TOKEN_PARTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("cache_read_tokens", "cache_write_tokens"), "input_tokens"),
    (("cache_write_1h_tokens",), "cache_write_tokens"),
    (("audio_input_tokens",), "input_tokens"),
    (("reasoning_tokens",), "output_tokens"),
    (("audio_output_tokens",), "output_tokens"),
)


def normalize_service_tier(value: str | None) -> str:
    """The tier a price lookup uses: absent → ``default``; vendor synonyms folded; case-insensitive."""
    if value is None:
        return "default"
    tier = value.strip().lower()
    return SERVICE_TIER_ALIASES.get(tier, tier)


def token_part_violations(tokens: Callable[[str], int]) -> list[FieldError]:
    """Every breakdown in :data:`TOKEN_PARTS` that exceeds its total; ``tokens`` reads a field's count."""
    errors = []
    for parts, whole in TOKEN_PARTS:
        if sum(map(tokens, parts)) > tokens(whole):
            verb = "is" if len(parts) == 1 else "are"
            errors.append(FieldError(parts[0], f"{' + '.join(parts)} {verb} part of {whole} and cannot exceed it"))
    return errors


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Label = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_LENGTH)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
_Calls = Annotated[int, msgspec.Meta(ge=0, le=MAX_CALLS)]
_Millis = Annotated[float, msgspec.Meta(ge=0, le=MAX_DURATION_MS)]


class Event(msgspec.Struct):
    """One event, with the API's field names. msgspec decodes and type-checks whole batches into it
    in C (the fast path); :func:`validate_event` builds it field by field when a batch needs
    per-event errors (the slow path). Validated events have a float ``timestamp``, a
    normalised ``error_type`` and a normalised ``service_tier``."""

    id: _Id
    timestamp: float | str
    tenant: _Label
    customer: _Label
    model: _Label
    duration_ms: _Millis
    status: Literal["ok", "error"]
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    cache_read_tokens: _Count = 0
    cache_write_tokens: _Count = 0
    reasoning_tokens: _Count = 0
    cache_write_1h_tokens: _Count = 0
    audio_input_tokens: _Count = 0
    audio_output_tokens: _Count = 0
    service_tier: _Label = "default"
    provider: _Label | None = None
    operation: Literal["chat", "text_completion", "embeddings", "agent_run", "tool_call"] = "chat"
    cost_usd: Annotated[float, msgspec.Meta(ge=0, le=MAX_COST_USD)] | None = None
    ttft_ms: _Millis | None = None
    error_type: _Label | None = None
    error_message: str | None = None
    llm_calls: _Calls = 0
    tool_calls: _Calls = 0
    sku: _Label | None = None
    usage_format: Any = None  # present → the slow path maps the vendor usage object


class _Batch(msgspec.Struct):
    events: list[Event]


_BATCH_DECODER = msgspec.json.Decoder(_Batch)
_EVENT_LIST = list[Event]


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class Limits:
    """What the validator needs to know about time and sizes; built once from the config."""

    max_age_s: float = 24 * 3600.0
    max_future_s: float = 300.0
    max_label_length: int = 128


def parse_timestamp(value: Any) -> float:
    """RFC 3339 string (with offset) or Unix seconds → Unix seconds; ``ValueError`` explains why not."""
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 string or Unix seconds")
    if isinstance(value, (int, float)):
        number = float(value) if isinstance(value, float) or abs(value) < 2**63 else math.inf
        if not math.isfinite(number) or number < 0:
            raise ValueError("must be a finite, non-negative number of Unix seconds")
        if number > 1e11:
            raise ValueError("looks like milliseconds; send Unix seconds")
        return number
    if isinstance(value, str):
        text = value.strip()
        if not 10 <= len(text) <= 40:
            raise ValueError("must be an RFC 3339 string such as 2026-11-25T10:00:00Z")
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise ValueError("must be an RFC 3339 string such as 2026-11-25T10:00:00Z") from None
        if parsed.tzinfo is None:
            raise ValueError("RFC 3339 needs a UTC offset, e.g. 2026-11-25T10:00:00Z")
        return parsed.timestamp()
    raise ValueError("must be an RFC 3339 string or Unix seconds")


class _Reader:
    """Collects field errors while reading one raw event, so all of them are reported together."""

    __slots__ = ("raw", "errors", "max_label")

    def __init__(self, raw: Mapping[str, Any], max_label: int) -> None:
        self.raw = raw
        self.errors: list[FieldError] = []
        self.max_label = max_label

    def fail(self, name: str, message: str) -> None:
        self.errors.append(FieldError(name, message))

    def label(self, name: str, required: bool = True, default: str | None = None) -> str | None:
        value = self.raw.get(name)
        if value is None:
            if required:
                self.fail(name, "is required")
            return default
        if not isinstance(value, str) or not value.strip():
            self.fail(name, "must be a non-empty string")
            return default
        if len(value) > self.max_label:
            self.fail(name, f"must be at most {self.max_label} characters")
            return default
        if value == OVERFLOW_LABEL:
            self.fail(name, f"{OVERFLOW_LABEL!r} is reserved for the bucket that capped values fold into; "
                            "send another name")
            return default
        return value

    def count(self, name: str, maximum: int = MAX_TOKENS) -> int | None:
        """A non-negative integer, or None when absent. ``100.0`` is accepted as 100 (some JSON writers
        emit every number as a float); ``3.5`` is refused: tokens are whole. The limit is named."""
        value = self.raw.get(name)
        if value is None:
            return None
        if isinstance(value, float) and math.isfinite(value):
            if not value.is_integer():
                self.fail(name, f"must be a whole number (got {value:g})")
                return None
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, "must be a non-negative integer")
            return None
        if value < 0:
            self.fail(name, "must be >= 0")
            return None
        if value > maximum:
            self.fail(name, f"must be <= {maximum:,} (the limit for {name})")
            return None
        return value

    def number(self, name: str, required: bool, maximum: float) -> float | None:
        value = self.raw.get(name)
        if value is None:
            if required:
                self.fail(name, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(name, "must be a number")
            return None
        number = float(value) if isinstance(value, float) or abs(value) < 2**63 else math.inf
        if not math.isfinite(number) or number < 0:
            self.fail(name, "must be a finite number >= 0")
            return None
        if number > maximum:
            self.fail(name, f"must be <= {maximum:g}")
            return None
        return number

    def tokens(self, kind: str) -> int:
        """``<kind>_tokens``, else ceil(chars / 4) from ``<kind>_chars`` or ``<kind>_text``."""
        if self.raw.get(f"{kind}_tokens") is not None:
            return self.count(f"{kind}_tokens") or 0
        if self.raw.get(f"{kind}_chars") is not None:
            chars = self.count(f"{kind}_chars")
        else:
            text = self.raw.get(f"{kind}_text")
            if text is None:
                self.fail(f"{kind}_tokens", f"is required (or give {kind}_text / {kind}_chars)")
                return 0
            if not isinstance(text, str):
                self.fail(f"{kind}_text", "must be a string")
                return 0
            chars = len(text)
        return -(-(chars or 0) // 4)


_DETAIL_FIELDS = ("cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens",
                  "audio_input_tokens", "audio_output_tokens")


def validate_event(raw: Any, now: float, limits: Limits) -> Event | list[FieldError]:
    """Parse one raw event. Returns the :class:`Event` or every :class:`FieldError` found."""
    if not isinstance(raw, Mapping):
        return [FieldError("", "event must be a JSON object")]
    usage_errors: list[FieldError] = []
    if raw.get("usage_format") is not None:  # a vendor usage object instead of token fields
        mapped = map_usage(raw["usage_format"], raw.get("usage"))
        if isinstance(mapped, list):  # report the usage errors, not also "input_tokens is required"
            usage_errors, mapped = [FieldError(f, m) for f, m in mapped], {"input_tokens": 0, "output_tokens": 0}
        raw = {**raw, **mapped}
    r = _Reader(raw, limits.max_label_length)
    r.errors.extend(usage_errors)

    event_id = raw.get("id")
    if event_id is None:
        r.fail("id", "is required")
    elif not isinstance(event_id, str) or not 1 <= len(event_id) <= MAX_ID_LENGTH:
        r.fail("id", f"must be a string of 1-{MAX_ID_LENGTH} characters")
        event_id = None

    timestamp = 0.0
    if raw.get("timestamp") is None:
        r.fail("timestamp", "is required")
    else:
        try:
            timestamp = parse_timestamp(raw["timestamp"])
        except ValueError as exc:
            r.fail("timestamp", str(exc))
        else:
            if timestamp > now + limits.max_future_s:
                r.fail("timestamp", f"is more than {limits.max_future_s:g} s in the future")
            elif timestamp < now - limits.max_age_s:
                r.fail("timestamp", f"is older than the {limits.max_age_s / 3600:g} h ingest window; "
                                    "load past events with `llm-usage-exporter import FILE...` instead")

    tenant = r.label("tenant")
    customer = r.label("customer")
    model = r.label("model")
    provider = r.label("provider", required=False)
    operation = raw.get("operation", "chat")
    if not isinstance(operation, str) or operation not in OPERATIONS:
        r.fail("operation", f"must be one of {', '.join(sorted(OPERATIONS))}")

    input_tokens = r.tokens("input")
    output_tokens = r.tokens("output")
    details = {name: r.count(name) or 0 for name in _DETAIL_FIELDS}
    tokens = {"input_tokens": input_tokens, "output_tokens": output_tokens, **details}
    r.errors.extend(token_part_violations(tokens.__getitem__))
    service_tier = r.label("service_tier", required=False, default="default")

    cost = r.number("cost_usd", required=False, maximum=MAX_COST_USD)
    duration_ms = r.number("duration_ms", required=True, maximum=MAX_DURATION_MS)
    ttft_ms = r.number("ttft_ms", required=False, maximum=MAX_DURATION_MS)
    if ttft_ms is not None and duration_ms is not None and ttft_ms > duration_ms:
        r.fail("ttft_ms", "time to first token cannot exceed duration_ms")

    status = raw.get("status")
    error_type = None
    if status is None:
        r.fail("status", 'is required ("ok" or "error")')
    elif status not in ("ok", "error"):
        r.fail("status", 'must be "ok" or "error"')
    elif status == "error":
        error_type = r.label("error_type")
        if error_type is not None and error_type not in KNOWN_ERROR_TYPES:
            error_type = OTHER_ERROR_TYPE
    message = raw.get("error_message")
    if message is not None and not isinstance(message, str):
        r.fail("error_message", "must be a string")
        message = None
    llm_calls = r.count("llm_calls", MAX_CALLS) or 0
    tool_calls = r.count("tool_calls", MAX_CALLS) or 0
    sku = r.label("sku", required=False)

    if r.errors:
        return r.errors
    return Event(
        id=event_id, timestamp=timestamp, tenant=tenant, customer=customer, model=model,  # type: ignore[arg-type]
        provider=provider, operation=operation, input_tokens=input_tokens, output_tokens=output_tokens,
        **details, service_tier=normalize_service_tier(service_tier),
        cost_usd=cost, duration_ms=float(duration_ms), ttft_ms=ttft_ms,  # type: ignore[arg-type]
        status=status, error_type=error_type,
        error_message=message[:MAX_ERROR_MESSAGE] if message else None,
        llm_calls=llm_calls, tool_calls=tool_calls, sku=sku,
    )


def _finish(events: list[Event], now: float, limits: Limits) -> bool:
    """The checks msgspec's types cannot express, applied in place; False sends the whole batch to
    the per-event slow path (which explains every problem)."""
    lowest, highest, max_label = now - limits.max_age_s, now + limits.max_future_s, limits.max_label_length
    for event in events:
        timestamp = event.timestamp
        if type(timestamp) is str:
            try:
                timestamp = event.timestamp = parse_timestamp(timestamp)
            except ValueError:
                return False
        elif not timestamp <= 1e11:
            return False
        input_tokens, output_tokens, ttft_ms = event.input_tokens, event.output_tokens, event.ttft_ms
        tenant, customer, model = event.tenant, event.customer, event.model
        cost = event.cost_usd
        if (input_tokens is None or output_tokens is None or event.usage_format is not None
                or not lowest <= timestamp <= highest or not 0 <= event.duration_ms <= MAX_DURATION_MS
                or cost is not None and not 0 <= cost <= MAX_COST_USD
                or len(tenant) > max_label or tenant.isspace() or len(customer) > max_label or customer.isspace()
                or len(model) > max_label or model.isspace()
                or OVERFLOW_LABEL in (tenant, customer, model, event.provider, event.sku)
                or token_part_violations(event.__getattribute__)
                or ttft_ms is not None and not 0 <= ttft_ms <= event.duration_ms):
            return False
        for optional in (event.provider, event.sku):
            if optional is not None and (len(optional) > max_label or optional.isspace()):
                return False
        tier = event.service_tier
        if tier != "default":
            if len(tier) > max_label or tier.isspace():
                return False
            event.service_tier = normalize_service_tier(tier)
        if event.status == "error":
            error_type = event.error_type
            if error_type is None or len(error_type) > max_label or error_type.isspace():
                return False
            if error_type not in KNOWN_ERROR_TYPES:
                event.error_type = OTHER_ERROR_TYPE
        else:
            event.error_type = None  # only failed requests carry a type
        message = event.error_message
        if message is not None:
            event.error_message = message[:MAX_ERROR_MESSAGE] or None
    return True


def decode_batch(body: bytes, now: float, limits: Limits) -> list[Event] | None:
    """A JSON ``{"events": [...]}`` body whose every event is valid, decoded and checked in one go;
    None when anything needs a closer look (then parse the body and validate event by event)."""
    try:
        events = _BATCH_DECODER.decode(body).events
    except (msgspec.MsgspecError, ValueError, RecursionError):  # invalid UTF-8; nesting in skipped fields
        return None
    return events if _finish(events, now, limits) else None


def convert_batch(raw_events: Any, now: float, limits: Limits) -> list[Event] | None:
    """The same fast path for already-parsed events (simulator, NDJSON, OTLP)."""
    try:
        events = msgspec.convert(raw_events, _EVENT_LIST)
    except (msgspec.MsgspecError, TypeError, ValueError, RecursionError):
        return None
    return events if _finish(events, now, limits) else None
