"""The benchmark's traffic shapes draw the label sets they claim, and runs never repeat an id."""

from __future__ import annotations

import orjson
import pytest

from bench.shapes import UNIFORM, ZIPF, Generator, Shape, for_run


def label_sets(events: list[dict]) -> set[tuple[str, str, str]]:
    return {(e["tenant"], e["customer"], e["model"]) for e in events}


def test_uniform_shape_covers_every_label_set_and_no_more() -> None:
    events = Generator(UNIFORM).events(40_000, 1.0)
    assert len(label_sets(events)) == UNIFORM.label_sets == 2800


def test_zipf_batches_touch_fewer_label_sets_than_uniform() -> None:
    uniform = label_sets(Generator(UNIFORM).events(500, 1.0))
    zipf = label_sets(Generator(ZIPF).events(500, 1.0))
    assert len(zipf) < 0.8 * len(uniform)


def test_every_event_carries_tokens_duration_and_ttft() -> None:
    for event in Generator(UNIFORM).events(200, 1.0):
        assert event["input_tokens"] >= 1 and event["output_tokens"] >= 1
        assert 0 < event["ttft_ms"] <= event["duration_ms"]
        assert event.get("cache_read_tokens", 0) <= event["input_tokens"]


def test_parse_reads_every_key_and_refuses_unknown_ones() -> None:
    shape = Shape.parse("mine:tenants=3,customers=2000,models=8,dist=zipf,s=1.3,cost_usd=1")
    assert (shape.name, shape.tenants, shape.customers, shape.models, shape.dist, shape.s, shape.cost_usd) == (
        "mine", 3, 2000, 8, "zipf", 1.3, 1)
    assert Shape.parse("customers=5").name == "uniform 7x5x4"
    with pytest.raises(ValueError, match="known"):
        Shape.parse("tenant=3")
    with pytest.raises(ValueError, match="dist"):
        Shape.parse("dist=normal")


def test_runs_restamp_ids_so_no_server_sees_one_twice() -> None:
    bodies = Generator(UNIFORM).bodies(3, 100, 1.0)
    ids = [{e["id"] for body in for_run(bodies, run) for e in orjson.loads(body)["events"]} for run in (1, 2)]
    assert len(ids[0]) == len(ids[1]) == 300
    assert not ids[0] & ids[1]
