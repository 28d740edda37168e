"""A real `mlflow server` on 127.0.0.1, started and stopped by PID, for tests and benchmarks.

The server gets an SQLite backend store and a proxied artifact store under a work
directory, so a test reads back exactly what a user's server would have stored.
`restart()` starts it again on the same store and port: that is how outage tests
take the server away and bring it back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.artifacts_destination),
            "--serve-artifacts",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip

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
