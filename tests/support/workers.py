"""Functions run in spawned processes by the tests (spawn imports them by module name)."""

from __future__ import annotations

from typing import Any


def log_with(logger: Any, key: str, count: int) -> str:
    """Start a logger handed over from another process, log `count` values, end the run."""
    logger.create_logger_context()
    for i in range(count):
        logger.log(float(i), key, step=i)
    path = logger.journal_path
    logger.destroy_logger_context()
    return str(path)


def use_unstarted(logger: Any) -> str:
    """Log without starting: a logger that arrived unstarted says so."""
    try:
        logger.log(1.0, "x")
    except Exception as exc:  # noqa: BLE001 - the message is what the test checks
        return f"{type(exc).__name__}: {exc}"
    return "no error"
