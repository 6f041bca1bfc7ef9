"""A small bounded HTTP/1.1 server for the agent's endpoints: asyncio on one thread.

Why not ``wsgiref`` + ``ThreadingMixIn`` (what the agent used, and what
``prometheus_client.start_http_server`` still is): one thread per connection,
no read timeout and a listen backlog of 5, so 1,000 idle connections held
1,000 threads and a burst of scrapers lost SYNs. Here:

- connections are coroutines on one event-loop thread: an idle or slow client
  costs a file descriptor, not a thread; at most ``max_connections`` are
  kept, and when full the connection that has waited longest without sending
  a request is dropped for the new one, so an idle flood cannot lock a
  scraper out;
- the request head must arrive within ``header_timeout`` of the connection
  (slow-loris clients are dropped), a kept-alive connection is closed after
  ``idle_timeout`` without a request, a response must drain within
  ``write_timeout``; the TLS handshake has the header timeout too;
- the listen backlog is ``backlog`` (1024, capped by ``net.core.somaxconn``);
- handlers (the Prometheus exposition, JSON) run on a fixed pool of
  ``workers`` threads, never one per connection.

Only ``GET`` and ``HEAD`` without a body are served: this is a metrics
endpoint, not a general web server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from degrade.errors import InputError

__all__ = ["HTTPServer"]

log = logging.getLogger("degrade.agent.http")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

# handler(method, path, query, headers) -> (status, [(name, value)], body)
Handler = Callable[[str, str, str, dict[str, str]], tuple[int, list[tuple[str, str]], bytes]]


class HTTPServer:
    """Serve ``handler`` on ``host:port`` from a background thread until :meth:`close`.

    ``auth`` is called with the ``Authorization`` header value (or ``None``)
    and returns whether the request may proceed; ``headers`` are added to
    every response (exporter-toolkit's ``http_server_config.headers``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        handler: Handler,
        *,
        ssl_context=None,
        auth: Callable[[str | None], bool] | None = None,
        headers: dict[str, str] | None = None,
        header_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        write_timeout: float = 30.0,
        max_connections: int = 512,
        backlog: int = 1024,
        workers: int = 4,
        max_header_bytes: int = 16384,
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.auth = auth
        self.extra_headers = dict(headers or {})
        self.header_timeout = float(header_timeout)
        self.idle_timeout = float(idle_timeout)
        self.write_timeout = float(write_timeout)
        self.max_connections = int(max_connections)
        self.backlog = int(backlog)
        self.max_header_bytes = int(max_header_bytes)
        self.stats: Counter[str] = Counter()
        self.on_close: list[Callable[[], Any]] = []  # called once by close()
        # open connections -> (time they started waiting for a request, or None while one is served)
        self._active: dict[asyncio.StreamWriter, float | None] = {}
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._sock = socket.create_server((host, port), family=family, backlog=self.backlog)
        except OSError as exc:
            raise InputError(f"--listen {host}:{port}: cannot bind ({exc.strerror})") from exc
        self.host, self.port = self._sock.getsockname()[:2]
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="degrade-http-worker"
        )
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="degrade-http", daemon=True
        )
        self._thread.start()
        started.wait(10)
        if self._error is not None:
            raise InputError(f"--listen {host}:{port}: cannot serve ({self._error})")

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def active_connections(self) -> int:
        return len(self._active)

    # ------------------------------------------------------------ loop thread
    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(
                    self._client,
                    sock=self._sock,
                    backlog=self.backlog,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=self.header_timeout
                    if self.ssl_context is not None
                    else None,
                    limit=self.max_header_bytes,
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported to the constructor's caller
            self._error = exc
            started.set()
            return
        started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        if len(self._active) >= self.max_connections:
            # full: make room by dropping the connection that has waited longest without sending a
            # request (an idle flood must not lock a scraper out); if every one is being served, refuse
            waiting = [(t, w) for w, t in self._active.items() if t is not None]
            if not waiting:
                self.stats["rejected_connections"] += 1
                writer.transport.abort()
                return
            _, oldest = min(waiting, key=lambda tw: tw[0])
            self._active.pop(oldest, None)
            oldest.transport.abort()
            self.stats["evicted_connections"] += 1
        self._active[writer] = asyncio.get_running_loop().time()
        try:
            await self._serve_connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        except Exception:  # noqa: BLE001 - one bad connection must never stop the server
            log.exception("HTTP connection failed")
        finally:
            self._active.pop(writer, None)
            writer.transport.abort()

    async def _read_head(self, reader: asyncio.StreamReader, first: bool) -> bytes | None:
        loop = asyncio.get_running_loop()
        if first:
            deadline = loop.time() + self.header_timeout
            prefix = b""
        else:
            try:  # a kept-alive connection may idle until its next request ...
                prefix = await asyncio.wait_for(reader.readexactly(1), self.idle_timeout)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                self.stats["idle_closed"] += 1
                return None
            deadline = loop.time() + self.header_timeout  # ... which then has the header deadline
        try:
            rest = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), max(deadline - loop.time(), 0.0)
            )
        except asyncio.TimeoutError:
            self.stats["header_timeouts"] += 1
            return None
        except asyncio.IncompleteReadError:
            return None
        return prefix + rest

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        first = True
        while True:
            try:
                head = await self._read_head(reader, first)
            except (asyncio.LimitOverrunError, ValueError):
                await self._respond(
                    writer, "GET", 431, [], b"request head too large\n", keep=False
                )
                return
            if head is None:
                return
            first = False
            parsed = _parse_head(head)
            if parsed is None:
                await self._respond(writer, "GET", 400, [], b"malformed request\n", keep=False)
                return
            method, target, version, headers = parsed
            if version not in ("HTTP/1.0", "HTTP/1.1"):
                await self._respond(
                    writer, "GET", 505, [], b"HTTP/1.0 or HTTP/1.1 only\n", keep=False
                )
                return
            conn = headers.get("connection", "").lower()
            keep = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
            if headers.get("transfer-encoding") or headers.get(
                "content-length", "0"
            ).strip() not in ("", "0"):
                await self._respond(
                    writer, method, 413, [], b"request bodies are not accepted\n", keep=False
                )
                return
            if method not in ("GET", "HEAD"):
                await self._respond(
                    writer, method, 405, [("Allow", "GET, HEAD")], b"GET or HEAD only\n", keep=False
                )
                return
            if self.auth is not None and not self.auth(headers.get("authorization")):
                self.stats["unauthorized"] += 1
                await self._respond(
                    writer,
                    method,
                    401,
                    [("WWW-Authenticate", 'Basic realm="degrade"')],
                    b"Unauthorized\n",
                    keep=keep,
                )
                if not keep:
                    return
                continue
            path, _, query = target.partition("?")
            if writer in self._active:
                self._active[writer] = None  # being served: never evicted
            t0 = time.perf_counter()
            try:
                status, hdrs, body = await loop.run_in_executor(
                    self._pool, self.handler, method, path, query, headers
                )
            except Exception:  # noqa: BLE001
                log.exception("HTTP handler failed for %s", path)
                status, hdrs, body = 500, [("Content-Type", "text/plain")], b"internal error\n"
            self.stats["handler_seconds_x1e6"] += int((time.perf_counter() - t0) * 1e6)
            if not await self._respond(writer, method, status, hdrs, body, keep=keep) or not keep:
                return
            if writer in self._active:
                self._active[writer] = loop.time()

    async def _respond(
        self,
        writer,
        method: str,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        keep: bool,
    ) -> bool:
        self.stats[f"responses_{status}"] += 1
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        names = {k.lower() for k, _ in headers}
        if "content-type" not in names:
            headers = [*headers, ("Content-Type", "text/plain; charset=utf-8")]
        for k, v in [
            *headers,
            *self.extra_headers.items(),
            ("Content-Length", str(len(body))),
            ("Connection", "keep-alive" if keep else "close"),
        ]:
            lines.append(f"{k}: {v}")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        writer.write(data if method == "HEAD" else data + body)
        try:
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except asyncio.TimeoutError:
            self.stats["write_timeouts"] += 1
            return False
        return True

    # ------------------------------------------------------------ control
    def call_in_loop(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the event-loop thread (tests use it to stall the loop)."""
        self._loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        """Stop accepting, drop open connections, stop the thread and the worker pool."""
        if self._loop.is_closed():
            return

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._active):
                w.transport.abort()
            if self._server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), 2)

        if self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(stop(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for fn in self.on_close:
            fn()
        self.on_close = []


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]] | None:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[1].startswith("/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


def basic_auth_checker(users: dict[str, str]) -> Callable[[str | None], bool]:
    """Check ``Authorization: Basic`` against bcrypt hashes, caching successes as exporter-toolkit does."""
    import hashlib
    import hmac

    from degrade._optional import import_optional

    bcrypt = import_optional("bcrypt", "agent")
    ok_cache: set[bytes] = set()
    lock = threading.Lock()
    # a fixed hash to spend the same time on unknown users as on known ones
    dummy = bcrypt.hashpw(b"degrade", bcrypt.gensalt(rounds=4))

    def check(header: str | None) -> bool:
        if not header or not header[:6].lower() == "basic ":
            return False
        try:
            user, sep, password = (
                base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
            )
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep:
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with lock:
            if any(hmac.compare_digest(key, k) for k in ok_cache):
                return True
        hashed = users.get(user)
        if hashed is None:
            bcrypt.checkpw(password.encode(), dummy)
            return False
        good = bcrypt.checkpw(password.encode(), hashed.encode())
        if good:
            with lock:
                ok_cache.add(key)
        return good

    return check
