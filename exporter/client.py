"""Python client SDK: record usage events from an application without ever blocking it.

``record()`` serializes the event into a bounded in-memory buffer and returns; one background
thread posts batches to ``POST /v1/events``. Each event gets its idempotency ``id`` when it is
recorded, and a retried batch re-sends the same bytes, so the exporter's dedupe makes retries after
timeouts, 429 and 503 safe: an event is counted at most once, however often it was sent.

Standard library + httpx only, so apps can depend on it without the server's dependencies.
Counters (``sent``, ``accepted``, ``duplicates``, ``rejected``, ``dropped``, ``retries``) say what
happened; every recorded event ends up either ``sent`` (answered by the exporter) or ``dropped``.
"""

from __future__ import annotations

import atexit
import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

import httpx

from . import __version__
from .formats.vendor_usage import USAGE_FORMATS, from_response, map_usage

log = logging.getLogger("exporter.client")

RETRY_STATUSES = frozenset({429, 502, 503, 504})  # overload or a proxy in between: the batch may succeed later
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0  # a server asking for longer would stall the buffer until it overflows
# Provider labels as the OpenTelemetry GenAI conventions name them (gen_ai.provider.name), so the same
# traffic carries the same label whether it arrives through this SDK or through OTLP.
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "bedrock": "aws.bedrock"}
OPENAI_OPERATIONS = {"chat.completion": "chat", "response": "chat", "text_completion": "text_completion",
                     "list": "embeddings"}


