"""Log records replay whatever form they were written in: a crash leaves unfolded rows behind, and
the next start may be a newer version."""

from __future__ import annotations

import sqlite3
import time
from bisect import bisect_left

import msgspec
import orjson
import pytest
import zstandard

from exporter.core.metrics import DURATION_BUCKETS
from exporter.core.pricing import UNITS_PER_USD
from helpers import ev, make_exporter, sample

LABELS = ["acme", "c1", "gpt-4o", "openai"]


def test_flat_deltas_with_money_as_strings_still_replay(tmp_path):
    ex = make_exporter(tmp_path)
    ex.store.close()
    big = 3 * 2**64  # atto-dollars beyond 64 bits, as the previous log form wrote them
    record = {"t": 1.0, "k": [], "s": [["llm_cost_usd", LABELS, str(big)],
                                        ["llm_requests", [*LABELS, "chat", "ok"], 2]],
              "c": [["acme", "c1", [2, 10, 1, str(big), 0, 2.0]]], "d": []}
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("INSERT INTO log (record) VALUES (?)", (orjson.dumps(record),))
    conn.commit()
    conn.close()
    again = make_exporter(tmp_path)
    assert again.aggregator.series["llm_cost_usd"][tuple(LABELS)] == big
    assert sample(again, "llm_requests_total", tenant="acme", customer="c1", model="gpt-4o", provider="openai",
                  operation="chat", status="ok") == 2
    assert again.aggregator.customer_rows("acme", "cost_usd", True, 1)[0]["cost_usd"] == big / UNITS_PER_USD


def test_per_metric_items_still_replay(tmp_path):
    ex = make_exporter(tmp_path)
    ex.store.close()
    record = {"t": 1.0, "k": [], "s": {"llm_cost_usd": [[LABELS, 7]], "llm_requests": [[[*LABELS, "chat", "ok"], 2]]},
              "c": [["acme", "c1", [2, 10, 1, 7, 0, 2.0]]], "d": []}
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("INSERT INTO log (record) VALUES (?)", (orjson.dumps(record),))
    conn.commit()
    conn.close()
    again = make_exporter(tmp_path)
    assert again.aggregator.series["llm_cost_usd"][tuple(LABELS)] == 7
    assert again.aggregator.series["llm_requests"][(*LABELS, "chat", "ok")] == 2


