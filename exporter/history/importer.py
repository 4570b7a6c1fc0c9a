"""``llm-usage-exporter import``: real past events → TSDB blocks, plus the state live counters continue from.

Input: NDJSON (one event per line, or one ``{"events": [...]}`` batch or one OTLP/JSON
``ExportTraceServiceRequest`` per line, as the OpenTelemetry Collector's file exporter writes), or a
JSON document (an array of events, or one batch / OTLP request object). Events use the API's schema,
vendor usage objects (``usage_format``) included; OTLP spans are mapped by :mod:`exporter.formats.otlp`.

Why two passes: a counter's samples must be written in time order, but logs are rarely sorted.
Pass 1 streams the files and appends every event, as its original JSON, to a temporary file per
scrape step (``step`` seconds) of its timestamp; memory holds only a bounded write buffer. Pass 2
reads the step files in time order, sorts each one (memory: the busiest step), feeds it to
:meth:`Aggregator.ingest` — the one ingest function, so validation, pricing, dedupe and caps are the
live ones — and scrapes the state into :class:`BlockWriter` after each step.

The history frontier: the state remembers how far its history reaches (``history_until``: the end
of the last import, or the last time a live exporter served it). Prometheus already holds samples
up to there, so a block before it would interleave with them and look like a counter reset. Events
older than the frontier are therefore refused (reason ``before_history``), which is also why
re-running an import counts nothing twice. Blocks continue from the state's totals at the frontier,
and the live exporter continues from the totals at the end of the import.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import orjson

from ..core import metrics as m
from ..core.aggregate import Aggregator
from ..core.events import parse_timestamp
from ..formats import PayloadError, otlp
from ..formats.jsonbody import loads
from ..server.ingest import decode_otlp
from .blocks import BlockWriter

SOURCE = "import"
CHUNK_EVENTS = 5000  # events per ingest call (one state-log row each)
BUFFER_BYTES = 32 * 1024 * 1024  # pass-1 write buffer across all step files
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024  # a non-NDJSON JSON file is parsed whole; NDJSON streams
MAX_IMPORTS_REMEMBERED = 200
MAX_SPANS_PER_LINE = 1_000_000  # one OTLP request line is parsed whole; the Collector writes far smaller ones
INVALID = -1  # the step "file" of events whose timestamp cannot be read: validated (and rejected) first


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ImportReport:
    files: int = 0
    lines: int = 0
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    before_history: int = 0
    already_imported: bool = False
    first: float | None = None
    last: float | None = None
    blocks: int = 0
    samples: int = 0
    seconds: float = 0.0
    history_until: float = 0.0
    rejected_report: str = ""
    reasons: dict[str, int] = field(default_factory=dict)
    peak_rss_mb: float = 0.0  # this process; promtool's is peak_promtool_rss_mb
    peak_promtool_rss_mb: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RejectReport:
    """One NDJSON line per rejected event: file, line, id, field, message (streamed, never held)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: IO[bytes] | None = None
        self.count = 0

    def add(self, file: str, line: int, event_id: Any, field_name: str, message: str, reason: str) -> None:
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("wb")
        self._out.write(orjson.dumps({"file": file, "line": line, "id": event_id if isinstance(event_id, str) else None,
                                      "reason": reason, "field": field_name, "message": message}) + b"\n")
        self.count += 1

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")  # type: ignore[return-value]


def _objects(path: Path, consume: Callable[[bytes], None]) -> Iterator[tuple[int, Any, bytes | None, str | None]]:
    """(line number, parsed JSON value, the line's bytes when it is exactly that value, parse error) for
    every line of an NDJSON file, or the one document of a JSON file (line 1). ``consume`` sees every
    byte read (fingerprint, progress)."""
    with _open(path) as stream:
        head = stream.read(1 << 16)
        stripped = head.lstrip()
        first_line = stripped.split(b"\n", 1)[0]
        document = stripped.startswith(b"[")
        if not document and stripped.startswith(b"{") and b"\n" in stripped:
            try:
                orjson.loads(first_line)
            except orjson.JSONDecodeError:
                document = True  # a pretty-printed object spanning lines
        if document:
            data = head + stream.read(MAX_DOCUMENT_BYTES + 1 - len(head))
            consume(data)
            if len(data) > MAX_DOCUMENT_BYTES:
                yield 1, None, None, (f"a JSON document larger than {MAX_DOCUMENT_BYTES >> 20} MiB; "
                                      "write one event per line (NDJSON), which is streamed")
                return
            try:
                yield 1, loads(data), None, None
            except PayloadError as exc:
                yield 1, None, None, str(exc)
            return
        number = 0
        rest = b""
        chunk = head
        while chunk:
            consume(chunk)
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                yield from _line(number, line)
            chunk = stream.read(1 << 20)
        if rest:
            yield from _line(number + 1, rest)


def _line(number: int, line: bytes) -> Iterator[tuple[int, Any, bytes | None, str | None]]:
    line = line.strip()
    if not line:
        return
    try:
        yield number, loads(line), line, None
    except PayloadError as exc:  # the API's JSON rules: big integers allowed, NaN and lone surrogates refused
        yield number, None, None, str(exc)


