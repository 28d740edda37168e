"""What logging costs a training loop's throughput (issue 15), variants side by side in one run.

Run: .venv/bin/python bench/bench_training_loop.py [--quick] [--seconds 10] [--rounds 3]
     [--out results.json]

A loop of steps (a torch step of about 300 µs on one thread, or a pure-Python step of about
the same length) logs float metrics at an offered rate:

    1k    1 metric every 2nd step        10k   5 metrics every step
    2k    20 metrics every 10th step     40k   20 metrics every step

(the rate in records/s is that pattern at about 2,000 steps/s; the measured one is reported).
Variants, interleaved round by round in this one process (so all share one heap, with
torch, mlflow, wandb, tensorboard and lightning imported, as a real job's does):

    none        no logging
    thread      fanlog, MLflow server + TensorBoard + W&B offline + journal, delivered by
                threads in the training process (delivery="thread" where that option exists)
    agent       the same with delivery="agent": run only if the installed fanlog accepts it
    journal     fanlog, journal only
    lightning   Lightning's MLFlowLogger + TensorBoardLogger + WandbLogger, log_metrics()
    raw         mlflow.log_metrics + SummaryWriter.add_scalar + wandb.log

The trainer runs pinned to one core and the MLflow server (with its workers) to another
(``taskset``), so the server's CPU does not count against the trainer. Reported per
variant: steps/s and the ratio to no logging, p50/p99/max step time, the trainer's CPU per
record (its thread's CPU beyond what the same steps cost without logging), the writer's
and all other threads' CPU per record, the CPU of child processes (W&B's service, the
agent), gen-2 collections and the longest GC pause per 10k steps, and the delivery lag at
loop end (how long `flush()`, or the tracker's own finish, takes after the last step).
The load average is printed before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import array
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

RATES = {"1k": (1, 2), "2k": (20, 10), "10k": (5, 1), "40k": (20, 1)}
"""rate name -> (metrics per logging step, log on every n-th step)."""
STEP_TARGET_S = 300e-6
QUIET_WANDB = {
    "x_disable_stats": True,
    "x_disable_meta": True,
    "x_disable_machine_info": True,
    "console": "off",
    "disable_git": True,
    "x_save_requirements": False,
}
TRACKER_VARIANTS = ("thread", "agent", "lightning", "raw")


# ---------------------------------------------------------------- the steps
def torch_step() -> Callable[[], float]:
    """A forward/backward/update of a small MLP on one thread, sized to about 300 µs."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def make(batch: int) -> Callable[[], float]:
        x, y = torch.randn(batch, 128), torch.randn(batch, 1)

        def step() -> float:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.item()

        return step

    return _calibrated(make, start=64)


def python_step() -> Callable[[], float]:
    """Pure-Python arithmetic (holds the GIL the whole time), sized to about 300 µs."""

    def make(n: int) -> Callable[[], float]:
        def step() -> float:
            total = 0.0
            for i in range(n):
                total += i * 0.5
            return total / n

        return step

    return _calibrated(make, start=5000)


def _calibrated(make: Callable[[int], Callable[[], float]], start: int) -> Callable[[], float]:
    size = start
    for _ in range(4):
        step = make(size)
        for _ in range(50):
            step()
        begin = time.perf_counter()
        for _ in range(200):
            step()
        took = (time.perf_counter() - begin) / 200
        size = max(1, round(size * STEP_TARGET_S / took))
    return make(size)


# ---------------------------------------------------------------- the variants
class Variant:
    """One way of logging: `log(step, value)` on the loop, `end()` after it, `close()`."""

    def __init__(self, metrics: int) -> None:
        self.names = [f"train/m{i}" for i in range(metrics)]

    def log(self, step: int, value: float) -> None:
        raise NotImplementedError

    def end(self) -> None:
        """Wait until what was logged is delivered (the lag at loop end)."""

    def close(self) -> None:
        """Close the run (not timed as lag)."""


class NoLogging(Variant):
    def log(self, step: int, value: float) -> None:
        return None


