"""Fuzzing the HTTP API: nothing a client sends may produce a 5xx, good events in a batch full of bad
ones are counted exactly, and ``/metrics`` stays valid (``promtool check metrics``) with every label
value round-tripping through ``prometheus_client``'s parser.

Property tests run through Starlette's TestClient over ``create_app`` (one fresh exporter per example),
with a bounded number of examples (``FUZZ_EXAMPLES``, default 40 per property) so the file stays fast.
The slow variants at the end (``-m slow``) run against a real process: one 1M-event batch with raised
limits, and slowloris connections that trickle a body one byte per 100 ms while others are served.

The bugs this file found (lone UTF-16 surrogates, invalid UTF-8, deep nesting in skipped fields,
integers past the float range, non-ASCII digits in ``limit``: all 500s) are fixed; the deterministic
tests under ``REGRESSIONS`` keep them fixed, and the random strategies include those inputs too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from exporter.server.app import create_app
from helpers import make_exporter

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
# No shrinking unless asked (FUZZ_SHRINK=1): each example builds an app and runs promtool, and shrinking a
# failure could take minutes; the failing example is printed either way.
_PHASES = tuple(Phase) if os.environ.get("FUZZ_SHRINK") == "1" else (Phase.explicit, Phase.reuse, Phase.generate)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, print_blob=True, phases=_PHASES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example, HealthCheck.function_scoped_fixture])
ALLOWED = {200, 400, 413, 415}
KNOWN_MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash")
KNOWN_PROVIDERS = ("openai", "anthropic", "aws.bedrock", "gcp.vertex_ai")
RAW = "@@raw{}@@"  # placeholder values replaced by raw JSON text (1e400, NaN, 400-digit integers, ...)
STATS: Counter[str] = Counter()  # examples and requests run, reported at the end of the module
_ids = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\nfuzz: {dict(STATS)}")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed (apt-get install prometheus)")
    return path


@contextlib.contextmanager
def fresh_client(**settings: Any) -> Iterator[TestClient]:
    ex = make_exporter(**settings)
    with TestClient(create_app(ex.config, exporter=ex), raise_server_exceptions=False) as client:
        client.exporter = ex  # type: ignore[attr-defined]
        yield client


def post(client: TestClient, body: bytes, content_type: str = "application/json") -> httpx.Response:
    """POST and hold the line: never a 5xx, only the documented statuses, always a JSON answer."""
    response = client.post("/v1/events", content=body, headers={"Content-Type": content_type})
    STATS["requests"] += 1
    assert response.status_code < 500, f"{response.status_code} for body {body[:300]!r}...: {response.text[:300]}"
    assert response.status_code in ALLOWED, response.status_code
    document = response.json()
    if response.status_code == 200:
        assert set(document) == {"accepted", "duplicates", "rejected", "errors", "warnings"}
        assert len(document["warnings"]) <= document["accepted"] * 2  # at most model + service_tier per event
        assert len(document["errors"]) >= document["rejected"]
    else:
        assert isinstance(document.get("error"), str) and document["error"]
    return response


def scrape(client: TestClient) -> list[Any]:
    """/metrics in both formats: 200, accepted by promtool, parsed by prometheus_client."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text[:300]
    check = subprocess.run([promtool(), "check", "metrics"], input=response.content, capture_output=True)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()[:2000]
    families = list(text_string_to_metric_families(response.text))
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.status_code == 200 and om.text.endswith("# EOF\n")
    list(om_families(om.text))  # parses (raises on any malformed line)
    STATS["scrapes"] += 1
    return families


def samples(families: list[Any], name: str) -> list[Any]:
    return [s for f in families for s in f.samples if s.name == name]


# --- strategies -----------------------------------------------------------------------------------

