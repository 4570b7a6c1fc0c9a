"""HTTP plumbing every route shares: problem responses, bounded body reading, bearer auth, request metrics.

Nothing here knows an ingest format or the aggregator; :mod:`exporter.server.ingest` builds the
front door on top of it and :mod:`exporter.server.app` wires the routes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import zlib
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Config
from ..core.telemetry import Telemetry

ENCODINGS = ("gzip", "deflate", "zstd")
_GZIP_MAGIC = b"\x1f\x8b"


class HTTPProblem(Exception):
    """A request-level refusal: status, rejection reason for the self-metric, message for the client."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def problem_response(exc: HTTPProblem) -> Response:
    return json_response({"error": exc.message}, exc.status, exc.headers)


def media_type(content_type: str) -> str:
    """``application/json; charset=utf-8`` → ``application/json``."""
    return content_type.split(";", 1)[0].strip().lower()


def too_large(message: str) -> HTTPProblem:
    return HTTPProblem(413, "too_large", message)


def bad_request(message: str) -> HTTPProblem:
    return HTTPProblem(400, "bad_request", message)


class TokenAuth:
    """Bearer tokens → tenant. Stored as SHA-256 digests and compared with ``hmac.compare_digest``
    against *every* known token, so timing reveals neither which token nor how much of it matched."""

    def __init__(self, config: Config) -> None:
        self.required = config.auth_required
        self.digests = [(hashlib.sha256(token.encode()).digest(), name)
                        for name, tenant in config.tenants.items() for token in tenant.tokens]

    def tenant_for(self, request: Request) -> str | None:
        """The caller's tenant, or None when auth is off; raises 401 for anything else."""
        if not self.required:
            return None
        if "access_token" in request.query_params or "token" in request.query_params:
            raise HTTPProblem(401, "unauthenticated", "tokens in the query string are refused (they end up in "
                                                      "logs); send Authorization: Bearer <token>")
        if not self.digests:
            raise HTTPProblem(401, "unauthenticated", "authentication is required (not listening on loopback) but "
                                                      "no tenant tokens are configured; configure tenants or set "
                                                      "--auth.mode=off on a trusted network")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPProblem(401, "unauthenticated", "missing or malformed Authorization: Bearer <token> header",
                              {"WWW-Authenticate": 'Bearer realm="llm-usage-exporter"'})
        presented = hashlib.sha256(token.strip().encode()).digest()
        found = None
        for digest, tenant in self.digests:
            if hmac.compare_digest(presented, digest):
                found = tenant
        if found is None:
            raise HTTPProblem(401, "unauthenticated", "unknown token",
                              {"WWW-Authenticate": 'Bearer realm="llm-usage-exporter", error="invalid_token"'})
        return found


# --- bodies ----------------------------------------------------------------------------------------
class _Inflater(Protocol):
    def feed(self, data: bytes, room: int) -> bytes: ...
    def finish(self) -> None: ...


