"""SQLite state store: a log of per-request event rows, folded into snapshot tables at checkpoints.

Why a log: an event is acknowledged only after its request is durable, so each request must be
one transaction. Writing every touched series per request costs microseconds per *event* (an event
touches a dozen series); one log row per request (the request's accepted events as compact rows and
its dedupe ids, one JSON blob encoded and compressed in C) costs a fraction of a microsecond per
event. Every few seconds a checkpoint writes the absolute values of every metric whose series
changed since the last one (a metric is one compressed blob: rewriting it whole is cheaper than
updating thousands of rows), the customer and daily rows that changed, and deletes the folded log
rows, in one transaction. At start-up
the snapshot is loaded and the remaining log replayed: an acknowledged event is never lost and,
because log rows are deleted in the same transaction that folds them, never counted twice.

Durability: WAL with ``synchronous=NORMAL`` (default) survives a killed process, since committed
pages sit in the WAL the OS already holds; a power cut may lose the last transactions.
``synchronous=FULL`` also survives power loss at the cost of one fsync per request.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson
import zstandard

from . import metrics as m

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    tenant TEXT NOT NULL, customer TEXT NOT NULL, events INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, cost TEXT NOT NULL, errors INTEGER NOT NULL,
    latest_timestamp REAL NOT NULL, PRIMARY KEY (tenant, customer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS daily (
    tenant TEXT NOT NULL, customer TEXT NOT NULL, day INTEGER NOT NULL, events INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost TEXT NOT NULL,
    errors INTEGER NOT NULL, PRIMARY KEY (tenant, day, customer)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metric (name TEXT PRIMARY KEY, series BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedupe_log (seq INTEGER PRIMARY KEY, keys BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL NOT NULL, pad BLOB);
"""
# PRAGMA user_version, and what each version changed:
# 6: dedupe journal blocks are zstd-compressed msgpack (a tenth of the bytes of 5's JSON, and a
#    checkpoint of 50,000 ids ~12 ms shorter: most of it was writing the JSON's pages); JSON blocks
#    of 3-5 are still read.
# 5: log records are zstd-compressed msgpack (floats as eight raw bytes rather than formatted
#    digits: half the encoding time of JSON); a record holding an integer past 64 bits (an event
#    over ~$18 in atto-dollars) is written as JSON, as in 4, which still replays.
# 4: a metric's series are one row of the metric table (zstd-compressed JSON of [labels, value]
#    pairs, rewritten whole when any of them changed: a checkpoint of 12,000 changed series was
#    12,000 B-tree upserts, ~70 ms); the series table of 0-3 is read once and dropped by the first
#    checkpoint. Log records are zstd-compressed JSON (a sixth of the bytes: rows repeat their
#    labels). Histogram sums of seconds are integer nanoseconds (metrics.NANOS; 0-3 kept float
#    seconds, converted on load). Records of 3 and before are plain JSON and still replayed.
# 3: a log record holds the request's accepted events as rows (labels capped, money priced), not
#    per-series deltas; dedupe ids are a journal of blobs (dedupe_log), not a row per id (schema
#    0-2's dedupe table is read once and dropped by the first checkpoint).
# 2: money in integer atto-dollars (1e-18 USD), decimal strings in the tables (it outgrows 64 bits,
#    which SQLite INTEGER and orjson stop at), JSON numbers in log records (msgspec).
# 0/1: money in micro-dollars, migrated on open (see _migrate). Log records of 0-2 are still
#    replayed (the aggregator's _apply_deltas) and folded away by the first checkpoint.
SCHEMA_VERSION = 6
_ATTO_SCHEMA = 2  # the first with money in atto-dollars: older states are rescaled on open
_MONEY_METRICS = frozenset(spec.name for spec in m.USAGE_METRICS if spec.divisor == m.USD_UNITS)
_MICROS_TO_UNITS = m.USD_UNITS // 10**6


class StoreUnavailable(RuntimeError):
    """The state store cannot take the write; the request fails with 503 and nothing is counted."""


