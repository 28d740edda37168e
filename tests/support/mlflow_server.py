"""A real `mlflow server` on 127.0.0.1, started and stopped by PID, for tests and benchmarks.

The server gets an SQLite backend store and a proxied artifact store under a work
directory, so a test reads back exactly what a user's server would have stored.
`restart()` starts it again on the same store and port: that is how outage tests
take the server away and bring it back.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# MLflow's telemetry would talk to the internet; tests only ever talk to 127.0.0.1. The job
# runner (GenAI jobs: a huey consumer and workers) is not needed and doubles start-up time.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mlflow_executable() -> list[str]:
    """The `mlflow` CLI of the running interpreter (the venv's), not one found on PATH."""
    candidate = Path(sys.executable).with_name("mlflow")
    if candidate.exists():
        return [str(candidate)]
    return [sys.executable, "-m", "mlflow"]


@dataclass
class MlflowServer:
    """One `mlflow server` process; `url` is what a client uses as tracking URI."""

    workdir: Path
    port: int
    backend_store_uri: str
    artifacts_destination: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self) -> list[str]:
        return [
            *_mlflow_executable(),
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            str(self.artifacts_destination),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]

    def start(self, timeout: float = 120.0) -> MlflowServer:
        """Start the process in its own session and wait until `/health` answers."""
        if self.process is not None and self.process.poll() is None:
            return self
        env = {**os.environ, **QUIET_ENV}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.process.returncode}; log:\n{self.log_tail()}"
                )
            if self.healthy():
                return
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"mlflow server not healthy after {timeout}s; log:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server's whole process group (uvicorn workers included), by PID.

        SIGTERM first; uvicorn waits for idle keep-alive connections of clients, so after
        `timeout` seconds the group gets SIGKILL (which a crashing server would do too).
        """
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)
        self._wait_port_free(timeout)

    def _wait_port_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)

    def restart(self, timeout: float = 120.0) -> MlflowServer:
        """Stop (if running) and start again on the same store, artifacts and port."""
        self.stop()
        return self.start(timeout)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start_mlflow_server(
    workdir: str | os.PathLike[str],
    port: int | None = None,
    backend_store_uri: str | None = None,
    timeout: float = 120.0,
) -> MlflowServer:
    """Start a real `mlflow server` on 127.0.0.1 with its store under `workdir`.

    `backend_store_uri` defaults to ``sqlite:///<workdir>/mlflow.db``; pass the same
    store and port again to bring a stopped server back.
    """
    root = Path(workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    artifacts = root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    server = MlflowServer(
        workdir=root,
        port=port if port is not None else free_port(),
        backend_store_uri=backend_store_uri or f"sqlite:///{root / 'mlflow.db'}",
        artifacts_destination=artifacts,
        log_path=root / "server.log",
    )
    return server.start(timeout)


class FaultProxy:
    """A real HTTP hop in front of a server that answers some requests with an error itself.

    Requests whose path contains `marker` get the statuses in `failures` (one each, in
    order) instead of reaching the server; everything else is forwarded unchanged. It shows
    how a client copes with a 5xx or a 429 from a real server without faking the server.
    """

    def __init__(self, target: str, failures: list[int], marker: str = "log-batch") -> None:
        self.target = urllib.parse.urlsplit(target)
        self.failures = collections.deque(failures)
        self.injected: list[int] = []
        self.forwarded = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # quiet: the test reads `injected` and `forwarded`

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                status = proxy._next_failure(self.path, marker)
                if status is not None:
                    payload = json.dumps(
                        {"error_code": "TEMPORARILY_UNAVAILABLE", "message": f"injected {status}"}
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _next_failure(self, path: str, marker: str) -> int | None:
        with self._lock:
            if marker in path and self.failures:
                status = self.failures.popleft()
                self.injected.append(status)
                return status
            self.forwarded += 1
            return None

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.target.hostname, self.target.port, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
