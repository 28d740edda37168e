"""What secret redaction costs the caller of `log()`: each case with redaction on and off.

Run: .venv/bin/python bench/bench_redaction.py [--quick]
Redaction runs in the kind normalizers of param, text, dict, tag and dataset, and on
keyword options; metrics carry no text and never reach it (their row is the control).
"off" is ``fanlog.secrets.set_enabled(False)`` in the same process, so both columns share
the machine's state. Prints a markdown table.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

TEXT_1KB = ("epoch 3 done: loss=0.1234, accuracy=0.98, lr=3e-4, data=/scratch/imagenet/train\n" * 13)[:1024]
TEXT_1MB = TEXT_1KB * 1024
CONFIG = {
    "lr": 3e-4,
    "batch_size": 256,
    "optimizer": {"name": "adamw", "betas": [0.9, 0.999]},
    "data": {"path": "/scratch/imagenet", "workers": 8},
    "model": "vit_b_16",
    "epochs": 90,
    "wandb": {"project": "p", "api_key": "0123456789abcdef0123456789abcdef01234567"},
}


def per_call_us(run: Callable[[int], None], calls: int, repeats: int) -> float:
    """Median over `repeats` batches of the per-call time of `run(calls)`, in µs."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        run(calls)
        samples.append((time.perf_counter_ns() - start) / calls / 1000)
    return statistics.median(samples)


def cases() -> list[tuple[str, Callable[[Any, int], None], int]]:
    """(name, log `n` times with this logger, calls per batch)."""
    return [
        ("metric (control: never redacted)", lambda lg, n: [lg.log(0.5, "loss") for _ in range(n)], 1000),
        (
            "param, short str",
            lambda lg, n: [lg.log("adamw", "optimizer", kind="param") for _ in range(n)],
            1000,
        ),
        (
            "param, URL with a password",
            lambda lg, n: [lg.log("postgres://u:pw@db/x", "database", kind="param") for _ in range(n)],
            1000,
        ),
        (
            "param, secret-looking key",
            lambda lg, n: [lg.log("hunter2", "db_password", kind="param") for _ in range(n)],
            1000,
        ),
        ("tag", lambda lg, n: [lg.log("baseline", "variant", kind="tag") for _ in range(n)], 1000),
        (
            "metric with 2 keyword options",
            lambda lg, n: [
                lg.log(0.5, "loss", kind="metric", prog_bar=True, note="warmup") for _ in range(n)
            ],
            1000,
        ),
        ("dict, 7-key config", lambda lg, n: [lg.log(CONFIG, "config", kind="dict") for _ in range(n)], 200),
        ("text, 1 KB", lambda lg, n: [lg.log(TEXT_1KB, "notes", kind="text") for _ in range(n)], 200),
        ("text, 1 MB", lambda lg, n: [lg.log(TEXT_1MB, "log", kind="text") for _ in range(n)], 2),
    ]


def main() -> None:
    from fanlog import JournalLogger, secrets

    repeats = 5 if "--quick" in sys.argv else 30
    rows = []
    with tempfile.TemporaryDirectory() as savedir:
        logger = JournalLogger(savedir=savedir, log_freq="batch", max_pending=10_000_000)
        logger.create_logger_context(rank=0)
        try:
            for name, run, calls in cases():
                timings = []
                for enabled in (True, False):
                    secrets.set_enabled(enabled)
                    timings.append(per_call_us(lambda n, run=run: run(logger, n), calls, repeats))
                    logger.flush()
                on, off = timings
                rows.append((name, f"{on:.2f}", f"{off:.2f}", f"{on - off:+.2f}"))
        finally:
            secrets.set_enabled(None)
            logger.destroy_logger_context()
    print("| `log()` call | redaction on (µs) | off (µs) | difference (µs) |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
