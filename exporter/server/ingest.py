"""The one front door for usage events, whatever format they arrive in.

Every ingest route is ``decode`` (bytes + content type → a :class:`Batch` of raw events, the only
part that differs per format) followed by :meth:`FrontDoor.submit`, which applies the request rules
once for all formats, in this order: batch limit (413), tenant check (403), tenant rate limits
(429), store health (503, nothing counted), then the one ingest function,
:meth:`Aggregator.ingest` (in its stepwise form, see :class:`FrontDoor` on fairness). Refusals are counted in ``llm_exporter_rejections_total{reason,tenant}``.
A new format is one decoder plus one :class:`Format` entry in the route table.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ..config import Config
from ..core.aggregate import Aggregator, IngestResult
from ..core.events import Event, decode_batch
from ..core.ratelimit import TenantRateLimits
from ..core.store import StateStore, StoreUnavailable
from ..core.telemetry import Telemetry
from ..formats import PayloadError, TooManyEvents, otlp
from ..formats.jsonbody import check_value_budget, loads
from .http import HTTPProblem, TokenAuth, bad_request, json_response, media_type, problem_response, read_body, \
    too_large

EVENTS_JSON = ("application/json",)
EVENTS_NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
OFFLOOP_BYTES = 256 * 1024  # bodies above this are decoded off the event loop (a few ms of parsing below)
DECODE_THREADS = 2  # the machine's cores; more threads would only share the same GIL
_TENANT_OF = attrgetter("tenant")
_NDJSON_LINE = re.compile(rb"[^\n]*\S[^\n]*")  # blank lines are skipped in C, never become objects


@dataclass(slots=True)
class Batch:
    """What a decoder hands the front door: raw event objects, or (the JSON fast path) events that
    msgspec already decoded and validated as a whole. ``size`` is what the batch limit counts."""

    raw: Sequence[Any] = ()
    valid: list[Event] | None = None

    @property
    def size(self) -> int:
        return len(self.valid) if self.valid is not None else len(self.raw)

    def tenant_counts(self) -> dict[str, int]:
        """Events per tenant named in the batch (malformed tenants are left to per-event validation)."""
        if self.valid is not None:  # validated: every tenant is a string; counted in C
            return dict(Counter(map(_TENANT_OF, self.valid)))
        counts: dict[str, int] = {}
        for tenant in (e.get("tenant") for e in self.raw if isinstance(e, dict)):
            if isinstance(tenant, str):
                counts[tenant] = counts.get(tenant, 0) + 1
        return counts


Decoder = Callable[[bytes, str, "str | None", int, float, Aggregator], Batch]


def decode_events(body: bytes, media: str, caller: str | None, max_events: int, now: float,
                  aggregator: Aggregator) -> Batch:
    """``POST /v1/events``: ``{"events": [...]}`` (decoded and validated by msgspec in one go when
    the whole batch is valid) or NDJSON, one event per line."""
    check_value_budget(body, max_events)
    if media in EVENTS_JSON:
        valid = decode_batch(body, now, aggregator.limits)
        if valid is not None:
            return Batch(valid=valid)
        try:
            document = loads(body)
        except PayloadError as exc:
            raise PayloadError(f"body is {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("events"), list):
            raise PayloadError('body must be a JSON object {"events": [ ... ]}')
        return Batch(raw=document["events"])
    events = []
    for number, line in enumerate(_NDJSON_LINE.finditer(body), 1):
        if number > max_events:
            raise TooManyEvents(f"more than {max_events} lines exceed the batch limit of {max_events}")
        try:
            events.append(loads(line.group()))
        except PayloadError as exc:
            raise PayloadError(f"line {number} is {exc}") from None
    return Batch(raw=events)


def decode_otlp(body: bytes, media: str, caller: str | None, max_events: int, now: float,
                aggregator: Aggregator) -> Batch:
    """``POST /v1/otlp/v1/traces``: GenAI spans → events; spans without a tenant attribute belong
    to the caller's tenant."""
    request = otlp.decode_request(body, media, max_events)
    events, _skipped = otlp.spans_to_events(request, default_tenant=caller)
    return Batch(raw=events)