@dataclass
class Snapshot:
    series: dict[str, dict[tuple[str, ...], Any]] = field(default_factory=dict)
    customers: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    daily: dict[tuple[str, int, str], list[int]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    dedupe: list[tuple[str, float]] = field(default_factory=list)  # in the order accepted
    dedupe_legacy: bool = False  # read from schema 0-2's dedupe table: rewrite it as a journal
    series_legacy: bool = False  # read from schema 0-3's series table: write every metric, drop the table
    log: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Checkpoint:
    """Absolute state to write, and the log rows (up to ``upto_seq``) it replaces."""

    upto_seq: int
    metrics: dict[str, list[tuple[tuple[str, ...], Any]]] = field(default_factory=dict)  # each written whole
    drop_series_table: bool = False  # schema 0-3's series table, now in ``metrics``
    customers: list[tuple[tuple[str, str], list[Any]]] = field(default_factory=list)
    daily: list[tuple[tuple[str, int, str], list[int]]] = field(default_factory=list)
    daily_before: int | None = None  # drop daily rows of days before this one (the rollup's horizon)
    dedupe_keys: list[tuple[str, float]] = field(default_factory=list)  # appended to the dedupe journal
    dedupe_rewrite: bool = False  # dedupe_keys replace the journal (and schema 0-2's dedupe table)


class StateStore:
    """One SQLite file owned by one exporter process (an exclusive lock stops a second one)."""

    def __init__(self, path: str, sync: str = "normal") -> None:
        self.path = path
        self.sync = sync.upper()
        self._conn: sqlite3.Connection | None = None
        self.healthy = False
        self.last_error = ""
        self.last_seq = 0

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.5)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self.sync}")
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:  # rewriting it would lose what this version cannot read
                    raise sqlite3.DatabaseError(
                        f"written by a newer llm-usage-exporter (schema {version}; this one reads up to "
                        f"{SCHEMA_VERSION}): upgrade, or point --storage.path at another file")
                legacy = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'customers'").fetchone()
                if version < _ATTO_SCHEMA and legacy:
                    _migrate(conn)
                conn.executescript(SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
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
        """Read the snapshot tables and the log still to replay."""
        snapshot = Snapshot()
        try:
            conn = self._connect()
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'series'").fetchone():
                for metric, labels, value in conn.execute("SELECT metric, labels, value FROM series"):
                    snapshot.series.setdefault(metric, {})[tuple(orjson.loads(labels))] = _load_value(
                        metric, orjson.loads(value))
                    snapshot.series_legacy = True
            for name, blob in conn.execute("SELECT name, series FROM metric"):
                snapshot.series[name] = {tuple(labels): value for labels, value in _DECODE_RECORD(_DECOMPRESS(blob))}
            for row in conn.execute("SELECT tenant, customer, events, input_tokens, output_tokens, cost, "
                                    "errors, latest_timestamp FROM customers"):
                snapshot.customers[(row[0], row[1])] = [row[2], row[3], row[4], int(row[5]), row[6], row[7]]
            for row in conn.execute("SELECT tenant, day, customer, events, input_tokens, output_tokens, cost, "
                                    "errors FROM daily"):
                snapshot.daily[(row[0], row[1], row[2])] = [row[3], row[4], row[5], int(row[6]), row[7]]
            snapshot.meta = {key: orjson.loads(value) for key, value in conn.execute("SELECT key, value FROM meta")}
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'dedupe'").fetchone():
                snapshot.dedupe = list(conn.execute("SELECT key, seen_at FROM dedupe ORDER BY seen_at"))
                snapshot.dedupe_legacy = True
            for (block,) in conn.execute("SELECT keys FROM dedupe_log ORDER BY seq"):
                snapshot.dedupe.extend(_load_keys(block))
            for seq, record in conn.execute("SELECT seq, record FROM log ORDER BY seq"):
                snapshot.log.append(_load_record(record))
                self.last_seq = seq
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        self.healthy = True
        return snapshot

    def append(self, record: dict[str, Any]) -> int:
        """Durably append one request's record (its event rows and ids); returns its sequence number."""
        try:
            conn = self._connect()
            cursor = conn.execute("INSERT INTO log (record) VALUES (?)", (_dump_record(record),))
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        self.healthy = True
        self.last_error = ""
        self.last_seq = cursor.lastrowid or self.last_seq
        return self.last_seq

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO metric (name, series) VALUES (?, ?)",
                                 ((name, _COMPRESS(_ENCODE_RECORD(items))) for name, items in checkpoint.metrics.items()))
                if checkpoint.drop_series_table:
                    conn.execute("DROP TABLE IF EXISTS series")
                conn.executemany("INSERT OR REPLACE INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 ((t, c, row[0], row[1], row[2], str(row[3]), row[4], row[5])
                                  for (t, c), row in checkpoint.customers))
                conn.executemany("INSERT OR REPLACE INTO daily VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 ((t, c, d, row[0], row[1], row[2], str(row[3]), row[4])
                                  for (t, d, c), row in checkpoint.daily))
                if checkpoint.daily_before is not None:
                    conn.execute("DELETE FROM daily WHERE day < ?", (checkpoint.daily_before,))
                if checkpoint.dedupe_rewrite:
                    conn.execute("DELETE FROM dedupe_log")
                    conn.execute("DROP TABLE IF EXISTS dedupe")
                keys = checkpoint.dedupe_keys
                conn.executemany("INSERT INTO dedupe_log (keys) VALUES (?)",
                                 ((_dump_keys(keys[i:i + _KEYS_PER_BLOCK]),)
                                  for i in range(0, len(keys), _KEYS_PER_BLOCK)))
                conn.execute("DELETE FROM log WHERE seq <= ?", (checkpoint.upto_seq,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        self.healthy = True

    def set_meta(self, key: str, value: Any) -> None:
        """Facts about the state as a whole (its sources, how far imported history reaches), written at once."""
        try:
            conn = self._connect()
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, orjson.dumps(value).decode()))
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def read_meta(self) -> dict[str, Any]:
        """The meta table alone: what a command checks before it touches the state."""
        try:
            return {key: orjson.loads(value) for key, value in self._connect().execute("SELECT key, value FROM meta")}
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def probe(self) -> None:
        """A real write the size of a large request's log record (64 KiB): an empty transaction,
        or a tiny row, still succeeds on a nearly full disk while every real request fails."""
        try:
            conn = self._connect()
            conn.execute("INSERT OR REPLACE INTO probe (id, at, pad) VALUES (1, julianday('now'), zeroblob(65536))")
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        self.healthy = True
        self.last_error = ""

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_ENCODE_RECORD = msgspec.json.Encoder().encode
_DECODE_RECORD = msgspec.json.Decoder().decode
_ENCODE_LOG = msgspec.msgpack.Encoder().encode
_DECODE_LOG = msgspec.msgpack.Decoder().decode
_DECODE_KEYS = msgspec.msgpack.Decoder(list[tuple[str, float]]).decode
_DECODE_JSON_KEYS = msgspec.json.Decoder(list[tuple[str, float]]).decode
_COMPRESS = zstandard.ZstdCompressor(level=1).compress
_DECOMPRESS = zstandard.ZstdDecompressor().decompress
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame; plain JSON starts with "{" (a record) or "[" (a key block of 3-5)
_KEYS_PER_BLOCK = 65_536  # dedupe journal rows of a few MiB