def test_schema_2_column_deltas_still_replay(tmp_path):
    """Schema 2 logged keys and values per metric; a crash under that version leaves such rows."""
    ex = make_exporter(tmp_path)
    ex.store.close()
    big, today = 5 * 2**64, int(time.time() // 86400)
    record = {"t": 1.0, "k": [["acme\x00old", 1.0]],
              "v": {"llm_cost_usd": [[LABELS], [big]], "llm_requests": [[[*LABELS, "chat", "ok"]], [3]],
                    "llm_request_duration_seconds": [[["acme", "gpt-4o", "openai", "chat"]],
                                                     [[1.5, *([0] * 8), 3, *([0] * 9)]]]},
              "c": [["acme", "c1", [3, 10, 1, big, 0, 2.0]]], "d": [["acme", today, "c1", [3, 10, 1, big, 0]]]}
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("INSERT INTO log (record) VALUES (?)", (_msgspec_json(record),))
    conn.commit()
    conn.close()
    again = make_exporter(tmp_path)
    assert again.aggregator.series["llm_cost_usd"][tuple(LABELS)] == big
    assert again.aggregator.series["llm_requests"][(*LABELS, "chat", "ok")] == 3
    assert again.aggregator.series["llm_request_duration_seconds"][("acme", "gpt-4o", "openai", "chat")][9] == 3
    assert again.aggregator.series["llm_request_duration_seconds"][("acme", "gpt-4o", "openai", "chat")][0] \
        == 1_500_000_000  # float seconds then, integer nanoseconds now
    assert sample(again, "llm_request_duration_seconds_sum", tenant="acme", model="gpt-4o", provider="openai",
                  operation="chat") == 1.5
    assert again.aggregator.daily[("acme", today, "c1")] == [3, 10, 1, big, 0]
    assert "acme\x00old" in again.aggregator.dedupe
    again.store.close()
    ex3 = make_exporter(tmp_path)  # folded by the first checkpoint: counted once, not again
    assert ex3.aggregator.series["llm_requests"][(*LABELS, "chat", "ok")] == 3


def _msgspec_json(record: dict) -> bytes:
    """As the store writes it: integers of any size as JSON numbers."""
    return msgspec.json.encode(record)


@pytest.mark.parametrize("cost_usd, form", [(0.25, 0x83), (50_000.25, ord("{"))])
def test_event_rows_replay_exactly_after_a_crash(tmp_path, cost_usd, form):
    """The current form (one row per accepted event, compressed msgpack; JSON, whose numbers have
    any size, when money outgrows msgpack's 64 bits): what is only in the log when the process dies
    is counted once on the next start, into the same series, histograms, customer and daily rows as
    the live path counted it."""
    ex = make_exporter(tmp_path)
    ex.aggregator.checkpoint_every = ex.aggregator.checkpoint_max_events = float("inf")
    ex.aggregator.ingest([ev(id=f"e{i}", cost_usd=cost_usd, customer=f"c{i % 2}", ttft_ms=100 + i,
                             status="error" if i == 3 else "ok", error_type="timeout" if i == 3 else None)
                          for i in range(4)], "api")
    expected = {metric: dict(values) for metric, values in ex.aggregator.series.items()}
    expected_daily = dict(ex.aggregator.daily)
    ex.store.close()  # no aggregator checkpoint, as after SIGKILL: the log alone holds the events
    conn = sqlite3.connect(tmp_path / "state.db")
    (record,) = conn.execute("SELECT record FROM log").fetchall()
    conn.close()
    assert zstandard.ZstdDecompressor().decompress(record[0])[0] == form  # a 3-key msgpack map, or JSON
    again = make_exporter(tmp_path)
    assert {metric: dict(values) for metric, values in again.aggregator.series.items()} == expected
    assert dict(again.aggregator.daily) == expected_daily
    assert sum(row["events"] for row in again.aggregator.customer_rows("acme", "events", True, 10)) == 4


def test_a_schema_3_state_opens_in_schema_4(tmp_path):
    """Schema 3 kept a row per series (histogram sums as float seconds) and wrote plain-JSON log
    records; schema 4 reads both (sums converted to nanoseconds, records replayed), and its first
    checkpoint writes the new form: a compressed blob per metric (the series table dropped) and
    compressed records."""
    ex = make_exporter(tmp_path)
    ex.store.close()
    key = ["acme", "gpt-4o", "openai", "chat"]
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("CREATE TABLE series (metric TEXT NOT NULL, labels TEXT NOT NULL, value TEXT NOT NULL, "
                 "PRIMARY KEY (metric, labels)) WITHOUT ROWID")
    conn.execute("INSERT INTO series VALUES (?, ?, ?)", ("llm_request_duration_seconds", orjson.dumps(key).decode(),
                                                         orjson.dumps([0.25, 1, *([0] * 17)]).decode()))
    conn.execute("INSERT INTO series VALUES (?, ?, ?)", ("llm_cost_usd", orjson.dumps(LABELS).decode(),
                                                         orjson.dumps(str(3 * 2**64)).decode()))
    row = ["acme", "c1", "gpt-4o", "openai", "chat", "ok", "", 10, 5, 0, 0, 0, 7, 0, 0, 0, 0, time.time(), 0.5, None]
    conn.execute("INSERT INTO log (record) VALUES (?)", (_msgspec_json({"t": time.time(), "k": [], "e": [row]}),))
    conn.execute("PRAGMA user_version=3")
    conn.commit()
    conn.close()
    again = make_exporter(tmp_path)
    assert again.aggregator.series["llm_request_duration_seconds"][tuple(key)][0] == 750_000_000
    assert sample(again, "llm_request_duration_seconds_sum", tenant="acme", model="gpt-4o", provider="openai",
                  operation="chat") == 0.75
    assert sample(again, "llm_request_duration_seconds_count", tenant="acme", model="gpt-4o", provider="openai",
                  operation="chat") == 2
    assert again.aggregator.series["llm_cost_usd"][tuple(LABELS)] == 3 * 2**64 + 7  # past 64 bits, exact
    again.aggregator.ingest([ev(id="new", duration_ms=250.0)], "api")
    cost = again.aggregator.series["llm_cost_usd"][tuple(LABELS)]
    conn = again.store._connect()
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'series'").fetchone() is None
    stored = dict(conn.execute("SELECT name, series FROM metric"))
    durations = msgspec.json.decode(zstandard.ZstdDecompressor().decompress(stored["llm_request_duration_seconds"]))
    expected = [750_000_000, 1, *([0] * 17)]  # the stored 0.25 s in the first bucket, the replayed 0.5 s in its own
    expected[bisect_left(DURATION_BUCKETS, 0.5) + 1] += 1
    assert durations == [[key, expected]]  # written at start-up
    (record,) = conn.execute("SELECT record FROM log").fetchone()
    assert record[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    again.store.close()
    reopened = make_exporter(tmp_path)
    assert sample(reopened, "llm_request_duration_seconds_sum", tenant="acme", model="gpt-4o", provider="openai",
                  operation="chat") == 1.0
    assert reopened.aggregator.series["llm_cost_usd"][tuple(LABELS)] == cost


def _journal(conn: sqlite3.Connection) -> tuple[int, int]:
    """(rows, ids) in the store's dedupe journal (read through the exporter's connection: it holds an
    exclusive lock)."""
    blocks = [msgspec.json.decode(keys) if keys[:1] == b"[" else  # schema 3-5
              msgspec.msgpack.decode(zstandard.ZstdDecompressor().decompress(keys))
              for (keys,) in conn.execute("SELECT keys FROM dedupe_log")]
    return len(blocks), sum(map(len, blocks))


def test_dedupe_journal_stays_bounded_and_rebuilds_the_same_windows(tmp_path, monkeypatch):
    """Ids are journaled, never deleted one by one; the journal is rewritten when it outgrows twice the
    remembered ids (+ slack), and a restart remembers exactly what the live process remembered."""
    monkeypatch.setattr("exporter.core.aggregate.JOURNAL_SLACK", 50)
    settings = dict(dedupe_max_entries=300, dedupe_max_entries_per_tenant=100)
    ex = make_exporter(tmp_path, **settings)
    now = time.time()
    largest = 0
    for round_ in range(30):
        batch = [ev(id=f"r{round_}-{i}", tenant=("a", "b", "c")[i % 3]) for i in range(60)]
        assert ex.aggregator.ingest(batch, "api", now=now).accepted == 60
        ex.aggregator.checkpoint()
        largest = max(largest, _journal(ex.store._connect())[1])
    remembered = {key for key, _ in ex.aggregator.dedupe.items()}
    assert len(remembered) == 300  # three windows of 100
    assert largest <= 2 * 300 + 50 + 60  # the bound, plus the ids of one checkpoint
    ex.store.close()
    again = make_exporter(tmp_path, **settings)
    assert {key for key, _ in again.aggregator.dedupe.items()} == remembered
    assert again.aggregator.ingest([ev(id="r29-0", tenant="a")], "api", now=now).duplicates == 1
    assert again.aggregator.ingest([ev(id="r0-0", tenant="a")], "api", now=now).accepted == 1  # forgotten


def test_schema_2_dedupe_table_becomes_the_journal(tmp_path):
    """A schema-2 state (money already in atto-dollars, a row per dedupe id) opens without rescaling
    money, and its ids become the journal."""
    ex = make_exporter(tmp_path)
    ex.aggregator.ingest([ev(cost_usd=1.25)], "api")
    ex.aggregator.checkpoint()
    cost = dict(ex.aggregator.series["llm_cost_usd"])
    ex.store.close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("CREATE TABLE dedupe (key TEXT PRIMARY KEY, seen_at REAL NOT NULL) WITHOUT ROWID")
    conn.executemany("INSERT INTO dedupe VALUES (?, ?)", [(f"acme\x00old{i}", time.time() - 60 + i) for i in range(5)])
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    again = make_exporter(tmp_path)
    assert dict(again.aggregator.series["llm_cost_usd"]) == cost
    assert again.aggregator.ingest([ev(id="old3")], "api").duplicates == 1
    again.store.close()
    conn = sqlite3.connect(tmp_path / "state.db")
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'dedupe'").fetchone() is None
    assert _journal(conn)[1] == 5 + 1  # the table's ids and the one accepted before
    conn.close()


def test_a_schema_5_json_journal_is_still_read(tmp_path):
    """Schema 5 wrote dedupe journal blocks as plain JSON; schema 6 writes compressed msgpack and
    reads both, so ids accepted before an upgrade stay duplicates after it."""
    now = time.time()
    ex = make_exporter(tmp_path)
    ex.store.close()
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("INSERT INTO dedupe_log (keys) VALUES (?)", (orjson.dumps([["acme\x00before", now - 5]]),))
    conn.execute("PRAGMA user_version=5")
    conn.commit()
    conn.close()
    again = make_exporter(tmp_path)
    assert again.aggregator.ingest([ev(id="before")], "api", now=now).duplicates == 1
    assert again.aggregator.ingest([ev(id="after")], "api", now=now).accepted == 1
    again.aggregator.checkpoint()
    conn = again.store._connect()
    assert [keys[:1] for (keys,) in conn.execute("SELECT keys FROM dedupe_log ORDER BY seq")] == [b"[", b"\x28"]
    assert _journal(conn) == (2, 2)  # the JSON block stays as written, the new one is compressed msgpack
    again.store.close()
    reopened = make_exporter(tmp_path)
    assert reopened.aggregator.ingest([ev(id="before"), ev(id="after")], "api", now=now).duplicates == 2


def test_a_state_from_a_newer_version_is_refused_untouched(tmp_path):
    """Opening a state a newer exporter wrote would rewrite its schema number and misread what this
    version does not know: it is refused with the reason, and the file keeps its number."""
    from exporter.core.store import SCHEMA_VERSION, StateStore, StoreUnavailable

    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreUnavailable, match=f"newer llm-usage-exporter .schema {SCHEMA_VERSION + 1}"):
        StateStore(str(path)).load()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()