def _events_of(value: Any, line: bytes | None, aggregator: Aggregator) -> tuple[list[tuple[Any, bytes | None]], str | None]:
    """The raw events one JSON value holds, each with its original bytes when it is the whole line.
    OTLP requests go through the front door's own decoder (server/ingest.py), so spans map exactly
    as ``POST /v1/otlp/v1/traces`` maps them."""
    if isinstance(value, dict) and "resourceSpans" in value:
        body = line if line is not None else orjson.dumps(value)
        try:
            batch = decode_otlp(body, otlp.JSON, None, MAX_SPANS_PER_LINE, time.time(), aggregator)
        except PayloadError as exc:
            return [], str(exc)
        return [(event, None) for event in batch.raw], None
    if isinstance(value, dict) and isinstance(value.get("events"), list):
        return [(event, None) for event in value["events"]], None
    if isinstance(value, list):
        return [(event, None) for event in value], None
    return [(value, line)], None


class _StepFiles:
    """Pass 1's output: events appended to one temporary file per step, through a bounded buffer."""

    def __init__(self, directory: Path, step: float) -> None:
        self.directory = directory
        self.step = step
        self.buffers: dict[int, list[bytes]] = {}
        self.buffered = 0
        self.steps: set[int] = set()

    def add(self, step: int, timestamp: float, file_index: int, line: int, data: bytes) -> None:
        record = b"%r\t%d\t%d\t%s\n" % (timestamp, file_index, line, data)
        self.buffers.setdefault(step, []).append(record)
        self.steps.add(step)
        self.buffered += len(record)
        if self.buffered >= BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        for step, records in self.buffers.items():
            with (self.directory / f"{step}.tsv").open("ab") as out:
                out.writelines(records)
        self.buffers.clear()
        self.buffered = 0

    def read(self, step: int) -> list[tuple[float, int, int, bytes]]:
        """The step's events in time order (ties in input order)."""
        path = self.directory / f"{step}.tsv"
        records = []
        with path.open("rb") as stream:
            for row in stream:
                timestamp, file_index, line, data = row.rstrip(b"\n").split(b"\t", 3)
                records.append((float(timestamp), int(file_index), int(line), data))
        path.unlink()
        records.sort(key=lambda r: (r[0], r[1], r[2]))
        return records


def history_frontier(aggregator: Aggregator) -> float:
    """How far the state's history already reaches in Prometheus (0 for a fresh state): the end of the
    last import, the last clean stop of a live exporter, and (after a crash, which records no stop)
    the newest event counted."""
    newest = max(aggregator.series[m.LAST_EVENT.name].values(), default=0.0)
    return float(max(aggregator.meta.get("history_until", 0.0), aggregator.meta.get("served_until", 0.0), newest))


def run_import(aggregator: Aggregator, paths: list[Path], out: Path, *, step: float = 300.0,
               target_labels: dict[str, str] | None = None, report_path: Path | None = None,
               work_dir: Path | None = None, progress: bool = True, promtool: str | None = None,
               keep_openmetrics: bool = False, now: float | None = None) -> ImportReport:
    """Import ``paths`` into ``aggregator`` (loaded, offline) and write TSDB blocks into ``out``."""
    started = time.monotonic()
    now = time.time() if now is None else now
    frontier = history_frontier(aggregator)
    report = ImportReport(files=len(paths), history_until=frontier)
    rejects = RejectReport(report_path or out / "import-rejected.ndjson")
    report.rejected_report = str(rejects.path)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".import-", dir=work_dir or out))
    try:
        steps, fingerprints = _bucket(aggregator, paths, work, step, frontier, report, rejects, progress)
        previous = {entry["sha256"] for entry in aggregator.meta.get("imports", [])}
        if fingerprints and all(f["sha256"] in previous for f in fingerprints):
            report.already_imported = True
            report.rejected_report = ""
            rejects.close()
            rejects.path.unlink(missing_ok=True)
            return report
        if steps.steps:
            _replay(aggregator, paths, steps, out, step, now, target_labels, report, rejects, progress, promtool,
                    keep_openmetrics)
        if report.accepted:
            report.history_until = now
            aggregator.checkpoint()
            aggregator.store.set_meta("history_until", now)
            imports = [*aggregator.meta.get("imports", []),
                       *({**f, "imported_at": rfc3339(now)} for f in fingerprints)][-MAX_IMPORTS_REMEMBERED:]
            aggregator.store.set_meta("imports", imports)
            aggregator.meta.update(history_until=now, imports=imports)
    finally:
        rejects.close()
        shutil.rmtree(work, ignore_errors=True)
    report.rejected = rejects.count
    if not rejects.count:
        rejects.path.unlink(missing_ok=True)
        report.rejected_report = ""
    report.seconds = time.monotonic() - started
    report.peak_rss_mb = _peak_rss_mb()
    report.peak_promtool_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return report


