"""A handler served by fanlog.isolated in tests/test_isolated.py (imported by the child process)."""

from __future__ import annotations

import os
import time
from typing import Any


class Recorder:
    """Answers requests, remembers them, and says where and as whom it runs."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def echo(self, payload: Any) -> dict[str, Any]:
        self.seen.append(payload)
        return {
            "payload": payload,
            "cwd": os.getcwd(),
            "pid": os.getpid(),
            "env": os.environ.get("ISOLATED_TEST_VALUE"),
        }

    def fail(self, payload: Any) -> None:
        raise ValueError(f"refused {payload!r}")

    def sleep(self, seconds: float) -> str:
        print(f"going to sleep for {seconds} s", flush=True)
        time.sleep(seconds)
        return "slept"

    def spin(self, cpu_seconds: float) -> float:
        """Compute until this process has used `cpu_seconds` more CPU time."""
        start = time.process_time()
        while time.process_time() - start < cpu_seconds:
            sum(range(10_000))
        return time.process_time() - start

    def end(self, payload: Any) -> int:
        return len(self.seen)

    def parent_gone(self) -> None:
        with open("parent-gone.txt", "w", encoding="utf-8") as handle:
            handle.write(repr(self.seen))

    def _private(self, payload: Any) -> str:
        return "reached"
