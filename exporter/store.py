"""SQLite state store: usage series, per-customer totals and the dedupe window.

Why write-through: an event is acknowledged only after its request's transaction commits, so a
crash never loses an acknowledged event and never counts one twice (its id is committed in the
same transaction as its totals). One transaction per request, not per event.

Durability: WAL with ``synchronous=NORMAL`` (default) survives a killed process, since committed
pages sit in the WAL that the OS already holds; a power cut may lose the last transactions.
``synchronous=FULL`` also survives power loss at the cost of one fsync per request.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    metric TEXT NOT NULL, labels TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (metric, labels)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS customers (
    tenant TEXT NOT NULL, customer TEXT NOT NULL, events INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL, errors INTEGER NOT NULL,
    latest_timestamp REAL NOT NULL, PRIMARY KEY (tenant, customer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedupe (key TEXT PRIMARY KEY, seen_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedupe_seen_at ON dedupe (seen_at);
"""


class StoreUnavailable(RuntimeError):
    """The state store cannot take the write; the request fails with 503 and nothing is counted."""


@dataclass
class Snapshot:
    series: dict[str, dict[tuple[str, ...], Any]] = field(default_factory=dict)
    customers: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    dedupe: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Changes:
    """Everything one request changes, written in one transaction."""

    series: list[tuple[str, tuple[str, ...], Any]] = field(default_factory=list)
    customers: list[tuple[tuple[str, str], list[Any]]] = field(default_factory=list)
    dedupe_add: list[tuple[str, float]] = field(default_factory=list)
    dedupe_remove: list[str] = field(default_factory=list)


class StateStore:
    """One SQLite file owned by one exporter process (an exclusive lock stops a second one)."""

    def __init__(self, path: str, sync: str = "normal") -> None:
        self.path = path
        self.sync = sync.upper()
        self._conn: sqlite3.Connection | None = None
        self.healthy = False
        self.last_error = ""

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.5)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.sync}")
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
                conn.executescript(SCHEMA)
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _fail(self, exc: Exception) -> StoreUnavailable:
        self.healthy = False
        self.last_error = f"state store {self.path}: {exc}"
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None  # reopen on the next write, so the process recovers when the store does
        return StoreUnavailable(self.last_error)

    def load(self) -> Snapshot:
        """Read everything back at start-up."""
        snapshot = Snapshot()
        try:
            conn = self._connect()
            for metric, labels, value in conn.execute("SELECT metric, labels, value FROM series"):
                snapshot.series.setdefault(metric, {})[tuple(orjson.loads(labels))] = orjson.loads(value)
            for row in conn.execute("SELECT tenant, customer, events, input_tokens, output_tokens, cost_micros, "
                                    "errors, latest_timestamp FROM customers"):
                snapshot.customers[(row[0], row[1])] = list(row[2:])
            snapshot.dedupe = list(conn.execute("SELECT key, seen_at FROM dedupe ORDER BY seen_at"))
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        self.healthy = True
        return snapshot

    def commit(self, changes: Changes) -> None:
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO series (metric, labels, value) VALUES (?, ?, ?)",
                    ((m, orjson.dumps(labels).decode(), orjson.dumps(v).decode()) for m, labels, v in changes.series))
                conn.executemany(
                    "INSERT OR REPLACE INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    ((t, c, *row) for (t, c), row in changes.customers))
                conn.executemany("INSERT OR REPLACE INTO dedupe (key, seen_at) VALUES (?, ?)", changes.dedupe_add)
                conn.executemany("DELETE FROM dedupe WHERE key = ?", ((k,) for k in changes.dedupe_remove))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        self.healthy = True
        self.last_error = ""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