def _peak_rss_mb() -> float:
    """This process' own high-water mark (VmHWM). Not ru_maxrss: Linux carries that over from the
    parent across fork + exec, so a large parent would be reported as the import's memory."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bucket(aggregator: Aggregator, paths: list[Path], work: Path, step: float, frontier: float, report: ImportReport,
            rejects: RejectReport, progress: bool) -> tuple[_StepFiles, list[dict[str, Any]]]:
    """Pass 1: every event into the temporary file of its step; unreadable lines straight to the report."""
    from tqdm import tqdm

    steps = _StepFiles(work, step)
    fingerprints = []
    total = None if any(p.suffix == ".gz" for p in paths) else sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, desc="import: sorting", disable=not progress,
              mininterval=0.5) as bar:
        for file_index, path in enumerate(paths):
            digest = hashlib.sha256()
            name = str(path)

            def consume(data: bytes) -> None:
                digest.update(data)
                bar.update(len(data))
                bar.set_postfix(events=report.events, rejected=rejects.count, refresh=False)

            for number, value, line, error in _objects(path, consume):
                report.lines += 1
                if error is None:
                    events, error = _events_of(value, line, aggregator)
                if error is not None:
                    rejects.add(name, number, None, "", error, "invalid_line")
                    _count(report, "invalid_line")
                    continue
                for raw, data in events:
                    report.events += 1
                    try:
                        timestamp = parse_timestamp(raw.get("timestamp")) if isinstance(raw, dict) else None
                    except ValueError:
                        timestamp = None
                    if timestamp is None:
                        steps.add(INVALID, 0.0, file_index, number, data or orjson.dumps(raw))
                        continue
                    if timestamp < frontier:
                        rejects.add(name, number, raw.get("id"), "timestamp",
                                    f"{rfc3339(timestamp)} is before this state's history, which reaches "
                                    f"{rfc3339(frontier)}: Prometheus already holds samples from then on (an earlier "
                                    "import or the live exporter). Already imported? Nothing to do. Otherwise import "
                                    "all files into a fresh --storage.path and fresh Prometheus storage.",
                                    "before_history")
                        report.before_history += 1
                        _count(report, "before_history")
                        continue
                    report.first = timestamp if report.first is None else min(report.first, timestamp)
                    report.last = timestamp if report.last is None else max(report.last, timestamp)
                    steps.add(int(timestamp // step), timestamp, file_index, number, data or orjson.dumps(raw))
            fingerprints.append({"file": path.name, "sha256": digest.hexdigest(), "bytes": path.stat().st_size})
    steps.flush()
    return steps, fingerprints


def _replay(aggregator: Aggregator, paths: list[Path], steps: _StepFiles, out: Path, step: float, now: float,
            target_labels: dict[str, str] | None, report: ImportReport, rejects: RejectReport, progress: bool,
            promtool: str | None, keep_openmetrics: bool) -> None:
    """Pass 2: steps in time order through the one ingest function, one scrape after each step."""
    from tqdm import tqdm

    names = [str(p) for p in paths]
    writer = BlockWriter(aggregator, out, target_labels, promtool, keep_openmetrics, name="import")
    last_step = int(now // step)
    bar = tqdm(total=report.events - report.before_history, unit="ev", unit_scale=True, desc="import: counting",
               disable=not progress, mininterval=0.5)

    def ingest(records: list[tuple[float, int, int, bytes]], at: float) -> None:
        for start in range(0, len(records), CHUNK_EVENTS):
            chunk = records[start:start + CHUNK_EVENTS]
            raws = [orjson.loads(r[3]) for r in chunk]
            result = aggregator.ingest(raws, SOURCE, now=at)
            report.accepted += result.accepted
            report.duplicates += result.duplicates
            by_index: dict[int, list[dict[str, Any]]] = {}
            for error in result.errors:
                by_index.setdefault(error["index"], []).append(error)
            for index, reason in zip(sorted(by_index), result.rejection_reasons):
                _, file_index, line, _ = chunk[index]
                errors = by_index[index]
                rejects.add(names[file_index], line, errors[0]["id"], ", ".join(e["field"] for e in errors),
                            "; ".join(f"{e['field']} {e['message']}".strip() for e in errors), reason)
                _count(report, reason)
            bar.update(len(chunk))
            bar.set_postfix(rejected=rejects.count, refresh=False)

    if INVALID in steps.steps:
        ingest(steps.read(INVALID), now)
    present = sorted(s for s in steps.steps if s != INVALID)
    if present:
        current = present[0]
        for index in present:
            if index >= last_step:
                break
            while current < index:  # steps without events still get a scrape: one sample per step, like live
                current += 1
                writer.scrape(current * step)
            ingest(steps.read(index), (index + 1) * step)
            current = index + 1
            writer.scrape(current * step)
        while current < last_step:
            current += 1
            writer.scrape(current * step)
        for index in present:  # the import's own step and anything "future": validated against the real now
            if index >= last_step:
                ingest(steps.read(index), now)
        writer.scrape(now)
    writer.flush()
    bar.close()
    report.blocks = writer.blocks
    report.samples = writer.samples


def _count(report: ImportReport, reason: str) -> None:
    report.reasons[reason] = report.reasons.get(reason, 0) + 1
