"""The usage event: parse a client's JSON object into an :class:`Event` or a list of field errors.

Validation is strict about what would corrupt money or counters (negative or fractional tokens,
cache tokens larger than the input they are part of, NaN) and lenient about what does not
(unknown fields are ignored, a field sent as ``null`` is absent). Every problem is reported with
its field name, so a client can fix a whole batch from one response.

The rules are stated once, in :data:`RULES` (one :class:`Rule` per field) and the cross-field
tables :data:`TOKEN_PARTS` and :data:`NOT_ABOVE`. Three things are derived from them:

- the msgspec annotations of :class:`Event`, so msgspec type-checks and bounds a whole batch in C;
- :func:`_finish`, the fast path's remaining checks (what a msgspec annotation cannot say: the
  configured label length, whitespace-only and reserved labels, timestamps, cross-field rules,
  normalisation), compiled from the rules into straight-line code so it costs what hand-written
  checks would;
- :func:`validate_event`, the slow path, which reads the same rules field by field and explains
  every problem.

The fast path never accepts what the slow path refuses, and gives up (the slow path decides) on
what it leaves to the slow path by design: token estimation from text, vendor usage objects,
integral floats for counts, and ``null`` for a field whose default is not ``null``.
``tests/unit/test_fast_path.py`` holds the two equal.
"""

from __future__ import annotations

import linecache
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Callable, Literal, Mapping, Optional, Union

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
MAX_UNIX_SECONDS = 1e11  # year 5138: a larger number is a timestamp in milliseconds
# The bucket capped label values fold into: a client may not send it, or its usage would be
# indistinguishable from the overflow (and the overflow alert would point at the wrong cause).
OVERFLOW_LABEL = "__other__"
MAX_LABEL_LENGTH = 1024  # hard ceiling; limits.max-label-length (default 128) is checked on top

# Service tiers a price can depend on. Clients send the vendor's value; "auto" (OpenAI's default
# request setting) and "standard" (Anthropic's name) mean the default tier. Any other value is kept
# as sent: pricing prices it at the default tier and warns (the event is never refused for it).
SERVICE_TIERS = ("default", "flex", "batch", "priority")
SERVICE_TIER_ALIASES = {"auto": "default", "standard": "default", "standard_only": "default", "scale": "priority"}

# Cross-field rules, read by both paths. The token breakdowns: each group of detail fields is
# *part of* its total, never billed on top.
TOKEN_PARTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("cache_read_tokens", "cache_write_tokens"), "input_tokens"),
    (("cache_write_1h_tokens",), "cache_write_tokens"),
    (("audio_input_tokens",), "input_tokens"),
    (("reasoning_tokens",), "output_tokens"),
    (("audio_output_tokens",), "output_tokens"),
)
# (field, bound, message): the field, when present, may not exceed the bound field.
NOT_ABOVE: tuple[tuple[str, str, str], ...] = (
    ("ttft_ms", "duration_ms", "time to first token cannot exceed duration_ms"),
)


def normalize_service_tier(value: str | None) -> str:
    """The tier a price lookup uses: absent → ``default``; vendor synonyms folded; case-insensitive."""
    if value is None:
        return "default"
    tier = value.strip().lower()
    return SERVICE_TIER_ALIASES.get(tier, tier)


def normalize_error_type(value: str) -> str:
    """Known error types are kept; anything else is exported as ``_OTHER`` (a bounded label)."""
    return value if value in KNOWN_ERROR_TYPES else OTHER_ERROR_TYPE


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


def token_part_violations(tokens: Callable[[str], int]) -> list[FieldError]:
    """Every breakdown in :data:`TOKEN_PARTS` that exceeds its total; ``tokens`` reads a field's count."""
    errors = []
    for parts, whole in TOKEN_PARTS:
        if sum(map(tokens, parts)) > tokens(whole):
            verb = "is" if len(parts) == 1 else "are"
            errors.append(FieldError(parts[0], f"{' + '.join(parts)} {verb} part of {whole} and cannot exceed it"))
    return errors