class Fanlog(Variant):
    def __init__(self, metrics: int, members: list[Any], **options: Any) -> None:
        super().__init__(metrics)
        from fanlog import LoggersCollection

        self.logger = LoggersCollection(members, job_id=f"bench-{uuid.uuid4().hex[:8]}", **options)
        self.logger.create_logger_context(rank=0)
        self.logger.log(0.0, "warm-up", step=0)  # trackers open their runs before the loop,
        self.logger.flush(timeout=300)  # as Lightning's and the raw variant's do
        self._log = self.logger.log

    def log(self, step: int, value: float) -> None:
        log = self._log
        for name in self.names:
            log(value, name, step=step)

    def end(self) -> None:
        if not self.logger.flush(timeout=600):
            print(f"  warning: flush returned False: {self.logger.delivery_errors()}", file=sys.stderr)

    def close(self) -> None:
        self.logger.destroy_logger_context()


class Lightning(Variant):
    def __init__(self, metrics: int, url: str, workdir: str) -> None:
        super().__init__(metrics)
        from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

        self.loggers = [
            MLFlowLogger(experiment_name="bench-lightning", tracking_uri=url),
            TensorBoardLogger(save_dir=os.path.join(workdir, "tb")),
            WandbLogger(project="bench", save_dir=workdir, offline=True, settings=QUIET_WANDB),
        ]
        for logger in self.loggers:
            _ = logger.experiment  # start the runs before the loop, as a Trainer does

    def log(self, step: int, value: float) -> None:
        metrics = dict.fromkeys(self.names, value)
        for logger in self.loggers:
            logger.log_metrics(metrics, step)

    def end(self) -> None:
        for logger in self.loggers:
            logger.finalize("success")
        import wandb

        wandb.finish()


class Raw(Variant):
    def __init__(self, metrics: int, url: str, workdir: str) -> None:
        super().__init__(metrics)
        import mlflow
        import wandb
        from torch.utils.tensorboard import SummaryWriter

        self.client = mlflow.MlflowClient(url)
        experiment = self.client.get_experiment_by_name("bench-raw")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("bench-raw")
        mlflow.set_tracking_uri(url)
        self.mlflow = mlflow
        self.mlflow_run = mlflow.start_run(experiment_id=experiment_id)
        self.writer = SummaryWriter(os.path.join(workdir, "tb"))
        self.wandb = wandb.init(project="bench", dir=workdir, mode="offline", settings=QUIET_WANDB)

    def log(self, step: int, value: float) -> None:
        metrics = dict.fromkeys(self.names, value)
        self.mlflow.log_metrics(metrics, step=step)
        for name in self.names:
            self.writer.add_scalar(name, value, step)
        self.wandb.log(metrics, step=step)

    def end(self) -> None:
        self.writer.close()
        self.wandb.finish()
        self.mlflow.end_run()


def fanlog_members(kind: str, url: str, workdir: str) -> list[Any]:
    from fanlog import JournalLogger, MLflowLogger, TensorBoardLogger, WandBLogger

    members: list[Any] = [JournalLogger(savedir=workdir, log_freq="batch")]
    if kind != "journal":
        members += [
            MLflowLogger(savedir=workdir, tracking_uri=url, experiment_name="bench-fanlog", log_freq="batch"),
            TensorBoardLogger(savedir=workdir, log_freq="batch"),
            WandBLogger(
                savedir=workdir, project_name="bench", mode="offline", log_freq="batch", settings=QUIET_WANDB
            ),
        ]
    return members


def agent_accepted() -> bool:
    """Whether the installed fanlog takes delivery="agent" (issue 15's delivery agent)."""
    from fanlog import JournalLogger, LoggersCollection

    try:
        LoggersCollection([JournalLogger(savedir=tempfile.mkdtemp())], delivery="agent")
    except (TypeError, ValueError):
        return False
    return True


def make_variant(name: str, metrics: int, url: str, workdir: str, thread_option: dict[str, Any]) -> Variant:
    if name == "none":
        return NoLogging(metrics)
    if name == "journal":
        return Fanlog(metrics, fanlog_members("journal", url, workdir))
    if name == "thread":
        return Fanlog(metrics, fanlog_members("all", url, workdir), **thread_option)
    if name == "agent":
        return Fanlog(metrics, fanlog_members("all", url, workdir), delivery="agent")
    if name == "lightning":
        return Lightning(metrics, url, workdir)
    return Raw(metrics, url, workdir)


# ---------------------------------------------------------------- measuring
class GcWatch:
    """Gen-2 collections and the longest pause of any collection, while `active`."""

    def __init__(self) -> None:
        self.active = False
        self.full = 0
        self.longest = 0.0
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.full, self.longest = 0, 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if not self.active:
            return
        if phase == "start":
            self._start = time.perf_counter()
            return
        self.longest = max(self.longest, time.perf_counter() - self._start)
        if info["generation"] == 2:
            self.full += 1


