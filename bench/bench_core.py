"""Core benchmarks (issue 2): caller-side cost of log(), flush to durable, import time, memory.

Run: .venv/bin/python bench/bench_core.py
Every figure is taken in this one run, next to a baseline measured the same way, because
the machines are shared and noisy. Prints a markdown table.
"""

from __future__ import annotations

import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def per_call_us(run: Callable[[int], None], calls: int = 1000, repeats: int = 200) -> float:
    """Median over `repeats` batches of the per-call time of `run(calls)`, in µs."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        run(calls)
        samples.append((time.perf_counter_ns() - start) / calls / 1000)
    return statistics.median(samples)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def three_backend_collection(savedir: str) -> Any:
    from core_backends import NullLogger
    from fanlog import ConsoleLogger, JournalLogger, LoggersCollection

    return LoggersCollection(
        [
            JournalLogger(savedir=savedir, log_freq="batch"),
            ConsoleLogger(savedir=savedir, log_freq="batch", stream=open(os.devnull, "w"), live=False),
            NullLogger(savedir=savedir, log_freq="batch"),
        ]
    )


def bench_log_cost(savedir: str) -> list[tuple[str, float, str]]:
    queue: collections.deque = collections.deque()

    def deque_append(n: int) -> None:
        append = queue.append
        for i in range(n):
            append(("metric", "train/loss", 0.5, i, None))
        queue.clear()

    logger = three_backend_collection(savedir)
    logger.create_logger_context()
    log = logger.log

    def accepted(n: int) -> None:
        for i in range(n):
            log(0.5, "train/loss", step=i)

    from fanlog import JournalLogger

    gated = JournalLogger(savedir=savedir, log_freq=1000, job_id="gated")
    gated.create_logger_context()
    gated_log = gated.log

    def gated_out(n: int) -> None:
        for _ in range(n):
            gated_log(0.5, "train/loss", batch_idx=7)

    baseline = per_call_us(deque_append)
    accepted_us = per_call_us(accepted, repeats=100)
    gated_us = per_call_us(gated_out)
    logger.destroy_logger_context()
    gated.destroy_logger_context()
    return [
        ("`deque.append` of a tuple (baseline)", baseline, "—"),
        ("accepted scalar `log()`, collection of 3 backends", accepted_us, "≤ 2 µs"),
        ("gated-out `log()` (log_freq=1000)", gated_us, "≤ 0.3 µs"),
    ]


def bench_flush(savedir: str, count: int = 100_000) -> tuple[float, float]:
    """Seconds to log `count` records, then seconds from flush() to durable."""
    from fanlog import JournalLogger

    logger = JournalLogger(savedir=savedir, log_freq="batch", job_id="flush")
    logger.create_logger_context()
    start = time.perf_counter()
    for i in range(count):
        logger.log(float(i), "x", step=i)
    logged = time.perf_counter() - start
    start = time.perf_counter()
    assert logger.flush()
    durable = time.perf_counter() - start
    logger.destroy_logger_context()
    return logged, durable


IMPORT_PROBE = (
    "import time, sys; t = time.perf_counter(); import fanlog; d = time.perf_counter() - t; "
    "rss = [l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]; "
    "heavy = [m for m in ('torch', 'mlflow', 'wandb', 'tensorboard', 'azureml', 'yprov4ml', "
    "'matplotlib', 'lightning') if m in sys.modules]; print(d * 1000, int(rss) / 1024, heavy)"
)


def bench_import(runs: int = 7) -> tuple[float, float, list[str], float]:
    times, rss = [], []
    heavy: list[str] = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True
        ).stdout.split(maxsplit=2)
        times.append(float(out[0]))
        rss.append(float(out[1]))
        heavy = eval(out[2])  # noqa: S307 - our own probe's list literal
    bare = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE.replace("import fanlog;", "")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(maxsplit=2)
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fanlog"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in trace.splitlines()[1:]}
    heavy += [m for m in ("torch", "mlflow", "wandb", "tensorboard") if m in modules]
    return (
        statistics.median(times),
        statistics.median(rss) - float(bare[1]),
        sorted(set(heavy)),
        statistics.median(rss),
    )


def bench_backlog_memory(savedir: str, count: int = 1_000_000) -> tuple[float, int, int]:
    """RSS growth while `count` records are logged to a backend that accepts nothing."""
    from core_backends import RecordingBackend, RecordingLogger

    sleeper = RecordingLogger(
        savedir=savedir,
        backend=RecordingBackend(delay=3600, always_fail=True),
        job_id="backlog",
        close_timeout=1.0,
        down_after=0.1,
    )
    sleeper.create_logger_context()
    before = rss_mb()
    for i in range(count):
        sleeper.log(0.5, "x", step=i)
    sleeper.flush(timeout=120)
    growth = rss_mb() - before
    journaled = sleeper._pipeline.committed if sleeper._pipeline else 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sleeper.destroy_logger_context()
    return growth, journaled, count


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory() as savedir:
        rows = [(name, f"{us:.2f} µs", target) for name, us, target in bench_log_cost(savedir)]
        logged, durable = bench_flush(savedir, 20_000 if quick else 100_000)
        count = 20_000 if quick else 100_000
        rows.append((f"log {count:,} scalars (caller total)", f"{logged * 1000:.0f} ms", "—"))
        rows.append((f"`flush()` → durable, {count:,} records", f"{durable * 1000:.0f} ms", "—"))
        ms, rss_delta, heavy, rss = bench_import()
        rows.append(("`import fanlog` (median of 7 processes)", f"{ms:.1f} ms", "≤ 50 ms"))
        rows.append(("RSS added by `import fanlog`", f"{rss_delta:.1f} MB (process {rss:.0f} MB)", "—"))
        rows.append(("heavy modules imported by `import fanlog`", ", ".join(heavy) or "none", "none"))
        growth, journaled, count = bench_backlog_memory(savedir, 100_000 if quick else 1_000_000)
        rows.append(
            (
                f"RSS growth, {count:,} records to a dead backend ({journaled:,} on disk)",
                f"{growth:.1f} MB",
                "≤ 100 MB",
            )
        )
    print(table(rows, ["measure", "result", "target"]))


if __name__ == "__main__":
    main()