def _load_value(metric: str, value: Any) -> Any:
    """A value of schema 0-3's series table, or a delta of a schema 0-2 log record, in today's units:
    money may be a decimal string (it outgrows 64 bits, which SQLite and orjson stop at), histogram
    sums are float seconds."""
    if metric in _MONEY_METRICS:
        return int(value)
    if metric in m.NANO_SUMS:
        total = value[0]
        value[0] = int(total) if type(total) is str else round(total * m.NANO_SUMS[metric])
    return value


def _dump_keys(keys: list[tuple[str, float]]) -> bytes:
    """A block of the dedupe journal: (``tenant\x00id``, time accepted) pairs, zstd-compressed msgpack."""
    return _COMPRESS(_ENCODE_LOG(keys))


def _load_keys(block: bytes) -> list[tuple[str, float]]:
    """Also reads the plain JSON blocks of schema 3-5."""
    return _DECODE_KEYS(_DECOMPRESS(block)) if block[:4] == _ZSTD_MAGIC else _DECODE_JSON_KEYS(block)


def _dump_record(record: dict[str, Any]) -> bytes:
    """A log record as zstd-compressed msgpack: a request's rows are one C call to encode and one to
    compress (level 1; ~0.65 µs per event, a fifth of the JSON's bytes). msgpack stops at 64-bit integers,
    which money in atto-dollars outgrows past ~$18 an event: such a record is written as JSON, whose
    numbers msgspec writes at any size (the reader tells them apart by the JSON's opening brace)."""
    try:
        return _COMPRESS(_ENCODE_LOG(record))
    except OverflowError:
        return _COMPRESS(_ENCODE_RECORD(record))


