"""A small job's one-off costs (issue 15): from process start to the first record visible in
MLflow, and from the end of the loop to a closed run.

Run: .venv/bin/python bench/bench_small_job.py [--quick] [--repeat 3] [--out results.json]

Each case is a fresh Python process writing to MLflow's default local store (an SQLite file
under the save dir, which the first delivery creates). The parent notes the time before it
starts the process and polls that file until a metric row appears (read with plain SQLite,
so the reader costs the job nothing); the child prints when its loop ended and when the run
was closed. Cases:

    demo           what `make demo` runs: journal, console, MLflow and TensorBoard, 5 epochs
                   of 50 batches, metrics every 10th batch, a histogram and the model
    fanlog-10      a 10-line script: MLflowLogger, 100 metrics in `start_logging()`
    fanlog-model   the same, then a kind="model" record (requirements known, no inference)
    fanlog-infer   the same with infer_pip_requirements=True (not in --quick)
    mlflow-10      the same 10 lines with MLflow's own API (mlflow.start_run, log_metric)
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

MARK = "@@fanlog-bench "
EVENT = f"import time; say = lambda name: print({MARK!r}, name, time.time(), flush=True)\n"

CASES = {
    "demo": """
        import warnings
        from fanlog.backends.console import ConsoleLogger
        from fanlog.backends.journal import JournalLogger
        from fanlog.demo import optional_trackers, train
        from fanlog.logger import LoggersCollection
        loggers = [JournalLogger(savedir=SAVEDIR, log_freq=10),
                   ConsoleLogger(savedir=SAVEDIR, log_freq=10, total_epochs=5, interval=1.0),
                   *optional_trackers(SAVEDIR, 10)[0]]
        logger = LoggersCollection(loggers, savedir=SAVEDIR, run_name="fanlog-demo")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            logger.create_logger_context()
            say("started")
            train(logger, 5, 50)
            say("loop_end")
            logger.destroy_logger_context()
        say("closed")
    """,
    "fanlog-10": """
        from fanlog import MLflowLogger
        logger = MLflowLogger(savedir=SAVEDIR, experiment_name="small")
        with logger.start_logging():
            say("started")
            for step in range(100):
                logger.log(1.0 / (step + 1), "loss", step=step)
            say("loop_end")
        say("closed")
    """,
    "fanlog-model": """
        import torch
        from fanlog import MLflowLogger
        logger = MLflowLogger(savedir=SAVEDIR, experiment_name="small")
        with logger.start_logging():
            say("started")
            for step in range(100):
                logger.log(1.0 / (step + 1), "loss", step=step)
            logger.log(torch.nn.Linear(8, 1), "model", kind="model")
            say("loop_end")
        say("closed")
    """,
    "fanlog-infer": """
        import torch
        from fanlog import MLflowLogger
        logger = MLflowLogger(savedir=SAVEDIR, experiment_name="small",
                              infer_pip_requirements=True, down_after=300)
        with logger.start_logging():
            say("started")
            for step in range(100):
                logger.log(1.0 / (step + 1), "loss", step=step)
            logger.log(torch.nn.Linear(8, 1), "model", kind="model")
            say("loop_end")
        say("closed")
    """,
    "mlflow-10": """
        import os, mlflow
        mlflow.set_tracking_uri("sqlite:///" + os.path.join(SAVEDIR, "mlflow.db"))
        mlflow.set_experiment("small")
        with mlflow.start_run():
            say("started")
            for step in range(100):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            say("loop_end")
        say("closed")
    """,
}


def metric_rows(db: Path) -> int:
    """Metric rows in MLflow's SQLite store; 0 while the file or its tables do not exist."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def run_case(name: str, root: str) -> dict[str, Any]:
    savedir = tempfile.mkdtemp(dir=root, prefix=f"{name}-")
    code = EVENT + f"SAVEDIR = {savedir!r}\n" + textwrap.dedent(CASES[name])
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    db = Path(savedir) / "mlflow.db"
    begin = time.time()
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    visible = None
    while child.poll() is None and visible is None:
        if metric_rows(db):
            visible = time.time()
            break
        time.sleep(0.01)
    out, _ = child.communicate(timeout=600)
    ended = time.time()
    if visible is None and metric_rows(db):
        visible = ended  # seen only after the process ended
    events = {line.split()[1]: float(line.split()[2]) for line in out.splitlines() if line.startswith(MARK)}
    if child.returncode != 0 or "closed" not in events:
        raise RuntimeError(f"{name} failed (exit {child.returncode}): {out[-2000:]}")
    return {
        "started_s": events["started"] - begin,
        "first_visible_s": (visible - begin) if visible else float("nan"),
        "loop_end_to_closed_s": events["closed"] - events["loop_end"],
        "process_s": ended - begin,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per case, no inference case")
    parser.add_argument("--repeat", type=int, help="runs per case, the median kept (default 3)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    names = [n for n in CASES if not (args.quick and n == "fanlog-infer")]
    results: dict[str, Any] = {"load_before": os.getloadavg(), "repeat": repeat, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="fanlog-small-") as root:
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for _ in range(repeat):  # interleaved
            for name in names:
                runs[name].append(run_case(name, root))
        for name in names:
            results["cases"][name] = {
                k: round(statistics.median(r[k] for r in runs[name]), 2) for k in runs[name][0]
            }
    results["load_after"] = os.getloadavg()
    print(
        "| case | process start → logger started (s) | → first record visible in MLflow (s) "
        "| end of loop → closed run (s) | whole process (s) |"
    )
    print("|---|---|---|---|---|")
    for name, figures in results["cases"].items():
        print(
            f"| {name} | {figures['started_s']} | {figures['first_visible_s']} | "
            f"{figures['loop_end_to_closed_s']} | {figures['process_s']} |"
        )
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