def events_response(result: IngestResult, media: str) -> Response:
    return json_response(result.as_dict())


def otlp_response(result: IngestResult, media: str) -> Response:
    return Response(otlp.encode_response(result.rejected, result.errors, result.warnings, media), media_type=media)


@dataclass(frozen=True)
class Format:
    """One ingest format: the media types it reads, its decoder and its success response."""

    source: str  # the `source` label of llm_exporter_events_total
    media_types: tuple[str, ...]
    decode: Decoder
    respond: Callable[[IngestResult, str], Response]


EVENTS = Format("api", EVENTS_JSON + EVENTS_NDJSON, decode_events, events_response)
OTLP_TRACES = Format("otlp", (otlp.PROTOBUF, otlp.JSON), decode_otlp, otlp_response)


def store_ready(store: StateStore, telemetry: Telemetry) -> bool:
    """Probe an unhealthy store with an empty transaction so /readyz and writes recover by themselves."""
    if store.healthy:
        return True
    try:
        store.probe()
    except StoreUnavailable:
        return False
    telemetry.store_up.set(1)
    return True


class KeyedLocks:
    """One asyncio lock per key (a tenant, a caller) with work in progress: work of one key runs one
    at a time while other keys go ahead. A lock exists only while someone holds or awaits it, so
    the map is bounded by what is in flight, whatever keys clients send."""

    def __init__(self) -> None:
        self.locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        entries = []
        for key in sorted(set(keys)):  # one order for everyone: no deadlock
            entry = self.locks.get(key)
            if entry is None:
                entry = self.locks[key] = (asyncio.Lock(), [0])
            entry[1][0] += 1
            entries.append((key, entry))
        acquired = []
        try:
            for _, (lock, _users) in entries:
                await lock.acquire()
                acquired.append(lock)
            yield
        finally:
            for lock in acquired:
                lock.release()
            for key, (_lock, users) in entries:
                users[0] -= 1
                if not users[0]:
                    del self.locks[key]


