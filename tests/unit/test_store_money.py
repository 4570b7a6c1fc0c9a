"""Money in the state store: exact beyond 64 bits, and state written in micro-dollars by an older
version is migrated (snapshot and log), never mis-scaled."""

from __future__ import annotations

import sqlite3

import orjson

from exporter.core.pricing import UNITS_PER_USD
from helpers import ev, make_exporter, sample

OLD_SCHEMA = """
CREATE TABLE series (metric TEXT NOT NULL, labels TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (metric, labels))
    WITHOUT ROWID;
CREATE TABLE customers (tenant TEXT NOT NULL, customer TEXT NOT NULL, events INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL,
    errors INTEGER NOT NULL, latest_timestamp REAL NOT NULL, PRIMARY KEY (tenant, customer)) WITHOUT ROWID;
CREATE TABLE dedupe (key TEXT PRIMARY KEY, seen_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE log (seq INTEGER PRIMARY KEY, record BLOB NOT NULL);
"""
LABELS = ["acme", "c1", "gpt-4o", "openai"]


def test_micro_dollar_state_is_migrated_exactly(tmp_path):
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    # snapshot: $1.234567 in micro-dollars; log (not yet folded): +$0.000001 and a customer row
    conn.execute("INSERT INTO series VALUES ('llm_cost_usd', ?, '1234567')", (orjson.dumps(LABELS).decode(),))
    conn.execute("INSERT INTO series VALUES ('llm_requests', ?, '3')",
                 (orjson.dumps([*LABELS[:3], "openai", "chat", "ok"]).decode(),))
    conn.execute("INSERT INTO customers VALUES ('acme', 'c1', 3, 300, 30, 1234567, 0, 1.0)")
    record = {"t": 1.0, "k": [], "s": [["llm_cost_usd", LABELS, 1]], "c": [["acme", "c1", [1, 10, 1, 1, 0, 2.0]]]}
    conn.execute("INSERT INTO log (record) VALUES (?)", (orjson.dumps(record),))
    conn.commit()
    conn.close()

    ex = make_exporter(tmp_path)
    assert ex.aggregator.series["llm_cost_usd"][tuple(LABELS)] == 1_234_568 * UNITS_PER_USD // 10**6
    assert sample(ex, "llm_cost_usd_total", tenant="acme", customer="c1", model="gpt-4o", provider="openai") \
        == 1.234568
    row = ex.aggregator.customer_rows("acme", "cost_usd", True, 1)[0]
    assert (row["cost_usd"], row["events"]) == (1.234568, 4)
    ex.store.close()
    again = make_exporter(tmp_path)  # migrated once: a second start does not scale again
    assert again.aggregator.customer_rows("acme", "cost_usd", True, 1)[0]["cost_usd"] == 1.234568


def test_money_beyond_64_bits_survives_restart(tmp_path):
    ex = make_exporter(tmp_path)
    ex.aggregator.ingest([ev(id=f"big{i}", cost_usd=90_000.5) for i in range(3)], "api")  # 2.7e23 atto > 2^64
    ex.aggregator.checkpoint()
    ex.aggregator.ingest([ev(id="tail", cost_usd=0.000001)], "api")  # only in the log
    ex.store.close()
    again = make_exporter(tmp_path)
    assert again.aggregator.customer_rows("acme", "cost_usd", True, 1)[0]["cost_usd"] == 270_001.500001
    assert sample(again, "llm_cost_usd_total", tenant="acme", customer="c1", model="gpt-4o",
                  provider="openai") == 270_001.500001
