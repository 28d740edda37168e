"""Shared fixtures. Real servers only: a session-wide `mlflow server` on 127.0.0.1.

`tests/support/mlflow_server.py` holds the helpers; other tests may start more
servers with :func:`support.mlflow_server.start_mlflow_server`.

Tests that start a server or a process are marked ``slow`` (automatically when they use
a server fixture). ``pytest --fast`` (``make test-fast``) runs the others only, and fails
any of them that starts a process or listens on a socket, naming the test to mark.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Set before any test imports MLflow: no telemetry to the internet, and MLflow's own HTTP
# retries off (fanlog's dispatcher retries), so outage tests do not hang for minutes.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

from support.mlflow_server import MlflowServer, free_port, start_mlflow_server  # noqa: E402

__all__ = ["free_port", "start_mlflow_server"]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real `mlflow server` (SQLite store, proxied artifacts) for the whole session."""
    pytest.importorskip("mlflow")
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., MlflowServer]]:
    """Start extra servers (own store, own port) for one test; all are stopped after it."""
    pytest.importorskip("mlflow")
    started: list[MlflowServer] = []

    def start(name: str = "server", port: int | None = None) -> MlflowServer:
        server = start_mlflow_server(tmp_path / name, port=port)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(autouse=True)
def _work_in_a_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defaults such as ./mllogs or ./mlruns land in the test's temp dir, never in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _forget_mlflow_globals() -> Iterator[None]:
    """A test that sets MLflow's process-wide tracking URI must not decide where later tests write."""
    yield
    import sys

    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        while mlflow.active_run() is not None:
            mlflow.end_run()
        # mlflow.set_experiment() (itwinai's trainer calls it; tests that mimic it too) sets a
        # process-wide experiment that the next test's start_run() would look for.
        mlflow.tracking.fluent._active_experiment_id = None
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


# ----------------------------------------------------------------------------- --fast
SERVER_FIXTURES = {"mlflow_server", "start_server"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="run only the tests not marked slow, and fail one that starts a process or a server",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if config.getoption("--fast"):
        slow = [item for item in items if item.get_closest_marker("slow") is not None]
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


@pytest.fixture(autouse=True)
def _fast_tests_start_nothing(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Under --fast, starting a process or listening on a socket raises and fails the test.

    The failure is also reported after the test, in case the code under test swallowed the
    error (a backend that fails to open is retried, not raised)."""
    if not request.config.getoption("--fast"):
        yield
        return
    started: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            started.append(what)
            raise RuntimeError(f"started {what} under --fast: mark the test slow")

        return refused

    import _posixsubprocess  # what multiprocessing's spawn and forkserver call

    monkeypatch.setattr(subprocess, "_fork_exec", refuse("a subprocess"))  # what Popen calls
    monkeypatch.setattr(_posixsubprocess, "fork_exec", refuse("a process (multiprocessing)"))
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp"):
        monkeypatch.setattr(os, name, refuse(f"a process (os.{name})"))
    monkeypatch.setattr(socket.socket, "listen", refuse("a server (socket.listen)"))
    yield
    if started:
        pytest.fail(
            f"{request.node.nodeid} started {', '.join(sorted(set(started)))}: mark it slow", pytrace=False
        )


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """W&B with no credentials or server settings of the caller's, quiet, offline by default."""
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    yield