_chars = st.characters()  # lone surrogates (category Cs) included: they must be refused, never a 5xx
NASTY = ['we"ird', "back\\slash", "new\nline", "cr\rlf\r\n", "tab\there", "\x00nul", "\x7fdel", "\u2028sep",
         "\u0085nel", "\ufeffbom", "\uffff", "🙂 emoji", "}{,=:#", '"', "\\", "\\n", 'a="b",c="d"', "__other", "_OTHER",
         "x" * 128, "é" * 128, "𝔘" * 128, "a b", "café", "日本語"]
label_value = st.one_of(st.sampled_from(NASTY), st.text(_chars, min_size=1, max_size=40)).filter(
    lambda s: bool(s.strip()) and len(s) <= 128)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64), st.text(_chars, max_size=20),
                        st.floats(allow_nan=False, allow_infinity=False))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(_chars, max_size=8), inner, max_size=4)), max_leaves=12)


@st.composite
def good_event(draw: st.DrawFn, now: float) -> dict[str, Any]:
    """A valid event with nasty (but legal) label values and numbers at the edges of their ranges."""
    input_tokens = draw(st.one_of(st.integers(0, 10**10), st.sampled_from([0, 1, 10**10])))
    output_tokens = draw(st.integers(0, 10**10))
    duration = draw(st.one_of(st.integers(0, 7 * 86_400_000),
                              st.floats(0, 7 * 86_400_000.0, allow_nan=False, allow_infinity=False)))
    age = draw(st.floats(1, 23 * 3600.0))
    timestamp: Any = now - age
    if draw(st.booleans()):
        timestamp = datetime.fromtimestamp(now - age, timezone.utc).isoformat().replace("+00:00", "Z")
    event: dict[str, Any] = {
        "id": f"g{next(_ids)}-" + draw(st.text(_chars, max_size=40)),
        "timestamp": timestamp,
        "tenant": draw(label_value),
        "customer": draw(label_value),
        "model": draw(st.one_of(st.sampled_from(KNOWN_MODELS), label_value)),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "duration_ms": duration,
        "status": draw(st.sampled_from(["ok", "error"])),
    }
    if event["status"] == "error":
        event["error_type"] = draw(st.one_of(st.sampled_from(["timeout", "rate_limited"]), label_value))
        if draw(st.booleans()):
            event["error_message"] = draw(st.text(_chars, max_size=300))
    if draw(st.booleans()):
        event["provider"] = draw(st.one_of(st.sampled_from(KNOWN_PROVIDERS), label_value))
    if draw(st.booleans()):
        event["cache_read_tokens"] = draw(st.integers(0, input_tokens))
    if draw(st.booleans()):
        event["reasoning_tokens"] = draw(st.integers(0, output_tokens))
    if draw(st.booleans()):
        event["ttft_ms"] = draw(st.floats(0, float(duration), allow_nan=False))
    if draw(st.booleans()):
        event["cost_usd"] = draw(st.one_of(st.floats(0, 1e6, allow_nan=False), st.integers(0, 10**6)))
    if draw(st.booleans()):
        event["operation"] = draw(st.sampled_from(["chat", "embeddings", "agent_run", "tool_call"]))
    if draw(st.booleans()):  # unknown fields are ignored, whatever they hold
        event.update(draw(st.dictionaries(st.text(_chars, min_size=1, max_size=10).map(lambda k: "x_" + k),
                                          json_value, max_size=3)))
    return event


