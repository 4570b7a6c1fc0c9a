"""Running the app under uvicorn: start-up checks that fail in one line, and slow-client guards.

Start-up failures an operator can fix (storage path unusable or locked by another exporter, port
in use) are found *before* the server starts and reported as one sentence with a non-zero exit,
not a traceback; "listening on" is logged only once the socket is bound.

Slow clients: uvicorn times out idle keep-alive connections but not a client that connects and
trickles its request headers, so :class:`GuardedH11Protocol` closes a connection whose request
headers are not complete within ``web.header-timeout`` of its first byte (or of connecting); the
body has ``web.body-timeout`` (enforced by :func:`exporter.server.http.read_body`); and uvicorn's
``limit_concurrency`` answers 503 past ``web.max-connections`` connections, so stuck clients
cannot hold every file descriptor.

Garbage collection: ingest allocates millions of short-lived objects (row tuples, dicts) and few
cycles, so with CPython's default thresholds (a young collection every 700 net allocations) the
collector ran ~3,400 times per million events. :func:`tune_gc` makes young collections rarer and
freezes what start-up loaded (the price book, the restored state), so the collections that do run
do not walk it. Measured in the server over 2M uniform events: 1,039 ms of collection (longest
71 ms) with the defaults, 313-344 ms (longest 24-29 ms) tuned. Only the server process does this; an
application embedding the exporter keeps its own collector settings.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import Config


class StartupError(Exception):
    """A start-up problem the operator can fix; the message is the whole report."""


def check_storage(path: str) -> None:
    """The state file can be created, opened as SQLite and locked by this process; else
    :class:`StartupError` saying which of these failed. ``check-config`` runs the same check."""
    if path == ":memory:":
        return
    target = Path(path)
    if target.is_dir():
        raise StartupError(f"storage.path {path}: is a directory; give a file path such as {target / 'llm-exporter.db'}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"storage.path {path}: cannot create directory {target.parent}: {exc.strerror}") from None
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise StartupError(f"storage.path {path}: directory {target.parent} is not writable by this user")
    if target.exists() and not os.access(target, os.R_OK | os.W_OK):
        raise StartupError(f"storage.path {path}: file is not readable and writable by this user")
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=0.5)
    except sqlite3.Error as exc:
        raise StartupError(f"storage.path {path}: cannot open: {exc}") from None
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")  # what the exporter's own exclusive lock needs
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StartupError(f"storage.path {path}: the database is locked by another process (is another "
                               "exporter running on the same storage.path?)") from None
        raise StartupError(f"storage.path {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise StartupError(f"storage.path {path}: {exc} (not an exporter state file?)") from None
    finally:
        conn.close()


def bind(config: Config) -> socket.socket:
    """The listening socket, bound now so a port in use is one clear line before anything starts."""
    host, port = config.listen_host, config.listen_port
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, socket.gaierror) as exc:
        raise StartupError(f"web.listen-address {config.web_listen_address}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = " (another process is listening there; pick another port)" if exc.errno == errno.EADDRINUSE else ""
        raise StartupError(f"web.listen-address {config.web_listen_address}: {exc.strerror}{hint}") from None
    sock.setblocking(False)
    return sock


def guarded_protocol(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on receiving each request's headers."""

    class GuardedH11Protocol(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._guard()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._guard()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _guard(self) -> None:
            waiting_for_headers = self.cycle is None or self.cycle.response_complete
            if not waiting_for_headers:
                self._disarm()
            elif self.header_timer is None and self.timeout_keep_alive_task is None:
                self.header_timer = self.loop.call_later(header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _too_slow(self) -> None:
            self.header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


# Young collections per 50k net allocations instead of 700; an older one every 5 young (a 20-young
# generation 1 grew to ~1M objects and took 44 ms to walk).
GC_THRESHOLDS = (50_000, 5, 10)


def tune_gc() -> None:
    """Fewer young collections; what is alive now (loaded at start-up) moves out of the collector's
    sight for good (``gc.freeze``), so full collections scan only what ingest created since."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()


def serve(app: Any, config: Config, sock: socket.socket, log: Any, started: str) -> None:
    """Run uvicorn on the bound ``sock``; ``started`` is logged once it accepts connections."""
    import uvicorn

    server_config = uvicorn.Config(
        app, log_level=config.log_level, access_log=False, server_header=False, timeout_graceful_shutdown=5,
        http=guarded_protocol(config.web_header_timeout), limit_concurrency=config.web_max_connections,
        timeout_keep_alive=int(max(1, config.web_idle_timeout)))
    server = uvicorn.Server(server_config)

    async def run() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            tune_gc()  # after the lifespan loaded the state
            log.info("%s", started)
        await serving

    asyncio.run(run())