def _load_record(blob: bytes) -> dict[str, Any]:
    """Also reads the earlier forms: compressed JSON (schema 4), uncompressed JSON (schema 0-3),
    per-series deltas (schema 0-2) in the units of their time (see :func:`_load_value`)."""
    data = _DECOMPRESS(blob) if blob[:4] == _ZSTD_MAGIC else blob
    record = _DECODE_RECORD(data) if data[:1] == b"{" else _DECODE_LOG(data)  # a msgpack map is 0x8?/0xde
    if "e" in record:  # schema 3: event rows, money already integers
        return record
    deltas, columns = record.get("s"), record.get("v")
    if columns is not None:  # schema 2: keys and values per metric
        record["v"] = {metric: (keys, [_load_value(metric, value) for value in values])
                       for metric, (keys, values) in columns.items()}
    elif type(deltas) is list:
        record["s"] = [(metric, key, _load_value(metric, value)) for metric, key, value in deltas]
    elif deltas is not None:
        record["s"] = {metric: [(key, _load_value(metric, value)) for key, value in items]
                       for metric, items in deltas.items()}
    record["c"] = [(t, c, [*row[:3], int(row[3]), *row[4:]]) for t, c, row in record["c"]]
    record["d"] = [(t, day, c, [*row[:3], int(row[3]), *row[4:]]) for t, day, c, row in record.get("d", ())]
    return record


def _migrate(conn: sqlite3.Connection) -> None:
    """Schema 0/1 → 3 in one transaction: money from micro-dollars to atto-dollars (× 10^12, exact),
    in the snapshot tables *and* in the log still to replay, so nothing is mis-scaled."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute("SELECT metric, labels, value FROM series WHERE metric IN (%s)"
                            % ",".join("?" * len(_MONEY_METRICS)), sorted(_MONEY_METRICS)).fetchall()
        conn.executemany("UPDATE series SET value = ? WHERE metric = ? AND labels = ?",
                         ((orjson.dumps(str(orjson.loads(value) * _MICROS_TO_UNITS)).decode(), metric, labels)
                          for metric, labels, value in rows))
        conn.execute("ALTER TABLE customers RENAME TO customers_v1")
        conn.execute(next(statement for statement in SCHEMA.split(";") if "customers (" in statement))
        conn.execute("INSERT INTO customers SELECT tenant, customer, events, input_tokens, output_tokens, "
                     f"CAST(cost_micros * 1 AS TEXT) || '{'0' * 12}', errors, latest_timestamp FROM customers_v1")
        conn.execute("DROP TABLE customers_v1")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'daily'").fetchone():
            conn.execute("ALTER TABLE daily RENAME TO daily_v1")
            conn.execute(next(statement for statement in SCHEMA.split(";") if "daily (" in statement))
            conn.execute("INSERT INTO daily SELECT tenant, customer, day, events, input_tokens, output_tokens, "
                         f"CAST(cost_micros * 1 AS TEXT) || '{'0' * 12}', errors FROM daily_v1")
            conn.execute("DROP TABLE daily_v1")
        for seq, blob in conn.execute("SELECT seq, record FROM log").fetchall():
            record = orjson.loads(blob)
            record["s"] = [(metric, key, value * _MICROS_TO_UNITS if metric in _MONEY_METRICS else value)
                           for metric, key, value in record["s"]]
            record["c"] = [(t, c, [*row[:3], row[3] * _MICROS_TO_UNITS, *row[4:]]) for t, c, row in record["c"]]
            record["d"] = [(t, day, c, [*row[:3], row[3] * _MICROS_TO_UNITS, *row[4:]])
                           for t, day, c, row in record.get("d", ())]
            conn.execute("UPDATE log SET record = ? WHERE seq = ?", (_dump_record(record), seq))
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