# A corruption makes one event invalid; raw JSON text stands in for values Python cannot dump.
CORRUPTIONS: dict[str, Any] = {
    "negative tokens": lambda e: e.update(input_tokens=-1),
    "reserved label": lambda e: e.update(customer="__other__"),  # the overflow bucket's name
    "float 1e30 tokens": lambda e: e.update(output_tokens=1e30),
    "fractional tokens": lambda e: e.update(input_tokens=2.5),
    "bool tokens": lambda e: e.update(input_tokens=True),
    "string tokens": lambda e: e.update(input_tokens="12"),
    "too many tokens": lambda e: e.update(input_tokens=10**10 + 1),
    "64-bit tokens": lambda e: e.update(input_tokens=2**64),
    "100-digit tokens": lambda e: e.update(input_tokens=RAW.format("9" * 100)),
    "1e400 duration": lambda e: e.update(duration_ms=RAW.format("1e400")),
    "-1e400 cost": lambda e: e.update(cost_usd=RAW.format("-1e400")),
    "negative duration": lambda e: e.update(duration_ms=-0.001),
    "negative cost": lambda e: e.update(cost_usd=-1),
    "huge cost": lambda e: e.update(cost_usd=1e7),
    "cache above input": lambda e: e.update(input_tokens=5, cache_read_tokens=6),
    "reasoning above output": lambda e: e.update(output_tokens=5, reasoning_tokens=6),
    "ttft above duration": lambda e: e.update(duration_ms=10, ttft_ms=11),
    "bad status": lambda e: e.update(status="OK"),
    "error without type": lambda e: (e.update(status="error"), e.pop("error_type", None)),
    "bad operation": lambda e: e.update(operation="chat "),
    "missing id": lambda e: e.pop("id"),
    "empty id": lambda e: e.update(id=""),
    "long id": lambda e: e.update(id="i" * 129),
    "numeric id": lambda e: e.update(id=12),
    "missing tenant": lambda e: e.pop("tenant"),
    "blank customer": lambda e: e.update(customer=" \t\n"),
    "long customer": lambda e: e.update(customer="c" * 129),
    "list model": lambda e: e.update(model=["gpt-4o"]),
    "object provider": lambda e: e.update(provider={"name": "openai"}),
    "missing timestamp": lambda e: e.pop("timestamp"),
    "timestamp too old": lambda e: e.update(timestamp=time.time() - 25 * 3600),
    "timestamp in future": lambda e: e.update(timestamp=time.time() + 3600),
    "timestamp in ms": lambda e: e.update(timestamp=time.time() * 1000),
    "timestamp garbage": lambda e: e.update(timestamp="yesterday"),
    "timestamp naive": lambda e: e.update(timestamp="2026-11-25T10:00:00"),
    "timestamp 1e400": lambda e: e.update(timestamp=RAW.format("1e400")),
    "timestamp negative": lambda e: e.update(timestamp=-1),
    "missing duration": lambda e: e.pop("duration_ms"),
}
CORRUPTIONS["timestamp 400 digits"] = lambda e: e.update(timestamp=RAW.format("9" * 400))
NOT_OBJECTS = [1, "event", None, [], [1, 2], True]


@st.composite
def mixed_batch(draw: st.DrawFn) -> tuple[list[Any], dict[str, Any]]:
    """Good events, corrupted ones, non-objects and repeated good ids, in random order; plus what the
    answer must be."""
    now = time.time()
    good = draw(st.lists(good_event(now), min_size=0, max_size=12))
    bad: list[Any] = []
    for _ in range(draw(st.integers(0, 8))):
        event = draw(good_event(now))
        CORRUPTIONS[draw(st.sampled_from(sorted(CORRUPTIONS)))](event)
        bad.append(event)
    bad += draw(st.lists(st.sampled_from(NOT_OBJECTS), max_size=2))
    repeats = draw(st.lists(st.sampled_from(good), max_size=4)) if good else []
    events = draw(st.permutations(good + bad + repeats))
    expect = {"accepted": len(good), "duplicates": len(repeats), "rejected": len(bad), "good": good}
    return events, expect


def dump(events: list[Any], raws: list[str] | None = None) -> bytes:
    try:
        body = orjson.dumps({"events": events})
    except TypeError:  # integers past 64 bits, lone surrogates (as \udXXX escapes)
        body = json.dumps({"events": events}, separators=(",", ":")).encode()
    for raw in raws or []:
        body = body.replace(b'"' + RAW.format(raw).encode() + b'"', raw.encode())
    return body


def has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(has_surrogate, value))
    return False


