"""10k scalar metrics, one per call, to one real MLflow server: fanlog against MLflow's own ways.

Run: ``.venv/bin/python bench/bench_mlflow.py`` (starts its own ``mlflow server`` on
127.0.0.1; ``--tracking-uri http://...`` uses an existing one). Prints a markdown table.

For each method, two figures: the time spent on the training loop's thread, and the time
until every record is durable in the server (read back and counted before the next method).
The plain ``log_metric`` loop costs one HTTP request per metric (~50 ms here); by default it
runs on ``--sync-sample`` metrics and is extrapolated to N, which the table says.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the server helper shared with the test suite

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


@dataclass
class Result:
    method: str
    caller: float
    durable: float
    close: float
    stored: int
    note: str = ""


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def bench_log_metric(uri: str, experiment_id: str, n: int, sample: int) -> Result:
    """What itwinai does: `mlflow.log_metric` per value, one request each."""
    import mlflow

    count = min(n, sample)
    run = mlflow.start_run(experiment_id=experiment_id, run_name="log_metric")
    started = time.perf_counter()
    for step in range(count):
        mlflow.log_metric("loss", step * 0.001, step=step)
    caller = time.perf_counter() - started
    close = timed(mlflow.end_run)
    scale = n / count
    note = f"{count} measured, scaled ×{scale:.3g}" if count < n else ""
    return Result(
        "`mlflow.log_metric` loop", caller * scale, caller * scale, close, stored(uri, run.info.run_id), note
    )


def bench_log_metric_async(uri: str, experiment_id: str, n: int) -> Result:
    """`mlflow.log_metric(synchronous=False)`: queued in MLflow's own thread pool."""
    import mlflow

    run = mlflow.start_run(experiment_id=experiment_id, run_name="log_metric_async")
    started = time.perf_counter()
    for step in range(n):
        mlflow.log_metric("loss", step * 0.001, step=step, synchronous=False)
    caller = time.perf_counter() - started
    mlflow.flush_async_logging()
    durable = time.perf_counter() - started
    close = timed(mlflow.end_run)
    return Result("`log_metric(synchronous=False)`", caller, durable, close, stored(uri, run.info.run_id))


def bench_log_batch(uri: str, experiment_id: str, n: int) -> Result:
    """The floor: raw `MlflowClient.log_batch`, 1000 metrics per request, on the caller's thread."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name="log_batch")
    started = time.perf_counter()
    batch: list[Metric] = []
    for step in range(n):
        batch.append(Metric("loss", step * 0.001, int(time.time() * 1000), step))
        if len(batch) == 1000:
            client.log_batch(run.info.run_id, metrics=batch)
            batch = []
    if batch:
        client.log_batch(run.info.run_id, metrics=batch)
    caller = time.perf_counter() - started
    close = timed(lambda: client.set_terminated(run.info.run_id))
    return Result(
        "raw `MlflowClient.log_batch` (1000/request)", caller, caller, close, stored(uri, run.info.run_id)
    )


def bench_fanlog(uri: str, experiment_name: str, n: int, savedir: str) -> Result:
    """`fanlog.MLflowLogger`: log() appends to a queue; the journal and MLflow are fed behind."""
    from fanlog.backends.mlflow import MLflowLogger

    logger = MLflowLogger(
        savedir=savedir,
        tracking_uri=uri,
        experiment_name=experiment_name,
        run_name="fanlog",
        log_freq="batch",
    )
    logger.create_logger_context()
    logger.flush(timeout=120)  # the run is open: every method starts with its run created
    started = time.perf_counter()
    for step in range(n):
        logger.log(step * 0.001, "loss", step=step)
    caller = time.perf_counter() - started
    if not logger.flush(timeout=300):
        raise RuntimeError(f"fanlog did not deliver: {logger.delivery_errors()}")
    durable = time.perf_counter() - started
    run_id = logger.mlflow_run_id
    close = timed(logger.destroy_logger_context)
    assert run_id is not None
    return Result("`fanlog.MLflowLogger`", caller, durable, close, stored(uri, run_id))


def stored(uri: str, run_id: str) -> int:
    from mlflow import MlflowClient

    return len(MlflowClient(uri).get_metric_history(run_id, "loss"))


def table(results: list[Result], n: int) -> str:
    base = results[0]
    floor = next(r for r in results if "log_batch" in r.method)
    lines = [
        f"| method ({n} metrics, one per call) | caller thread (s) | until durable (s) "
        "| close (s) | last call → run closed (s) | caller vs log_metric | durable vs log_batch "
        "| stored |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        speedup = base.caller / r.caller if r.caller else float("inf")
        tail = r.durable - r.caller + r.close
        lines.append(
            f"| {r.method}{f' ({r.note})' if r.note else ''} | {r.caller:.3f} | {r.durable:.3f} "
            f"| {r.close:.3f} | {tail:.3f} | {'baseline' if r is base else f'{speedup:,.0f}× lower'} | "
            f"{r.durable / floor.durable:.2f}× | {r.stored} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="metrics per method")
    parser.add_argument(
        "--sync-sample",
        type=int,
        default=300,
        help="metrics the plain log_metric loop really sends (0: all n)",
    )
    parser.add_argument("--tracking-uri", help="an existing server (default: start one)")
    args = parser.parse_args()

    import mlflow

    workdir = tempfile.mkdtemp(prefix="fanlog-bench-mlflow-")
    server = None
    uri = args.tracking_uri
    if uri is None:
        from support.mlflow_server import start_mlflow_server

        server = start_mlflow_server(Path(workdir) / "server")
        uri = server.url
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        mlflow.set_tracking_uri(uri)
        name = f"bench-{int(time.time())}"
        experiment_id = mlflow.create_experiment(name)
        sample = args.sync_sample or args.n
        results = [
            bench_log_metric(uri, experiment_id, args.n, sample),
            bench_log_metric_async(uri, experiment_id, args.n),
            bench_log_batch(uri, experiment_id, args.n),
            bench_fanlog(uri, name, args.n, str(Path(workdir) / "fanlog")),
        ]
    finally:
        if server is not None:
            server.stop()
    print(table(results, args.n))
    missing = [r.method for r in results if r.stored != (args.n if not r.note else min(args.n, sample))]
    if missing:
        print(f"\nincomplete: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