# --- the rules -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rule:
    """One field of the event API.

    ``kind`` names how the value is checked (see :data:`KINDS`): ``id``, ``timestamp``, ``label``
    (a Prometheus label value: non-blank, at most limits.max-label-length, not the overflow
    bucket), ``tokens`` (a required count that may instead be estimated from ``<x>_text`` /
    ``<x>_chars``), ``count`` (a whole number in 0..maximum), ``number`` (a finite number in
    0..maximum), ``choice`` (one of ``choices``), ``text`` (a string truncated to ``maximum``
    characters) and ``vendor`` (a vendor usage object, mapped before anything else is read).
    ``when=(field, value)``: the field is read only when that field has that value, else it is
    ``default`` whatever was sent. ``normalize`` maps a valid value to the stored one."""

    name: str
    kind: str
    required: bool = False
    default: Any = None
    maximum: float = 0
    choices: tuple[str, ...] = ()
    missing: str = "is required"  # what an absent required field says
    invalid: str = ""  # what a bad value says, when the kind's own message is not the right one
    when: tuple[str, str] | None = None
    normalize: Callable[[Any], Any] | None = None


RULES: tuple[Rule, ...] = (
    Rule("id", "id", required=True),
    Rule("timestamp", "timestamp", required=True),
    Rule("tenant", "label", required=True),
    Rule("customer", "label", required=True),
    Rule("model", "label", required=True),
    Rule("provider", "label"),
    Rule("operation", "choice", default="chat", choices=tuple(sorted(OPERATIONS)),
         invalid=f"must be one of {', '.join(sorted(OPERATIONS))}"),
    Rule("input_tokens", "tokens", maximum=MAX_TOKENS),
    Rule("output_tokens", "tokens", maximum=MAX_TOKENS),
    *(Rule(name, "count", default=0, maximum=MAX_TOKENS) for name in (
        "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens",
        "audio_input_tokens", "audio_output_tokens")),
    Rule("service_tier", "label", default="default", normalize=normalize_service_tier),
    Rule("cost_usd", "number", maximum=MAX_COST_USD),
    Rule("duration_ms", "number", required=True, maximum=MAX_DURATION_MS),
    Rule("ttft_ms", "number", maximum=MAX_DURATION_MS),
    Rule("status", "choice", required=True, choices=("ok", "error"), missing='is required ("ok" or "error")',
         invalid='must be "ok" or "error"'),
    Rule("error_type", "label", required=True, when=("status", "error"), normalize=normalize_error_type),
    Rule("error_message", "text", maximum=MAX_ERROR_MESSAGE),
    Rule("llm_calls", "count", default=0, maximum=MAX_CALLS),
    Rule("tool_calls", "count", default=0, maximum=MAX_CALLS),
    Rule("sku", "label"),
    Rule("usage_format", "vendor"),
)


def _annotation(rule: Rule) -> Any:
    """The msgspec type of a rule's field: everything msgspec can check in C."""
    kind = rule.kind
    if kind == "id":
        value: Any = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    elif kind == "timestamp":
        value = Union[float, str]
    elif kind == "label":
        value = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_LENGTH)]
    elif kind in ("tokens", "count"):
        value = Annotated[int, msgspec.Meta(ge=0, le=int(rule.maximum))]
    elif kind == "number":
        value = Annotated[float, msgspec.Meta(ge=0, le=rule.maximum)]
    elif kind == "choice":
        value = Literal[rule.choices]  # type: ignore[valid-type]
    elif kind == "text":
        value = str
    elif kind == "vendor":
        return Any
    else:
        raise ValueError(f"rule {rule.name}: unknown kind {kind!r}")
    return Optional[value] if rule.default is None and not (rule.required and rule.when is None) else value


def _struct_field(rule: Rule) -> tuple[Any, ...]:
    if rule.required and rule.when is None:
        return rule.name, _annotation(rule)
    return rule.name, _annotation(rule), rule.default


