"""A fault-injecting HTTP proxy for S3 tests, on 127.0.0.1.

Forwards every request unchanged (Host header included, so SigV4 signatures
stay valid) to a real S3 server, except that a deterministic share of requests
is answered with ``503 SlowDown`` without forwarding, and another share has
its connection dropped after forwarding (the server did the work, the client
never hears back: the case that makes retries dangerous). Bounded and local:
it only ever talks to the upstream given, on loopback.

It also serves as a *forward* proxy (``HTTP_PROXY``): a request whose target is an
absolute URL of the upstream is forwarded the same way; any other host is refused.
``stats.methods`` counts what it forwarded by method.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")


@dataclass
class FaultStats:
    forwarded: int = 0
    slowdowns: int = 0
    dropped: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class FaultProxy:
    endpoint_url: str
    stats: FaultStats


@contextmanager
def fault_proxy(upstream: str, *, slowdown: float = 0.2, drop: float = 0.05,
                seed: int = 1, methods: tuple[str, ...] = ("POST", "DELETE", "PUT")
                ) -> Iterator[FaultProxy]:
    """Start the proxy; faults apply only to ``methods`` (writes), reads pass through."""
    up = urlsplit(upstream)
    assert up.hostname in ("127.0.0.1", "localhost"), "the proxy only forwards to loopback"
    rng = random.Random(seed)  # noqa: S311 - fault schedule, not crypto
    stats = FaultStats()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _handle(self) -> None:
            path = self.path
            if path.startswith("http://"):  # forward-proxy form: only to the upstream
                target = urlsplit(path)
                if target.netloc != up.netloc:
                    self.send_error(403, "this proxy only forwards to its upstream")
                    return
                path = target.path + (f"?{target.query}" if target.query else "")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with stats.lock:
                roll = rng.random()
            faulty = self.command in methods
            if faulty and roll < slowdown:
                with stats.lock:
                    stats.slowdowns += 1
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(SLOWDOWN)))
                self.end_headers()
                self.wfile.write(SLOWDOWN)
                return
            conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=60)
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("connection", "proxy-connection")}
            conn.request(self.command, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            with stats.lock:
                stats.forwarded += 1
                stats.methods[self.command] += 1
            if faulty and roll < slowdown + drop:
                with stats.lock:
                    stats.dropped += 1
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield FaultProxy(f"http://127.0.0.1:{server.server_address[1]}", stats)
    finally:
        server.shutdown()
        server.server_close()