def raw_values(events: list[Any]) -> list[str]:
    found = []
    for event in events:
        if isinstance(event, dict):
            found += [v[len("@@raw"):-len("@@")] for v in event.values()
                      if isinstance(v, str) and v.startswith("@@raw") and v.endswith("@@")]
    return found


# --- properties -----------------------------------------------------------------------------------

@FUZZ
@given(batch=mixed_batch(), ndjson=st.booleans())
def test_mixed_batches_count_exactly_the_good_events(batch, ndjson):
    events, expect = batch
    STATS["mixed batch examples"] += 1
    raws = raw_values(events)
    if ndjson:
        body = b"\n".join(dump([e], raws)[len(b'{"events":['):-2] for e in events)
    else:
        body = dump(events, raws)
    with fresh_client() as client:
        response = post(client, body, "application/x-ndjson" if ndjson else "application/json")
        if has_surrogate(events) and response.status_code == 400:
            assert sum(s.value for s in samples(scrape(client), "llm_requests_total")) == 0
            return  # not valid Unicode: refusing the whole body is a fine answer
        assert response.status_code == 200, response.text[:500]
        answer = response.json()
        assert {k: answer[k] for k in ("accepted", "duplicates", "rejected")} == {
            k: expect[k] for k in ("accepted", "duplicates", "rejected")}, answer["errors"][:5]
        bad_indexes = {i for i, e in enumerate(events) if not any(e is g for g in expect["good"])}
        assert {err["index"] for err in answer["errors"]} <= bad_indexes

        families = scrape(client)
        requests = samples(families, "llm_requests_total")
        assert sum(s.value for s in requests) == expect["accepted"]
        per_customer = Counter((e["tenant"], e["customer"]) for e in expect["good"])
        seen = Counter()
        for s in requests:
            seen[(s.labels["tenant"], s.labels["customer"])] += s.value
        assert seen == per_customer, "label values must round-trip through the exposition exactly"
        models = {s.labels["model"] for s in requests}
        assert models == {e["model"] for e in expect["good"]}
        input_tokens = sum(s.value for s in samples(families, "llm_tokens_total") if s.labels["token_type"] == "input")
        assert input_tokens == sum(e["input_tokens"] for e in expect["good"])
        durations = samples(families, "llm_request_duration_seconds_count")
        assert sum(s.value for s in durations) == expect["accepted"]


def _mutate(body: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(body)
    for kind, position, byte in edits:
        if not data:
            data.append(byte)
            continue
        position %= len(data)
        if kind == 0:
            data[position] = byte
        elif kind == 1:
            data.insert(position, byte)
        else:
            del data[position]
    return bytes(data)


_byte = st.integers(0, 255)
random_body = st.one_of(
    st.binary(max_size=2048),
    st.builds(_mutate, st.lists(good_event(time.time()), min_size=1, max_size=5).map(lambda es: dump(es)),
              st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10**6), _byte), min_size=1, max_size=8)),
    st.builds(lambda prefix, tail: prefix + tail,
              st.sampled_from([b'{"events": [', b'{"events": [{"id": "', b'{"events": [{"id": "a", "tenant": ',
                               b'{"events": {', b'{"events": [1e', b'{"events": [-', b'{"events": ["\\u']),
              st.binary(max_size=64)),
)


@FUZZ
@given(body=random_body, content_type=st.sampled_from([
    "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "application/x-ndjson",
    "application/jsonl", "text/plain", "", "application/json; charset=latin-1", "multipart/form-data"]))
def test_random_bodies_never_5xx_and_count_what_they_say(body, content_type):
    STATS["random body examples"] += 1
    with fresh_client() as client:
        response = post(client, body, content_type)
        accepted = response.json()["accepted"] if response.status_code == 200 else 0
        requests = samples(scrape(client), "llm_requests_total")
        assert sum(s.value for s in requests) == accepted


@FUZZ
@given(query=st.dictionaries(st.sampled_from(["limit", "sort", "order", "token", "x"]),
                             st.one_of(st.text(_chars, max_size=12), st.sampled_from(["²", "9" * 5000, "-1", "0"])),
                             max_size=3),
       tenant=label_value, path=st.sampled_from(["customers", "errors"]))