class FrontDoor:
    """The request rules every ingest format obeys, and the route handler that applies them.

    Fairness (a 1-event request must not wait long behind another tenant's largest legal batch) comes
    from three things, chosen because the event loop is one thread and the GIL is shared:
    - bodies larger than :data:`OFFLOOP_BYTES` are decoded in a small thread pool, so the loop keeps
      serving while they parse (the GIL switches every 5 ms between the two), and at most one such
      decode per caller runs at a time: a tenant flooding big bodies queues behind itself;
    - counting runs through :meth:`Aggregator.ingest_steps`, which pauses every few hundred events
      while validating and pricing to let the loop answer others (never after the log append: the
      logged rows are queued and counted in bulk, see :mod:`exporter.core.fold`), while the batch
      stays one transaction;
    - per-tenant locks keep batches of the same tenant from interleaving, and only those.
    Slicing a batch into separate transactions would have been simpler but would break "a batch is
    counted whole or not at all" (and with it the 503 promise and the crash-safety tests).
    """

    def __init__(self, config: Config, auth: TokenAuth, rate_limits: TenantRateLimits, aggregator: Aggregator,
                 store: StateStore, telemetry: Telemetry) -> None:
        self.config = config
        self.auth = auth
        self.rate_limits = rate_limits
        self.aggregator = aggregator
        self.store = store
        self.telemetry = telemetry
        self.tenant_locks = KeyedLocks()  # batches of one tenant never interleave (dedupe)
        self.decoders = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode")
        self.decoding = KeyedLocks()  # one big decode per caller at a time

    async def submit(self, batch: Batch, caller: str | None, source: str, now: float) -> IngestResult:
        """Count ``batch`` for ``caller`` (None when auth is off) or raise the :class:`HTTPProblem`
        that refuses it whole; a refused batch counts nothing."""
        limit = self.config.web_max_batch_events
        if batch.size > limit:
            raise too_large(f"{batch.size} events exceed the batch limit of {limit}")
        counts = batch.tenant_counts()
        if caller is not None:
            foreign = set(counts) - {caller}
            if foreign:
                raise HTTPProblem(403, "forbidden", f"token of tenant {caller!r} cannot write tenant(s) "
                                                    f"{sorted(foreign)[:5]}")
        retry_after = self.rate_limits.admit(counts) if self.rate_limits.buckets else 0
        if retry_after:
            raise HTTPProblem(429, "rate_limited", f"tenant rate limit exceeded; retry in {retry_after}s",
                              {"Retry-After": str(retry_after)})
        if not store_ready(self.store, self.telemetry):
            raise HTTPProblem(503, "store_unavailable", f"{self.store.last_error or 'state store unavailable'}; "
                              "nothing from this request was counted", {"Retry-After": "5"})
        async with self.tenant_locks.hold(counts):
            steps = self.aggregator.ingest_steps(batch.raw, source, now, valid=batch.valid)
            try:
                while True:  # pauses come before the log append only: a cancelled batch counts nothing
                    next(steps)
                    await asyncio.sleep(0)
            except StopIteration as done:
                return done.value
            except StoreUnavailable as exc:
                raise HTTPProblem(503, "store_unavailable", f"{exc}; nothing from this request was counted",
                                  {"Retry-After": "5"}) from None

    def decode(self, fmt: Format, body: bytes, content_type: str, caller: str | None, now: float) -> Batch:
        """The format's decoder, with its payload errors turned into 400/413 and its media types
        enforced (415)."""
        media = media_type(content_type)
        if media not in fmt.media_types:
            raise HTTPProblem(415, "unsupported_media_type", f"Content-Type must be {' or '.join(fmt.media_types)}")
        try:
            return fmt.decode(body, media, caller, self.config.web_max_batch_events, now, self.aggregator)
        except TooManyEvents as exc:
            raise too_large(str(exc)) from None
        except PayloadError as exc:
            raise bad_request(str(exc)) from None

    async def decode_fairly(self, fmt: Format, body: bytes, content_type: str, caller: str | None, now: float,
                            client: str) -> Batch:
        """:meth:`decode` on the loop for small bodies; off it, one at a time per caller, for big ones."""
        if len(body) <= OFFLOOP_BYTES:
            return self.decode(fmt, body, content_type, caller, now)
        key = caller if caller is not None else f"client {client}"
        async with self.decoding.hold([key]):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.decoders, self.decode, fmt, body, content_type, caller, now)

    def refused_tenant(self, caller: str | None, batch: Batch | None) -> str:
        """Whom a refused request belongs to, for the rejection counter and its alert: the caller's
        tenant, else the tenant most of the decoded batch names (capped: ``__other__`` unless the
        tenant is already kept), else "" (refused before anyone could be told apart)."""
        if caller is not None:
            return caller
        counts = batch.tenant_counts() if batch is not None else {}
        return self.aggregator.caps.tenant_of_rejection(max(counts, key=counts.__getitem__)) if counts else ""

    def route(self, path: str, fmt: Format) -> Route:
        """``POST path`` for ``fmt``: auth, body, decode, submit, respond."""

        async def endpoint(request: Request) -> Response:
            content_type = request.headers.get("content-type", "")
            caller: str | None = None
            batch: Batch | None = None
            try:
                caller = self.auth.tenant_for(request)
                body = await read_body(request, self.config.web_max_body_bytes, self.config.web_body_timeout)
                now = time.time()
                client = request.client.host if request.client else "unknown"
                batch = await self.decode_fairly(fmt, body, content_type, caller, now, client)
                del body  # the decoded batch is all that is needed from here on
                result = await self.submit(batch, caller, fmt.source, now)
            except HTTPProblem as exc:
                self.telemetry.rejections.labels(exc.reason, self.refused_tenant(caller, batch)).inc()
                return problem_response(exc)
            except ClientDisconnect:
                return Response(status_code=400)
            return fmt.respond(result, media_type(content_type))

        return Route(path, endpoint, methods=["POST"])
