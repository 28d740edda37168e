"""Caller-side cost of logging 10k scalars: fanlog vs the raw TensorBoard and W&B calls.

For each tracker it times the training loop's side of N calls (µs per call) for
the raw call (``SummaryWriter.add_scalar``, ``wandb.log`` offline) and for
fanlog's logger, then checks that the same N values landed at the same steps by
reading them back with each tracker's own reader (TensorBoard's
EventAccumulator, the offline run's ``.wandb`` transaction log). W&B runs
offline only, with every W&B directory under a temporary directory.

Run: ``.venv/bin/python bench/bench_tensorboard_wandb.py [--n 10000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the .wandb reader

QUIET_WANDB = {
    "x_disable_stats": True,
    "x_disable_meta": True,
    "x_disable_machine_info": True,
    "console": "off",
    "disable_git": True,
    "x_save_requirements": False,
}


@dataclass
class Result:
    tracker: str
    path: str
    us_per_call: float
    """Wall time of the calls on the caller's thread, per call."""
    cpu_us_per_call: float
    """CPU time of the caller's thread alone (time.thread_time), per call: what the loop pays
    even when other processes or threads compete for the cores."""
    delivered_s: float
    """Seconds from the first call until the data is in the tracker's files."""
    landed: int
    steps_ok: bool


def values(n: int) -> list[float]:
    return [1.0 / (i + 1) for i in range(n)]


# ---------------------------------------------------------------- TensorBoard
def tb_scalars(logdir: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars("loss")] if "loss" in acc.Tags()["scalars"] else []


def tb_raw(workdir: str, n: int) -> Result:
    from torch.utils.tensorboard import SummaryWriter

    logdir = os.path.join(workdir, "raw")
    writer = SummaryWriter(log_dir=logdir)
    data = values(n)
    start, cpu = time.perf_counter(), time.thread_time()
    for step, value in enumerate(data):
        writer.add_scalar("loss", value, step)
    caller, cpu = time.perf_counter() - start, time.thread_time() - cpu
    writer.close()
    return tb_result("SummaryWriter.add_scalar", logdir, data, (caller, cpu), time.perf_counter() - start)


def tb_fanlog(workdir: str, n: int) -> Result:
    from fanlog.backends.tensorboard import TensorBoardLogger

    logger = TensorBoardLogger(savedir=workdir, log_freq="batch", run_name="fanlog")
    logger.create_logger_context()
    data = values(n)
    log = logger.log
    start, cpu = time.perf_counter(), time.thread_time()
    for step, value in enumerate(data):
        log(value, "loss", step=step)
    caller, cpu = time.perf_counter() - start, time.thread_time() - cpu
    logger.destroy_logger_context()
    logdir = logger.backend.logdir  # type: ignore[union-attr]
    return tb_result("fanlog TensorBoardLogger.log", logdir, data, (caller, cpu), time.perf_counter() - start)


def tb_result(path: str, logdir: str, data: list[float], caller: tuple[float, float], total: float) -> Result:
    import numpy as np

    got = tb_scalars(logdir)
    expected = np.float32(data).tolist()  # TensorBoard stores float32
    ok = got == list(enumerate(expected))
    n = len(data)
    return Result("TensorBoard", path, caller[0] / n * 1e6, caller[1] / n * 1e6, total, len(got), ok)


# ---------------------------------------------------------------- Weights & Biases (offline)
def wandb_series(savedir: str, step_key: str | None) -> list[tuple[int, float]]:
    """(step, loss) from the newest offline run under `savedir`, waiting for its exit record."""
    from support.wandb_log import read_transaction_log

    (path,) = glob.glob(os.path.join(savedir, "**", "offline-run-*", "run-*.wandb"), recursive=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            records = read_transaction_log(path)
        except ValueError:
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    series = []
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
        if "loss" in row:
            series.append((int(row[step_key or "_step"]), float(row["loss"])))
    return series


def wandb_raw(workdir: str, n: int) -> Result:
    import wandb

    savedir = os.path.join(workdir, "raw")
    os.makedirs(savedir)
    run = wandb.init(mode="offline", dir=savedir, project="bench", settings=QUIET_WANDB, reinit="create_new")
    data = values(n)
    start, cpu = time.perf_counter(), time.thread_time()
    for value in data:
        run.log({"loss": value})
    caller, cpu = time.perf_counter() - start, time.thread_time() - cpu
    run.finish()
    got = wandb_series(savedir, None)
    total = time.perf_counter() - start
    return Result(
        "W&B offline",
        "wandb.log",
        caller / n * 1e6,
        cpu / n * 1e6,
        total,
        len(got),
        got == list(enumerate(data)),
    )


def wandb_fanlog(workdir: str, n: int) -> Result:
    from fanlog.backends.wandb import STEP_METRIC, WandBLogger

    savedir = os.path.join(workdir, "fanlog")
    logger = WandBLogger(
        savedir=savedir, project_name="bench", mode="offline", log_freq="batch", settings=QUIET_WANDB
    )
    logger.create_logger_context()
    data = values(n)
    log = logger.log
    start, cpu = time.perf_counter(), time.thread_time()
    for step, value in enumerate(data):
        log(value, "loss", step=step)
    caller, cpu = time.perf_counter() - start, time.thread_time() - cpu
    logger.destroy_logger_context()
    got = wandb_series(savedir, STEP_METRIC)
    total = time.perf_counter() - start
    return Result(
        "W&B offline",
        "fanlog WandBLogger.log",
        caller / n * 1e6,
        cpu / n * 1e6,
        total,
        len(got),
        got == list(enumerate(data)),
    )


# ---------------------------------------------------------------- main
def offline_environment(root: str) -> None:
    """W&B offline, silent, with all its directories under `root`: nothing leaves the machine."""
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_ERROR_REPORTING="false")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        os.environ[name] = os.path.join(root, name.lower())
    os.environ.pop("WANDB_API_KEY", None)


def best_of(repeat: int, run: Callable[[str, int], Result], root: str, n: int) -> Result:
    """The run with the lowest caller cost; each repetition in a fresh directory."""
    results = [run(tempfile.mkdtemp(dir=root), n) for _ in range(repeat)]
    return min(results, key=lambda r: r.us_per_call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="scalars per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the best is shown")
    args = parser.parse_args()
    import torch  # noqa: F401  (imported up front so no row pays for it)

    with tempfile.TemporaryDirectory(prefix="fanlog-bench-") as root:
        offline_environment(root)
        rows = [
            best_of(args.repeat, tb_raw, root, args.n),
            best_of(args.repeat, tb_fanlog, root, args.n),
            best_of(args.repeat, wandb_raw, root, args.n),
            best_of(args.repeat, wandb_fanlog, root, args.n),
        ]
    print(
        f"{args.n} scalars per run, best of {args.repeat} (by caller wall time), on "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| tracker | call | µs/call caller wall | µs/call caller CPU | until stored (s) "
        "| landed | same steps & values |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r.tracker} | {r.path} | {r.us_per_call:.2f} | {r.cpu_us_per_call:.2f} | "
            f"{r.delivered_s:.2f} | "
            f"{r.landed}/{args.n} | {'yes' if r.steps_ok else 'NO'} |"
        )


if __name__ == "__main__":
    main()