def thread_cpu() -> dict[str, float]:
    """CPU seconds of every Python thread but the caller's, by name."""
    me = threading.get_ident()
    cpu: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None or thread.ident == me or not thread.is_alive():
            continue
        try:
            seconds = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, ProcessLookupError):
            continue
        cpu[f"{thread.name}:{thread.ident}"] = seconds
    return cpu


def children_cpu(exclude: set[int]) -> float:
    """CPU seconds of this process's child processes (W&B's service, an agent), not `exclude`."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        if child.pid in exclude:
            continue
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def delta(after: dict[str, float], before: dict[str, float], prefix: str = "") -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix))


def run_loop(
    step: Callable[[], float],
    variant: Variant,
    every: int,
    seconds: float,
    gcw: GcWatch,
    server_pids: set[int],
) -> dict[str, Any]:
    """Run steps for `seconds`, logging on every `every`-th step; measure."""
    times = array.array("d")
    log = variant.log
    threads0, children0 = thread_cpu(), children_cpu(server_pids)
    gcw.reset()
    gcw.active = True
    cpu0, start = time.thread_time(), time.perf_counter()
    now, steps, records = start, 0, 0
    stop = start + seconds
    per_log = len(variant.names)
    while now < stop:
        value = step()
        if steps % every == 0 and per_log:
            log(steps, value)
            records += per_log
        steps += 1
        last, now = now, time.perf_counter()
        times.append(now - last)
    elapsed, cpu = now - start, time.thread_time() - cpu0
    gcw.active = False
    variant.end()
    lag = time.perf_counter() - now
    threads1, children1 = thread_cpu(), children_cpu(server_pids)
    variant.close()
    ordered = sorted(times)
    return {
        "steps": steps,
        "records": records,
        "seconds": elapsed,
        "steps_per_s": steps / elapsed,
        "records_per_s": records / elapsed,
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3,
        "max_ms": ordered[-1] * 1e3,
        "trainer_cpu_per_step_us": cpu / steps * 1e6,
        "writer_cpu_s": delta(threads1, threads0, "fanlog-writer"),
        "threads_cpu_s": delta(threads1, threads0),
        "children_cpu_s": max(0.0, children1 - children0),
        "gen2": gcw.full,
        "gc_longest_ms": gcw.longest * 1e3,
        "lag_s": lag,
    }


def summarize(runs: list[dict[str, Any]], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """The median of each figure over rounds, with per-record and per-10k-step figures."""
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    records = med["records"] or 1
    out = {
        "steps_per_s": round(med["steps_per_s"]),
        "records_per_s": round(med["records_per_s"]),
        "p50_ms": round(med["p50_ms"], 3),
        "p99_ms": round(med["p99_ms"], 3),
        "max_ms": round(med["max_ms"], 1),
        "gen2_per_10k_steps": round(med["gen2"] / med["steps"] * 1e4, 2),
        "gc_longest_ms": round(med["gc_longest_ms"], 1),
        "lag_s": round(med["lag_s"], 2),
    }
    if baseline is not None:
        out["ratio"] = round(med["steps_per_s"] / baseline["steps_per_s_raw"], 3)
        extra = med["trainer_cpu_per_step_us"] - baseline["trainer_cpu_per_step_us"]
        out["trainer_cpu_us_per_record"] = round(extra * med["steps"] / records, 2)
    if med["records"]:
        out["writer_cpu_us_per_record"] = round(med["writer_cpu_s"] / records * 1e6, 2)
        out["threads_cpu_us_per_record"] = round(med["threads_cpu_s"] / records * 1e6, 2)
        out["children_cpu_us_per_record"] = round(med["children_cpu_s"] / records * 1e6, 2)
    out["steps_per_s_raw"] = med["steps_per_s"]
    out["trainer_cpu_per_step_us"] = med["trainer_cpu_per_step_us"]
    return out


# ---------------------------------------------------------------- set-up
def offline_wandb(root: str) -> None:
    """W&B offline and silent, every directory under `root`: nothing leaves the machine."""
    os.environ.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_ERROR_REPORTING="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
    )
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        os.environ[name] = os.path.join(root, name.lower())
    os.environ.pop("WANDB_API_KEY", None)


def process_tree(pid: int) -> set[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return {pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.Error:
        return {pid}


def pin(pids: set[int], core: int) -> None:
    for pid in pids:
        subprocess.run(["taskset", "-a", "-cp", str(core), str(pid)], check=False, capture_output=True)


def plan(quick: bool) -> list[tuple[str, str, list[str]]]:
    """(step kind, rate, variants) in the order they run."""
    everything = ["none", "thread", "agent", "journal", "lightning", "raw"]
    if not quick:
        return [(kind, rate, everything) for kind in ("torch", "python") for rate in RATES]
    light = ["none", "thread", "agent", "journal"]
    return [
        ("torch", "1k", light),
        ("torch", "2k", everything),
        ("torch", "10k", light),
        ("torch", "40k", everything),
        ("python", "2k", light),
        ("python", "40k", light),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short loops, fewer cases (< 3 min)")
    parser.add_argument("--seconds", type=float, help="loop length per case (default 10; quick 1.5)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    seconds = args.seconds or (1.5 if args.quick else 10.0)
    rounds = args.rounds or (1 if args.quick else 3)
    began = time.perf_counter()
    cores = sorted(os.sched_getaffinity(0))
    pinned = len(cores) >= 2
    if pinned:  # before any thread starts: every thread of the trainer inherits it
        os.sched_setaffinity(0, {cores[1]})
    root = tempfile.mkdtemp(prefix="fanlog-bench-")
    offline_wandb(root)
    from support.mlflow_server import start_mlflow_server

    server = start_mlflow_server(os.path.join(root, "mlflow"))
    server_pids = process_tree(server.pid or 0)
    if pinned:
        pin(server_pids, cores[0])
    else:
        print("only one core: trainer and MLflow server are not pinned apart", file=sys.stderr)
    import lightning.pytorch.loggers  # noqa: F401 - every variant shares one heap
    import mlflow  # noqa: F401
    import torch  # noqa: F401
    import wandb  # noqa: F401
    from torch.utils.tensorboard import SummaryWriter  # noqa: F401

    import fanlog

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "View run at" line per run
    has_agent = agent_accepted()
    if not has_agent:
        print("variant 'agent' skipped: this fanlog does not accept delivery='agent'", file=sys.stderr)
    thread_option = {"delivery": "thread"} if has_agent else {}
    steps = {"torch": torch_step(), "python": python_step()}
    gcw = GcWatch()
    results: dict[str, Any] = {
        "fanlog": os.path.dirname(fanlog.__file__),
        "quick": args.quick,
        "seconds": seconds,
        "rounds": rounds,
        "load_before": os.getloadavg(),
        "cores": cores,
        "pinned": pinned,
        "agent": has_agent,
        "cases": {},
    }
    try:
        for kind, rate, variants in plan(args.quick):
            metrics, every = RATES[rate]
            names = [v for v in variants if has_agent or v != "agent"]
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in names}
            for _ in range(rounds):
                for name in names:
                    workdir = tempfile.mkdtemp(dir=root)
                    variant = make_variant(name, metrics, server.url, workdir, thread_option)
                    gc.collect()
                    runs[name].append(run_loop(steps[kind], variant, every, seconds, gcw, server_pids))
            baseline = summarize(runs["none"], None)
            case = {name: summarize(r, baseline) for name, r in runs.items()}
            results["cases"][f"{kind} {rate}"] = case
            print_case(f"{kind} step, {rate} ({metrics} metrics every {every} step(s))", case)
    finally:
        server.stop()
    results["load_after"] = os.getloadavg()
    results["wall_s"] = round(time.perf_counter() - began, 1)
    print(
        f"load average before {results['load_before']}, after {results['load_after']}; {results['wall_s']} s"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


COLUMNS = [
    ("steps_per_s", "steps/s"),
    ("ratio", "vs none"),
    ("records_per_s", "rec/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("trainer_cpu_us_per_record", "trainer µs/rec"),
    ("writer_cpu_us_per_record", "writer µs/rec"),
    ("threads_cpu_us_per_record", "threads µs/rec"),
    ("children_cpu_us_per_record", "children µs/rec"),
    ("gen2_per_10k_steps", "gen2/10k"),
    ("gc_longest_ms", "GC max ms"),
    ("lag_s", "lag s"),
]


def print_case(title: str, case: dict[str, dict[str, Any]]) -> None:
    print(f"\n### {title}\n")
    print("| variant | " + " | ".join(label for _, label in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, figures in case.items():
        cells = [str(figures.get(key, "–")) for key, _ in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
