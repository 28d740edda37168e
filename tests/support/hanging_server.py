"""Trackers that misbehave for real, on 127.0.0.1: one that never answers, and a proxy.

:class:`HangingServer` accepts TCP connections and never answers, which is what a
tracker behind a dead load balancer, or a server stuck on a lock, looks like to a
client. :class:`TrackerProxy` is a real HTTP hop in front of a real `mlflow server`
that can hold requests until released, answer slowly, or refuse the requests whose
body contains a given text, the way a server with stricter validation (an older
MLflow, a proxy with a body filter) would; everything else is forwarded unchanged.
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import threading
import time
import urllib.parse
from typing import Any


class HangingServer:
    """Listens on 127.0.0.1, accepts every connection, reads what arrives, never answers."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self.connections: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections.append(connection)
            threading.Thread(target=self._swallow, args=(connection,), daemon=True).start()

    @staticmethod
    def _swallow(connection: socket.socket) -> None:
        try:
            while connection.recv(65536):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._closed.set()
        self._socket.close()
        for connection in self.connections:
            connection.close()


class TrackerProxy:
    """An HTTP proxy to `target`: `hold()` makes requests wait for `release()`, `delay`
    delays every answer, and a request whose body contains one of `refuse` gets
    ``400 INVALID_PARAMETER_VALUE`` instead of reaching the server."""

    def __init__(
        self, target: str, delay: float = 0.0, refuse: tuple[str, ...] = (), refuse_status: int = 400
    ) -> None:
        self.target = urllib.parse.urlsplit(target)
        self.delay = delay
        self.refuse = refuse
        self.refuse_status = refuse_status
        self.echo_headers = False
        """Quote the request's headers in the answer to a refused request."""
        self.drip: tuple[str, float] | None = None
        """(path part, seconds): requests whose path contains the part get a 200 whose body
        comes one byte every so many seconds (a server or link that crawls)."""
        self.closed = threading.Event()
        self.refuse_every: tuple[str, int, str, bytes] | None = None
        """(path part, status, content type, body): every request whose path contains the part
        gets this answer (a proxy, a WAF or an old server that refuses a whole endpoint);
        ``{n}`` in the body becomes a number that changes with each request."""
        self.refused: list[str] = []
        self.forwarded = 0
        self.in_flight = 0
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy.drip is not None and proxy.drip[0] in self.path:
                    self._drip(proxy.drip[1])
                    return
                with proxy._lock:
                    proxy.in_flight += 1
                try:
                    proxy._open.wait()
                    if proxy.delay:
                        time.sleep(proxy.delay)
                    status, headers, data = proxy._answer(self.command, self.path, self.headers, body)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _drip(self, every: float) -> None:
                """Answer 200 with a 1000-byte body, one byte every `every` seconds."""
                try:
                    self.wfile.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                    )
                    self.wfile.flush()
                    for _ in range(1000):
                        if proxy.closed.wait(every):
                            return
                        self.wfile.write(b" ")
                        self.wfile.flush()
                except OSError:  # the client gave up
                    pass
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Wait until no request is in flight (a client that gave up leaves its request
        running here, and it still reaches the server)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.1)

    def hold(self) -> None:
        """Requests wait from now on, until `release()`."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def _answer(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, list[Any], bytes]:
        if self.refuse_every is not None and self.refuse_every[0] in path:
            _, status, content_type, answer = self.refuse_every
            self.refused.append(path)
            answer = answer.replace(b"{n}", str(len(self.refused) * 7919).encode())
            return status, [("Content-Type", content_type)], answer
        text = body.decode("utf-8", "replace")
        marker = next((m for m in self.refuse if m in text), None)
        if marker is not None:
            self.refused.append(marker)
            code = "INVALID_PARAMETER_VALUE" if self.refuse_status < 500 else "INTERNAL_ERROR"
            message = f"this server refuses {marker!r}"
            if self.echo_headers:  # as some servers and proxies do, credentials included
                message += f"; request headers: {dict(headers.items())}"
            payload = json.dumps({"error_code": code, "message": message}).encode()
            return self.refuse_status, [("Content-Type", "application/json")], payload
        self.forwarded += 1
        connection = http.client.HTTPConnection(self.target.hostname, self.target.port, timeout=120)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def close(self) -> None:
        self.closed.set()
        self._open.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