def _jsonable(value: Any) -> Any:
    """``json.dumps`` hook: datetimes become RFC 3339 (an aware datetime is what the exporter wants)."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), capped; None when absent or unparsable."""
    header = response.headers.get("retry-after", "").strip()
    if not header:
        return None
    if header.isdigit():
        return min(float(header), MAX_RETRY_AFTER_S)
    try:
        return min(max(parsedate_to_datetime(header).timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_S)
    except (TypeError, ValueError):
        return None


class UsageClient:
    """Batches usage events to an exporter at ``url`` (e.g. ``http://127.0.0.1:9477``) from a daemon thread."""

    def __init__(self, url: str, token: str | None = None, batch_size: int = 500, flush_interval: float = 1.0,
                 max_buffer: int = 100_000, max_retries: int = 5, timeout: float = 10.0, backoff: float = 0.5) -> None:
        self.endpoint = url.rstrip("/") + "/v1/events"
        self.batch_size, self.flush_interval, self.max_buffer = batch_size, flush_interval, max_buffer
        self.max_retries, self.backoff = max_retries, backoff
        headers = {"Content-Type": "application/json", "User-Agent": f"llm-usage-exporter-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(headers=headers, timeout=timeout)
        self._cond = threading.Condition()
        self._buffer: deque[bytes] = deque()
        self._pending = 0  # recorded, not yet sent or dropped: the buffer plus the batch in flight
        self._flushing = 0
        self._closed = False
        self.sent = self.accepted = self.duplicates = self.rejected = self.dropped = self.retries = 0
        self._thread = threading.Thread(target=self._run, name="llm-usage-client", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def record(self, **event: Any) -> None:
        """Queue one event (fields as in the ingest API) and return at once. ``id`` (uuid4) and
        ``timestamp`` (now) are filled in when absent. A full buffer or a closed client counts the
        event as ``dropped``; values JSON cannot carry (objects, NaN) raise here, in the caller."""
        if event.get("id") is None:
            event["id"] = uuid.uuid4().hex
        if event.get("timestamp") is None:
            event["timestamp"] = time.time()
        data = json.dumps(event, default=_jsonable, allow_nan=False, separators=(",", ":")).encode()
        with self._cond:
            if self._closed or len(self._buffer) >= self.max_buffer:
                self.dropped += 1
                return
            self._buffer.append(data)
            self._pending += 1
            if len(self._buffer) >= self.batch_size or self._flushing:
                self._cond.notify_all()

    def record_openai(self, response: Mapping[str, Any], *, tenant: str, customer: str, duration_ms: float,
                      **extra: Any) -> None:
        """Record an OpenAI Chat Completions / Responses / Embeddings response given as a dict
        (``response.model_dump()``); ``extra`` adds or overrides event fields (``ttft_ms``, ``id``...)."""
        self.record_response("openai", response, tenant=tenant, customer=customer, duration_ms=duration_ms,
                             **{"operation": OPENAI_OPERATIONS.get(response.get("object"), "chat"), **extra})

    def record_anthropic(self, message: Mapping[str, Any], *, tenant: str, customer: str, duration_ms: float,
                         **extra: Any) -> None:
        """Record an Anthropic Messages response given as a dict (``message.model_dump()``; for streams,
        the final message, whose usage is complete)."""
        self.record_response("anthropic", message, tenant=tenant, customer=customer, duration_ms=duration_ms,
                             **extra)

    def record_response(self, usage_format: str, response: Mapping[str, Any], *, tenant: str, customer: str,
                        duration_ms: float, **extra: Any) -> None:
        """Record any vendor response of :data:`~exporter.formats.vendor_usage.USAGE_FORMATS` given as a dict:
        ``openai``, ``anthropic``, ``gemini`` (REST JSON or google-genai's ``model_dump()``), ``bedrock``
        (a Converse response names no model: pass ``model=`` the model id you called). Model, usage and
        service tier come from the response; ``extra`` (the caller's fields) wins over all three. Raises
        ``ValueError`` naming every unusable field, in the caller, before anything is queued."""
        if usage_format not in USAGE_FORMATS:
            raise ValueError(f"usage_format must be one of {', '.join(sorted(USAGE_FORMATS))}")
        usage, model, service_tier = from_response(usage_format, response)
        mapped = map_usage(usage_format, usage)
        model = extra.get("model", model)
        problems = [] if isinstance(model, str) else ["model: is required"]
        if isinstance(mapped, list):
            problems += [f"{field}: {message}" for field, message in mapped]
        if problems:
            raise ValueError(f"not a usable {usage_format} response ({'; '.join(problems)}); for a stream pass the "
                             "final response (OpenAI: with stream_options={'include_usage': True})")
        vendor = {"model": model, "provider": PROVIDERS[usage_format], "status": "ok", **mapped}
        if isinstance(service_tier, str):
            vendor.setdefault("service_tier", service_tier)
        self.record(**{**vendor, "tenant": tenant, "customer": customer, "duration_ms": duration_ms, **extra})

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything recorded so far; True when all of it was sent or dropped within ``timeout``."""
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._pending == 0, timeout)
            finally:
                self._flushing -= 1

    def close(self, timeout: float = 10.0) -> None:
        """Flush for up to ``timeout`` seconds and stop; also runs at interpreter exit. Events still
        buffered after the timeout are counted as dropped."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        atexit.unregister(self.close)
        self._thread.join(timeout)
        with self._cond:
            if self._buffer:
                log.warning("llm-usage client closed with %d events undelivered", len(self._buffer))
                self.dropped += len(self._buffer)
                self._pending -= len(self._buffer)
                self._buffer.clear()
                self._cond.notify_all()

    def __enter__(self) -> UsageClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._closed and not self._buffer:
                        return
                    if not (self._buffer and (len(self._buffer) >= self.batch_size or self._flushing or self._closed)):
                        self._cond.wait(self.flush_interval)
                    if not self._buffer:
                        continue
                    batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), self.batch_size))]
                try:
                    self._deliver(batch)
                except Exception:  # a bug here must not silently end all reporting: lose this batch only
                    log.exception("dropping %d events: unexpected error while sending", len(batch))
                    self._count(dropped=len(batch))
                with self._cond:
                    self._pending -= len(batch)
                    self._cond.notify_all()
        finally:
            self._http.close()

    def _count(self, **counts: int) -> None:
        with self._cond:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def _deliver(self, batch: list[bytes]) -> None:
        """POST one batch, retrying overload and connection errors; a 413 splits the batch in two."""
        body = b'{"events":[' + b",".join(batch) + b"]}"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count(retries=1)
            try:
                response = self._http.post(self.endpoint, content=body)
            except httpx.TransportError as exc:
                problem, delay = f"{type(exc).__name__}: {exc}", None
            else:
                status = response.status_code
                if response.is_success:
                    self._answered(batch, response)
                    return
                if status == 413 and len(batch) > 1:
                    half = len(batch) // 2
                    self._deliver(batch[:half])
                    self._deliver(batch[half:])
                    return
                if status not in RETRY_STATUSES:
                    log.warning("exporter refused %d events with HTTP %d: %s", len(batch), status, response.text[:300])
                    self._count(sent=len(batch), rejected=len(batch))
                    return
                problem, delay = f"HTTP {status}", _retry_after(response)
            if attempt < self.max_retries:
                if delay is None:
                    ceiling = min(MAX_BACKOFF_S, self.backoff * 2 ** attempt)
                    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
                time.sleep(delay)
        log.error("dropping %d events after %d attempts; last problem: %s", len(batch), self.max_retries + 1, problem)
        self._count(dropped=len(batch))

    def _answered(self, batch: list[bytes], response: httpx.Response) -> None:
        try:
            result = response.json()
            counts = {name: int(result.get(name, 0)) for name in ("accepted", "duplicates", "rejected")}
        except (ValueError, TypeError, AttributeError):
            log.warning("exporter answered HTTP %d with an unexpected body: %s", response.status_code, response.text[:300])
            counts = {}
        if counts.get("rejected"):
            log.warning("exporter rejected %d events, e.g. %s", counts["rejected"], result.get("errors", [])[:3])
        self._count(sent=len(batch), **counts)