# gc=False: an event holds only scalars and decoded JSON (never itself), so it cannot be part of a
# reference cycle; untracked, the ~500 structs of each batch cost the cyclic collector nothing.
Event = msgspec.defstruct(
    "Event", [_struct_field(rule) for rule in RULES], module=__name__, kw_only=True, gc=False,
    namespace={"__doc__": """One event, with the API's field names, its fields and types generated from
    :data:`RULES`. msgspec decodes and type-checks whole batches into it in C (the fast path);
    :func:`validate_event` builds it field by field when a batch needs per-event errors (the slow
    path). Validated events have a float ``timestamp``, a normalised ``error_type`` (``None`` unless
    ``status`` is ``error``) and a normalised ``service_tier``; ``usage_format`` is always ``None``."""})


class _Batch(msgspec.Struct, gc=False):
    events: list[Event]  # type: ignore[valid-type]


_BATCH_DECODER = msgspec.json.Decoder(_Batch)
_EVENT_LIST = list[Event]  # type: ignore[valid-type]


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
        if number > MAX_UNIX_SECONDS:
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


# --- the slow path: every rule read field by field, every problem explained ------------------------

class _Reader:
    """Collects field errors while reading one raw event, so all of them are reported together.
    Each kind's method gets a present (non-null) value and returns the checked value, or the
    rule's default after recording why the value was refused."""

    __slots__ = ("raw", "errors", "max_label", "now", "limits")

    def __init__(self, raw: Mapping[str, Any], now: float, limits: Limits) -> None:
        self.raw = raw
        self.errors: list[FieldError] = []
        self.now, self.limits = now, limits
        self.max_label = min(limits.max_label_length, MAX_LABEL_LENGTH)

    def fail(self, name: str, message: str) -> None:
        self.errors.append(FieldError(name, message))

    def id(self, rule: Rule, value: Any) -> Any:
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LENGTH:
            self.fail(rule.name, f"must be a string of 1-{MAX_ID_LENGTH} characters")
            return None
        return value

    def timestamp(self, rule: Rule, value: Any) -> float:
        try:
            timestamp = parse_timestamp(value)
        except ValueError as exc:
            self.fail(rule.name, str(exc))
            return 0.0
        limits = self.limits
        if timestamp > self.now + limits.max_future_s:
            self.fail(rule.name, f"is more than {limits.max_future_s:g} s in the future")
        elif timestamp < self.now - limits.max_age_s:
            self.fail(rule.name, f"is older than the {limits.max_age_s / 3600:g} h ingest window; "
                                 "load past events with `llm-usage-exporter import FILE...` instead")
        return timestamp

    def label(self, rule: Rule, value: Any) -> Any:
        name = rule.name
        if not isinstance(value, str) or not value.strip():
            self.fail(name, "must be a non-empty string")
        elif len(value) > self.max_label:
            self.fail(name, f"must be at most {self.max_label} characters")
        elif value == OVERFLOW_LABEL:
            self.fail(name, f"{OVERFLOW_LABEL!r} is reserved for the bucket that capped values fold into; "
                            "send another name")
        else:
            return value
        return rule.default

    def count(self, rule: Rule, value: Any, name: str | None = None) -> int:
        """A non-negative integer. ``100.0`` is accepted as 100 (some JSON writers emit every number
        as a float); ``3.5`` is refused: tokens are whole. The limit is named."""
        name = name or rule.name
        maximum = int(rule.maximum)
        if isinstance(value, float) and math.isfinite(value):
            if not value.is_integer():
                self.fail(name, f"must be a whole number (got {value:g})")
                return 0
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, "must be a non-negative integer")
        elif value < 0:
            self.fail(name, "must be >= 0")
        elif value > maximum:
            self.fail(name, f"must be <= {maximum:,} (the limit for {name})")
        else:
            return value
        return 0

    def tokens(self, rule: Rule, value: Any) -> int:
        """``<kind>_tokens``, else ceil(chars / 4) from ``<kind>_chars`` or ``<kind>_text``."""
        if value is not None:
            return self.count(rule, value)
        kind = rule.name.removesuffix("_tokens")
        if self.raw.get(f"{kind}_chars") is not None:
            chars = self.count(rule, self.raw[f"{kind}_chars"], f"{kind}_chars")
        else:
            text = self.raw.get(f"{kind}_text")
            if text is None:
                self.fail(rule.name, f"is required (or give {kind}_text / {kind}_chars)")
                return 0
            if not isinstance(text, str):
                self.fail(f"{kind}_text", "must be a string")
                return 0
            chars = len(text)
        return -(-chars // 4)

    def number(self, rule: Rule, value: Any) -> float | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(rule.name, "must be a number")
            return None
        number = float(value) if isinstance(value, float) or abs(value) < 2**63 else math.inf
        if not math.isfinite(number) or number < 0:
            self.fail(rule.name, "must be a finite number >= 0")
        elif number > rule.maximum:
            self.fail(rule.name, f"must be <= {rule.maximum:g}")
        else:
            return number
        return None

    def choice(self, rule: Rule, value: Any) -> Any:
        if not isinstance(value, str) or value not in rule.choices:
            self.fail(rule.name, rule.invalid)
            return rule.default
        return value

    def text(self, rule: Rule, value: Any) -> str | None:
        if not isinstance(value, str):
            self.fail(rule.name, "must be a string")
            return None
        return value[:int(rule.maximum)] or None

    def vendor(self, rule: Rule, value: Any) -> None:
        return None  # mapped onto the token fields before the rules are read


def _token_parts(r: _Reader, values: dict[str, Any]) -> None:
    r.errors.extend(token_part_violations(values.__getitem__))


def _not_above(field: str, bound: str, message: str) -> Callable[[_Reader, dict[str, Any]], None]:
    def check(r: _Reader, values: dict[str, Any]) -> None:
        if values[field] is not None and values[bound] is not None and values[field] > values[bound]:
            r.fail(field, message)
    return check


def _after_last(fields: list[str]) -> str:
    return max(fields, key=[rule.name for rule in RULES].index)


# Cross-field checks, each run as soon as the last field it reads has been read (errors come out
# in the order of RULES).
_CROSS: dict[str, list[Callable[[_Reader, dict[str, Any]], None]]] = {}
_CROSS.setdefault(_after_last([f for parts, whole in TOKEN_PARTS for f in (*parts, whole)]), []).append(_token_parts)
for _field, _bound, _message in NOT_ABOVE:
    _CROSS.setdefault(_after_last([_field, _bound]), []).append(_not_above(_field, _bound, _message))


def validate_event(raw: Any, now: float, limits: Limits) -> Event | list[FieldError]:  # type: ignore[valid-type]
    """Parse one raw event. Returns the :class:`Event` or every :class:`FieldError` found."""
    if not isinstance(raw, Mapping):
        return [FieldError("", "event must be a JSON object")]
    usage_errors: list[FieldError] = []
    if raw.get("usage_format") is not None:  # a vendor usage object instead of token fields
        mapped = map_usage(raw["usage_format"], raw.get("usage"))
        if isinstance(mapped, list):  # report the usage errors, not also "input_tokens is required"
            usage_errors, mapped = [FieldError(f, m) for f, m in mapped], {"input_tokens": 0, "output_tokens": 0}
        raw = {**raw, **mapped}
    r = _Reader(raw, now, limits)
    r.errors.extend(usage_errors)
    values: dict[str, Any] = {}
    for rule in RULES:
        name = rule.name
        value = raw.get(name)
        if rule.when is not None and values[rule.when[0]] != rule.when[1]:
            value = rule.default
        elif value is None and rule.kind != "tokens":
            if rule.required:
                r.fail(name, rule.missing)
            value = rule.default
        else:
            errors = len(r.errors)
            value = getattr(r, rule.kind)(rule, value)
            if rule.normalize is not None and len(r.errors) == errors:
                value = rule.normalize(value)
        values[name] = value
        for check in _CROSS.get(name, ()):
            check(r, values)
    if r.errors:
        return r.errors
    return Event(**values)


# --- the fast path: what msgspec's annotations cannot check, compiled from the rules ---------------

_LABEL_BAD = "len(v) > max_label or v.isspace() or v == OVERFLOW_LABEL"


def _fast_lines(rule: Rule) -> list[str]:
    """Source lines (one event, in the loop of :func:`_finish`) for what msgspec left unchecked;
    ``return False`` gives the batch to the slow path."""
    field, kind = f"event.{rule.name}", rule.kind
    if kind == "timestamp":
        return ["v = " + field,
                "if type(v) is str:",
                "    try:",
                f"        v = {field} = parse_timestamp(v)",
                "    except ValueError:",
                "        return False",
                "if not lowest <= v <= highest:",  # also NaN, negative and millisecond numbers
                "    return False"]
    if kind == "tokens":
        return [f"if {field} is None:", "    return False"]  # estimated from text: the slow path's job
    if kind == "vendor":
        return [f"if {field} is not None:", "    return False"]
    if kind == "text":
        return ["v = " + field, "if v is not None:", f"    {field} = v[:{int(rule.maximum)}] or None"]
    if kind != "label":
        return []  # id, count, number, choice: msgspec checked everything
    normalize = [f"    {field} = normalize_{rule.name}(v)"] if rule.normalize else []
    if rule.required and rule.when is not None:  # optional in the struct, required here
        lines = ["v = " + field, f"if v is None or {_LABEL_BAD}:", "    return False", *(s[4:] for s in normalize)]
    elif rule.required:
        lines = ["v = " + field, f"if {_LABEL_BAD}:", "    return False", *(s[4:] for s in normalize)]
    else:  # the default is valid as it stands (None, "default")
        present = "v is not None" if rule.default is None else f"v != {rule.default!r}"
        lines = ["v = " + field, f"if {present}:", f"    if {_LABEL_BAD}:", "        return False", *normalize]
    if rule.when is not None:
        when_field, when_value = rule.when
        lines = [f"if event.{when_field} == {when_value!r}:", *("    " + line for line in lines),
                 "else:", f"    {field} = {rule.default!r}"]
    return lines


def _fast_source() -> str:
    body = [line for rule in RULES for line in _fast_lines(rule)]
    for parts, whole in TOKEN_PARTS:
        body += [f"if {' + '.join(f'event.{p}' for p in parts)} > event.{whole}:", "    return False"]
    for field, bound, _ in NOT_ABOVE:
        body += [f"v = event.{field}", f"if v is not None and v > event.{bound}:", "    return False"]
    return "\n".join([
        "def _finish(events, now, limits):",
        '    """The checks msgspec\'s types cannot express, applied in place; False sends the whole batch to',
        '    the per-event slow path (which explains every problem). Generated from RULES."""',
        "    lowest = max(now - limits.max_age_s, 0.0)",
        "    highest = min(now + limits.max_future_s, MAX_UNIX_SECONDS)",
        "    max_label = min(limits.max_label_length, MAX_LABEL_LENGTH)",
        "    for event in events:",
        *("        " + line for line in body),
        "    return True",
        ""])


def _compile_finish() -> Callable[[list[Any], float, Limits], bool]:
    source = _fast_source()
    filename = f"<{__name__}._finish, generated from RULES>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # readable tracebacks
    namespace: dict[str, Any] = {"parse_timestamp": parse_timestamp, "OVERFLOW_LABEL": OVERFLOW_LABEL,
                                 "MAX_UNIX_SECONDS": MAX_UNIX_SECONDS, "MAX_LABEL_LENGTH": MAX_LABEL_LENGTH,
                                 **{f"normalize_{rule.name}": rule.normalize for rule in RULES if rule.normalize}}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - source built from RULES, no input
    return namespace["_finish"]


_finish = _compile_finish()


def decode_batch(body: bytes, now: float, limits: Limits) -> list[Event] | None:  # type: ignore[valid-type]
    """A JSON ``{"events": [...]}`` body whose every event is valid, decoded and checked in one go;
    None when anything needs a closer look (then parse the body and validate event by event)."""
    try:
        events = _BATCH_DECODER.decode(body).events
    except (msgspec.MsgspecError, ValueError, RecursionError):  # invalid UTF-8; nesting in skipped fields
        return None
    return events if _finish(events, now, limits) else None


def convert_batch(raw_events: Any, now: float, limits: Limits) -> list[Event] | None:  # type: ignore[valid-type]
    """The same fast path for already-parsed events (simulator, NDJSON, OTLP)."""
    try:
        events = msgspec.convert(raw_events, _EVENT_LIST)
    except (msgspec.MsgspecError, TypeError, ValueError, RecursionError):
        return None
    return events if _finish(events, now, limits) else None
