"""The value budget of JSON bodies (exporter/formats/jsonbody.py): a body holds at most
VALUES_PER_EVENT values per event of the batch limit, counted outside strings."""

import pytest

from exporter.formats import TooManyEvents
from exporter.formats.jsonbody import VALUES_PER_EVENT, check_value_budget

MAX_EVENTS = 2
BUDGET = VALUES_PER_EVENT * MAX_EVENTS + 16


def test_a_body_at_the_budget_passes_and_one_value_more_is_refused() -> None:
    check_value_budget(b"," * BUDGET, MAX_EVENTS)  # as many bytes as values allowed: never scanned
    with pytest.raises(TooManyEvents, match=f"more than {BUDGET} JSON values"):
        check_value_budget(b"," * (BUDGET + 1), MAX_EVENTS)


def test_values_are_counted_not_bytes() -> None:
    check_value_budget(b"[" + b" " * (10 * BUDGET) + b"]", MAX_EVENTS)  # long, but one value
    with pytest.raises(TooManyEvents):
        check_value_budget(b"[" + b"{}," * BUDGET + b"{}]", MAX_EVENTS)


def test_separators_inside_strings_do_not_count() -> None:
    check_value_budget(b'{"events": ["' + b",[{" * BUDGET + b'"]}', MAX_EVENTS)
    with pytest.raises(TooManyEvents):
        check_value_budget(b'{"events": ["' + b",[{" * BUDGET + b'"' + b",1" * BUDGET + b"]}", MAX_EVENTS)
