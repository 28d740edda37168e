"""Tracker outage benchmark: what a dead MLflow server costs the training loop.

1. Per-step overhead, in one run: the same logger logs `--metrics` metrics per step to a
   real `mlflow server` on 127.0.0.1 while it is up, then while it is stopped; the p50/p99
   time of one step's `log()` calls is reported for both phases.
2. Memory: `--records` records (default 1M) pile up for a tracker that is never reachable;
   the RSS growth of the process is reported (the budget is 100 MB).

Usage: .venv/bin/python bench/bench_outage.py [--steps 2000] [--metrics 4] [--records 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from fanlog.backends.mlflow import MLflowLogger  # noqa: E402
from support.mlflow_server import free_port, start_mlflow_server  # noqa: E402

RSS_BUDGET_MB = 100.0


def rss_mb() -> float:
    """Resident set size of this process now (not the peak)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def steps(logger: MLflowLogger, first: int, count: int, metrics: int, work: float) -> list[float]:
    """Per-step seconds spent in log() for `count` steps of `metrics` metrics each."""
    names = [f"m{i}" for i in range(metrics)]
    spent = []
    for step in range(first, first + count):
        start = time.perf_counter()
        for name in names:
            logger.log(0.5, name, step=step, batch_idx=step)
        spent.append(time.perf_counter() - start)
        time.sleep(work)  # the training step itself
    return spent


def summary(values: list[float]) -> dict[str, float]:
    array = np.asarray(values) * 1e6
    return {
        "p50_us": round(float(np.percentile(array, 50)), 2),
        "p99_us": round(float(np.percentile(array, 99)), 2),
        "max_us": round(float(array.max()), 2),
    }


def overhead(workdir: Path, count: int, metrics: int, work: float) -> dict[str, Any]:
    server = start_mlflow_server(workdir / "server")
    try:
        logger = MLflowLogger(
            savedir=str(workdir / "sd-overhead"),
            tracking_uri=server.url,
            experiment_name="bench-outage",
            log_freq="batch",
        )
        logger.create_logger_context(rank=0)
        steps(logger, 0, 50, metrics, work)  # warm-up: imports, first requests
        logger.flush(timeout=120)
        up = steps(logger, 50, count, metrics, work)
        logger.flush(timeout=120)
        server.stop()
        down = steps(logger, 50 + count, count, metrics, work)
        errors = len(logger.delivery_errors().get("mlflow", []))
        logger.settings.close_timeout = 2.0
        logger.destroy_logger_context()
    finally:
        server.stop()
    result = {
        "up": summary(up),
        "down": summary(down),
        "steps_per_phase": count,
        "metrics_per_step": metrics,
        "delivery_errors_while_down": errors,
    }
    result["p99_ratio_down_over_up"] = round(result["down"]["p99_us"] / result["up"]["p99_us"], 2)
    return result


def memory(workdir: Path, records: int) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every delivery attempt fails
    logger = MLflowLogger(
        savedir=str(workdir / "sd-memory"),
        tracking_uri=dead,
        experiment_name="bench-memory",
        log_freq="batch",
        close_timeout=1.0,
    )
    logger.create_logger_context(rank=0)
    logger.log(0.0, "warmup", step=0)
    logger.flush(timeout=2)
    before = rss_mb()
    peak = before
    started = time.perf_counter()
    for step in range(records):
        logger.log(0.5, "loss", step=step)
        if step % 100_000 == 0:
            peak = max(peak, rss_mb())
    logged_in = time.perf_counter() - started
    pipeline = logger._pipeline
    assert pipeline is not None
    while pipeline.written < pipeline.submitted:  # everything into the journal
        time.sleep(0.05)
        peak = max(peak, rss_mb())
    after = rss_mb()
    undelivered = pipeline.committed - min(e.delivered for e in pipeline.slots)
    dropped = logger.dropped
    logger.destroy_logger_context()
    return {
        "records": records,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "rss_growth_mb": round(after - before, 1),
        "rss_peak_growth_mb": round(peak - before, 1),
        "budget_mb": RSS_BUDGET_MB,
        "undelivered_in_journal": undelivered,
        "dropped": dropped,
        "log_seconds": round(logged_in, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per phase (up, down)")
    parser.add_argument("--metrics", type=int, default=4, help="metrics logged per step")
    parser.add_argument("--work", type=float, default=0.001, help="seconds of 'training' per step")
    parser.add_argument("--records", type=int, default=1_000_000, help="records for the memory run")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fanlog-bench-outage-") as tmp:
        workdir = Path(tmp)
        result: dict[str, Any] = {}
        if not args.skip_overhead:
            result["overhead"] = overhead(workdir, args.steps, args.metrics, args.work)
        result["memory"] = memory(workdir, args.records)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if result["memory"]["rss_peak_growth_mb"] > RSS_BUDGET_MB:
        sys.exit(f"RSS grew {result['memory']['rss_peak_growth_mb']} MB > {RSS_BUDGET_MB} MB")


if __name__ == "__main__":
    main()