def test_read_api_never_5xx(query, tenant, path):
    STATS["read api examples"] += 1
    with fresh_client() as client:
        def q(text: str) -> str:  # percent-encoded UTF-8 (lone surrogates as their CESU-8 bytes)
            return quote(text.encode("utf-8", "surrogatepass"), safe="")
        url = f"/v1/tenants/{q(tenant)}/{path}"
        if query:
            url += "?" + "&".join(f"{q(k)}={q(v)}" for k, v in query.items())
        response = client.get(url)
        assert response.status_code in (200, 400, 404), (response.status_code, response.text[:300])


# --- deterministic edge cases ----------------------------------------------------------------------

def good(**overrides: Any) -> dict[str, Any]:
    event = {"id": f"d{next(_ids)}", "timestamp": time.time() - 5, "tenant": "acme", "customer": "c1",
             "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 500, "duration_ms": 1200, "status": "ok"}
    event.update(overrides)
    return event


def counted(client: TestClient) -> float:
    return sum(s.value for s in samples(scrape(client), "llm_requests_total"))


DEEP = 100_000


@pytest.mark.parametrize(("name", "body", "content_type"), [
    ("array body", b"[" * DEEP + b"]" * DEEP, "application/json"),
    ("deep events", b'{"events": ' + b"[" * DEEP + b"]" * DEEP + b"}", "application/json"),
    ("deep event", b'{"events": [' + b"[" * DEEP + b"]" * DEEP + b"]}", "application/json"),
    ("ndjson line", orjson.dumps(good()) + b"\n" + b"[" * DEEP + b"]" * DEEP, "application/x-ndjson"),
    ("ndjson object", b'{"a":' * DEEP + b"1" + b"}" * DEEP, "application/x-ndjson"),
])
def test_deep_nesting_is_a_400(name, body, content_type):
    with fresh_client() as client:
        assert post(client, body, content_type).status_code == 400
        assert counted(client) == 0


@pytest.mark.parametrize("depth", [100, 500])
def test_moderate_nesting_in_an_unknown_field_is_ignored(depth):
    with fresh_client() as client:
        event = good()
        event["x_nested"] = "@@raw@@"
        body = b'{"events": [' + orjson.dumps(event).replace(b'"@@raw@@"', b"[" * depth + b"]" * depth) + b"]}"
        response = post(client, body)
        assert response.status_code == 200 and response.json()["accepted"] == 1
        assert counted(client) == 1


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf"])
@pytest.mark.parametrize("field", ["duration_ms", "cost_usd", "input_tokens", "timestamp"])
def test_nan_and_infinity_literals_refuse_the_body_and_count_nothing(literal, field):
    with fresh_client() as client:
        event = good(**{field: "@@raw@@"})
        bad = orjson.dumps(event).replace(b'"@@raw@@"', literal)
        body = b'{"events": [' + orjson.dumps(good()) + b"," + bad + b"]}"
        assert post(client, body).status_code == 400
        assert counted(client) == 0


@pytest.mark.parametrize(("field", "raw"), [
    ("input_tokens", b"1" + b"0" * 30), ("input_tokens", b"9" * 400), ("input_tokens", b"1e400"),
    ("input_tokens", b"1e30"), ("input_tokens", b"-1"), ("input_tokens", b"0.5"),
    ("duration_ms", b"1e400"), ("duration_ms", b"1e308"), ("duration_ms", b"-0.0001"), ("duration_ms", b"9" * 400),
    ("cost_usd", b"1e400"), ("cost_usd", b"1" + b"0" * 30), ("cost_usd", b"-1e-300"),
    ("timestamp", b"1e400"), ("timestamp", b"1" + b"0" * 30), ("timestamp", b"-1"), ("timestamp", b"1e11"),
    ("llm_calls", b"1" + b"0" * 30), ("ttft_ms", b"1e400"),
])
def test_huge_and_negative_numbers_are_field_errors(field, raw):
    with fresh_client() as client:
        bad = good(id="bad", **{field: "@@raw@@"})
        body = b'{"events": [' + orjson.dumps(good()) + b"," + orjson.dumps(bad).replace(b'"@@raw@@"', raw) + b"]}"
        answer = post(client, body).json()
        assert (answer["accepted"], answer["rejected"]) == (1, 1), answer
        assert answer["errors"][0]["field"] == field and answer["errors"][0]["id"] == "bad"
        assert counted(client) == 1


@pytest.mark.parametrize("raw", [b'"c\xff"', b'"c\xc0\xaf"', b'"c\x80"', b'"c\xe2\x82"', b'"c\xf8\x88\x80\x80\x80"'])
def test_invalid_utf8_in_a_string_is_a_4xx(raw):
    with fresh_client() as client:
        assert post(client, _with_raw("customer", raw)).status_code == 400
        assert counted(client) == 0


def test_integers_past_the_parser_limit_refuse_the_body():
    """5000 digits exceed Python's int parsing limit (4300): the body is refused as not JSON, not a 5xx."""
    with fresh_client() as client:
        body = b'{"events": [' + orjson.dumps(good()) + b', {"id": "x", "input_tokens": ' + b"9" * 5000 + b"}]}"
        assert post(client, body).status_code == 400
        assert counted(client) == 0


def test_edge_numbers_that_are_valid_are_counted():
    with fresh_client() as client:
        body = dump([good(input_tokens="@@raw-0@@", output_tokens=0, duration_ms=0, cost_usd=0),
                     good(input_tokens=10**10, output_tokens=10**10, duration_ms=7 * 86_400_000, cost_usd=10**6)],
                    ["-0"])
        assert post(client, body).json()["accepted"] == 2
        families = scrape(client)
        assert sum(s.value for s in samples(families, "llm_tokens_total")) == 2 * 10**10
        assert sum(s.value for s in samples(families, "llm_cost_usd_total")) == 10**6


def test_one_megabyte_strings():
    """1 MB in every string field: labels and ids are field errors, a message is truncated, an unknown
    field is ignored; the good events of the batch are counted, and nothing leaks into labels."""
    mb = "x" * 2**20
    events = [good(id=mb), good(customer=mb), good(tenant=mb), good(model=mb), good(provider=mb),
              good(status="error", error_type=mb), good(sku=mb),
              good(id="msg", status="error", error_type="timeout", error_message=mb),
              good(id="unknown", x_blob=mb), good(id="ok")]
    with fresh_client() as client:
        answer = post(client, orjson.dumps({"events": events})).json()
        assert (answer["accepted"], answer["rejected"]) == (3, 7), [e["field"] for e in answer["errors"]]
        assert counted(client) == 3
        errors = client.get("/v1/tenants/acme/errors").json()["errors"]
        assert len(errors[0]["error_message"]) == 200
        metrics = client.get("/metrics").text
        assert "x" * 129 not in metrics


def test_ten_thousand_events_with_nasty_labels_in_one_batch():
    """The batch limit, every event valid, label values from the nasty list: one scrape still passes promtool."""
    events = [good(customer=(NASTY[i % len(NASTY)] + str(i % 50))[-128:], model=NASTY[i % 7] + "-model",
                   tenant=("t" + NASTY[i % 3])[:128]) for i in range(10_000)]
    with fresh_client() as client:
        answer = post(client, orjson.dumps({"events": events})).json()
        assert answer["accepted"] == 10_000
        families = scrape(client)
        assert sum(s.value for s in samples(families, "llm_requests_total")) == 10_000
        customers = {s.labels["customer"] for s in samples(families, "llm_requests_total")}
        assert {e["customer"] for e in events} <= customers


# --- REGRESSIONS: 500s this file found, now fixed ----------------------------------------------------

SURROGATE_ESCAPE = b'"c\\ud800"'  # a JSON escape for a lone UTF-16 surrogate: not valid Unicode


def _with_raw(field: str, raw: bytes, **overrides: Any) -> bytes:
    event = good(id="bad", **overrides)
    event[field] = "@@raw@@"
    bad = orjson.dumps(event).replace(b'"@@raw@@"', raw)
    return b'{"events": [' + orjson.dumps(good(id="good")) + b"," + bad + b"]}"


@pytest.mark.parametrize(("field", "raw", "extra"), [
    ("customer", SURROGATE_ESCAPE, {}), ("tenant", SURROGATE_ESCAPE, {}), ("model", SURROGATE_ESCAPE, {}),
    ("id", SURROGATE_ESCAPE, {}),
    ("customer", b'"c\xed\xa0\x80"', {}),  # the surrogate as CESU-8 bytes (json.loads' surrogatepass)
    ("error_message", SURROGATE_ESCAPE, {"status": "error", "error_type": "timeout"}),  # was: /errors 500
    ("x_unknown", SURROGATE_ESCAPE, {}),
], ids=["customer", "tenant", "model", "id", "customer-bytes", "error_message", "unknown field"])
def test_lone_surrogates_refuse_the_body(field, raw, extra):
    """Was a 500: the stdlib fallback parser kept the surrogate, which no UTF-8 writer (state log,
    response, exposition) could encode again. Now the body is refused like orjson refuses it."""
    with fresh_client() as client:
        response = post(client, _with_raw(field, raw, **extra))
        assert response.status_code == 400
        assert counted(client) == 0
        assert client.get("/v1/tenants/acme/errors").status_code == 200


def test_lone_surrogate_in_a_rejected_id_is_not_a_500_after_commit():
    """Was worse than a 500: the good event was committed, then echoing the bad id failed the response."""
    with fresh_client() as client:
        body = b'{"events": [' + orjson.dumps(good(id="good")) + b', {"id": "x\\ud800"}]}'
        assert post(client, body).status_code == 400
        assert counted(client) == 0


@pytest.mark.parametrize(("body", "status"), [
    (b'{"a":' * DEEP + b"1" + b"}" * DEEP, 400),
    (b'{"x": ' + b"[" * DEEP + b"]" * DEEP + b', "events": []}', 400),
    (_with_raw("x_nested", b"[" * 1000 + b"]" * 1000), 200),  # within orjson's 1024 levels: ignored
    (_with_raw("x_nested", b"[" * 2000 + b"]" * 2000), 400),
    (_with_raw("x_nested", b'{"a":' * DEEP + b"1" + b"}" * DEEP), 400),
], ids=["object body", "top-level field", "event field 1000", "event field 2000", "event field 100k"])
def test_deep_nesting_in_a_skipped_field(body, status):
    """Was a 500: msgspec raised RecursionError skipping an unknown field nested past ~1000 levels."""
    with fresh_client() as client:
        response = post(client, body)
        assert response.status_code == status
        assert counted(client) == (2 if status == 200 else 0)


def test_timestamp_integer_past_float_range_is_a_field_error():
    """Was a 500: float() of a 400-digit integer raised OverflowError in parse_timestamp."""
    with fresh_client() as client:
        answer = post(client, _with_raw("timestamp", b"9" * 400)).json()
        assert (answer["accepted"], answer["rejected"]) == (1, 1)
        assert answer["errors"][0]["field"] == "timestamp"


@pytest.mark.parametrize("path", ["customers", "errors"])
@pytest.mark.parametrize("limit", ["²", "9" * 5000])
def test_read_api_limit_that_int_cannot_parse_is_a_400(path, limit):
    """Was a 500: str.isdigit() accepts '²' and 5000-digit numbers, which int() then refuses."""
    with fresh_client() as client:
        assert client.get(f"/v1/tenants/acme/{path}", params={"limit": limit}).status_code == 400


# --- slow: real process --------------------------------------------------------------------------

def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@pytest.mark.slow
def test_one_million_event_batch_against_a_real_process(tmp_path):
    from harness import ExporterProcess

    n = 1_000_000
    now = time.time()
    body = b'{"events":[' + b",".join(
        b'{"id":"m%d","timestamp":%.3f,"tenant":"acme","customer":"c%d","model":"gpt-4o",'
        b'"input_tokens":10,"output_tokens":2,"duration_ms":100,"status":"ok"}' % (i, now - 5, i % 100)
        for i in range(n)) + b"]}"
    with ExporterProcess(tmp_path / "exporter", f"--web.max-batch-events={n}",
                         f"--web.max-body-bytes={len(body) + 1}") as exporter:
        rss_before = _rss_kb(exporter.proc.pid)
        started = time.perf_counter()
        response = exporter.client.post("/v1/events", content=body, headers={"Content-Type": "application/json"},
                                        timeout=600)
        seconds = time.perf_counter() - started
        assert response.status_code == 200, response.text[:300]
        assert response.json()["accepted"] == n
        families = list(text_string_to_metric_families(exporter.metrics_text()))
        assert sum(s.value for s in samples(families, "llm_requests_total")) == n
        assert exporter.client.get("/healthz").status_code == 200
        assert exporter.post([good(id="after")]).json()["accepted"] == 1
        peak = _rss_kb(exporter.proc.pid, "VmHWM")
        print(f"\n1M-event batch: {len(body) / 2**20:.0f} MiB body, {seconds:.1f} s ({n / seconds:,.0f} events/s); "
              f"RSS before {rss_before / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, "
              f"after {_rss_kb(exporter.proc.pid) / 1024:.0f} MiB")
        # Restart: the 1M-event record replays from the log (or the checkpoint) to the same total.
        exporter.stop()
        exporter.start()
        families = list(text_string_to_metric_families(exporter.metrics_text()))
        assert sum(s.value for s in samples(families, "llm_requests_total")) == n + 1


@pytest.mark.slow
def test_slowloris_bodies_do_not_stop_other_clients(tmp_path):
    """50 connections each trickle a valid body one byte per 100 ms; meanwhile other clients' POSTs and
    scrapes are answered promptly, and every trickled event is counted once it completes."""
    from harness import ExporterProcess

    trickled = [orjson.dumps({"events": [good(id=f"slow{i}")]}) for i in range(50)]
    with ExporterProcess(tmp_path / "exporter") as exporter:
        results: list[bytes] = [b""] * len(trickled)

        def slowloris(index: int) -> None:
            body = trickled[index]
            with socket.create_connection(("127.0.0.1", exporter.port), timeout=120) as sock:
                sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body))
                for byte in body[:60]:  # ~6 s of one byte per 100 ms, then the rest at once
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)
                sock.sendall(body[60:])
                chunks = []
                while b"}" not in b"".join(chunks):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                results[index] = b"".join(chunks)

        threads = [threading.Thread(target=slowloris, args=(i,), daemon=True) for i in range(len(trickled))]
        for thread in threads:
            thread.start()
        latencies = []
        fast_ok = 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            started = time.perf_counter()
            assert exporter.post([good()]).json()["accepted"] == 1
            assert exporter.client.get("/metrics").status_code == 200
            latencies.append(time.perf_counter() - started)
            fast_ok += 1
        for thread in threads:
            thread.join(timeout=60)
        assert all(b" 200 " in r.split(b"\r\n", 1)[0] for r in results), [r[:80] for r in results if b" 200 " not in r]
        assert max(latencies) < 1.0, f"other clients stalled: max {max(latencies):.2f}s"
        families = list(text_string_to_metric_families(exporter.metrics_text()))
        assert sum(s.value for s in samples(families, "llm_requests_total")) == fast_ok + len(trickled)
        print(f"\nslowloris: {len(trickled)} trickling connections; {fast_ok} other POST+scrape rounds, "
              f"max latency {max(latencies) * 1000:.0f} ms")