class _ZlibInflater:
    """gzip (every member, RFC 1952 §2.2) or deflate, inflated incrementally with at most ``room + 1``
    bytes produced per call, so a bomb costs the body limit and not what it would expand to."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.members = 0
        self.pending = b""  # bytes after a finished gzip member, too few yet to tell a header from garbage
        self.inflater: Any = None
        self.done = False  # deflate is one stream: anything after its end is garbage

    def _start(self, data: bytes) -> None:
        if self.encoding == "gzip":
            if data[:2] != _GZIP_MAGIC:
                raise bad_request("data after the last gzip member is not gzip (trailing garbage)"
                                  if self.members else "body is not gzip (Content-Encoding: gzip)")
            wbits = 16 + zlib.MAX_WBITS
        else:  # RFC 9110 "deflate" is the zlib format; some clients send raw deflate: accept both
            zlib_header = (data[0] & 0x0F) == 8 and int.from_bytes(data[:2], "big") % 31 == 0
            wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
        self.inflater = zlib.decompressobj(wbits=wbits)
        self.members += 1

    def feed(self, data: bytes, room: int) -> bytes:
        out = bytearray()
        data, self.pending = self.pending + data, b""
        while data:
            if self.inflater is None:
                if self.done:
                    raise bad_request("trailing data after the deflate stream")
                if len(data) < 2:
                    self.pending = data
                    break
                self._start(data)
            try:
                out += self.inflater.decompress(data, room - len(out) + 1)
            except zlib.error as exc:
                raise bad_request(f"body is not valid {self.encoding}: {exc}") from None
            if len(out) > room:
                break
            if self.inflater.eof:
                data, self.inflater = self.inflater.unused_data, None
                self.done = self.encoding == "deflate"
            else:
                data = self.inflater.unconsumed_tail
        return bytes(out)

    def finish(self) -> None:
        if self.pending:
            raise bad_request("data after the last gzip member is not gzip (trailing garbage)")
        if self.members == 0:
            raise bad_request(f"empty body is not {self.encoding}")
        if self.inflater is not None:
            raise bad_request(f"{self.encoding} body is truncated")


class _ZstdBuffered:
    """zstd: the compressed bytes (already within the body limit) are gathered, then inflated through
    a bounded reader that stops one byte past the limit, across every frame; garbage is a ZstdError."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def feed(self, data: bytes, room: int) -> bytes:
        self.chunks.append(data)
        return b""

    def finish(self) -> None:
        if not self.chunks:
            raise bad_request("empty body is not zstd")

    def inflate(self, limit: int) -> bytes:
        import zstandard  # only paid for by servers that receive zstd

        data = b"".join(self.chunks)
        self.chunks.clear()
        out = bytearray()
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
            while piece := reader.read(min(limit - len(out) + 1, 1 << 20)):
                out += piece
                if len(out) > limit:
                    raise too_large(f"decompressed body exceeds the limit of {limit} bytes")
        except zstandard.ZstdError as exc:
            raise bad_request(f"body is not valid zstd: {exc}") from None
        return bytes(out)


def _inflater(header: str) -> _Inflater | None:
    """The decoder for a Content-Encoding header (None for identity); 415 for anything we do not speak."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip() and c.strip().lower() != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in ENCODINGS:
        raise HTTPProblem(415, "unsupported_media_type",
                          f"Content-Encoding {header.strip()[:60]!r} is not supported; use one of "
                          f"{', '.join(ENCODINGS)} or none")
    if codings[0] == "zstd":
        return _ZstdBuffered()
    return _ZlibInflater(codings[0])


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, decoded from its Content-Encoding (gzip, deflate, zstd) while it streams in, and
    refused with 413 as soon as either the bytes on the wire or the decoded bytes exceed ``limit``:
    nothing past the limit is ever buffered, whatever the compression ratio. A body that has not
    arrived within ``timeout`` seconds is refused with 408 (a slow client holds no more than that)."""
    try:
        async with asyncio.timeout(timeout):
            return await _read_body(request, limit)
    except TimeoutError:
        raise HTTPProblem(408, "body_timeout", f"the request body did not arrive within {timeout:g} s") from None


async def _read_body(request: Request, limit: int) -> bytes:
    inflater = _inflater(request.headers.get("content-encoding", ""))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and (
            len(declared) > 18 or int(declared) > limit):
        raise too_large(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    out, received = bytearray(), 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(f"body exceeds the limit of {limit} bytes")
        if inflater is None:
            out += chunk
        elif chunk:
            out += inflater.feed(chunk, limit - len(out))
            if len(out) > limit:
                raise too_large(f"decompressed body exceeds the limit of {limit} bytes")
    if inflater is None:
        return bytes(out)
    inflater.finish()
    if isinstance(inflater, _ZstdBuffered):
        return inflater.inflate(limit)
    return bytes(out)


class MetricsMiddleware:
    """Counts requests by route *template* (never the raw path, which clients control)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.telemetry.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.telemetry.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in ("GET", "POST", "HEAD", "PUT", "DELETE") else "other"
            self.telemetry.http_requests.labels(template, method, str(status)).inc()
            self.telemetry.http_duration.labels(template, method).observe(time.perf_counter() - start)
