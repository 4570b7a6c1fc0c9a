"""JSON bodies loaded with a bound on the objects they can create, for every JSON ingest format.

A 10 MiB body of ``{},{},...`` is 3.5 million objects (hundreds of MiB) once parsed, so the values
are counted first, at C speed, and the body refused before any exist: a value is at most one
separator (``,``) or one opening bracket, so their count outside strings bounds what the parser
creates. Commas inside strings (long texts) only make the cheap count an over-estimate; then the
strings are blanked out and the count redone exactly.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from . import PayloadError, TooManyEvents

# Values one event may need (fields, a vendor usage object, an OTLP span's attribute list): the
# body-wide budget is this times the event limit; a legal 10 MiB OTLP/JSON body holds about one
# value per 15 bytes, a bomb one per 3.
VALUES_PER_EVENT = 100
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _values(data: bytes) -> int:
    return data.count(b",") + data.count(b"[") + data.count(b"{")


def check_value_budget(body: bytes, max_events: int) -> None:
    """:class:`TooManyEvents` when ``body`` holds more JSON values than ``max_events`` events may."""
    budget = VALUES_PER_EVENT * max_events + 16
    # Each counted value is one byte, so a body no longer than the budget is within it: no scan
    # (counting a 130 KB batch three times cost ~0.5 µs per event).
    if len(body) <= budget or _values(body) <= budget or _values(_STRING.sub(b'""', body)) <= budget:
        return
    raise TooManyEvents(f"body holds more than {budget} JSON values, more than {max_events} events "
                        "(the batch limit) can carry; send smaller batches")


def loads(data: bytes) -> Any:
    """orjson for speed; the stdlib parser as a fallback for valid JSON orjson refuses (integers past
    64 bits), and NaN/Infinity refused by both so they never reach a counter. :class:`PayloadError`
    (with the parser's reason) for anything that is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        document = json.loads(data.decode("utf-8"), parse_constant=refuse)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"not valid JSON: {str(exc)[:300]}") from None
    _refuse_lone_surrogates(document)
    return document


def _refuse_lone_surrogates(document: Any) -> None:
    """The stdlib parser accepts ``\\ud800``-style lone surrogates, which no UTF-8 writer can emit
    again (the state log, /metrics, the errors API): refuse the body like orjson does."""
    stack = [document]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise PayloadError("not valid JSON: a string holds a lone UTF-16 surrogate") from None
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
