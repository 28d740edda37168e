"""Distributed jobs with real processes: torchrun (gloo, CPU), SLURM-style variables, a dying rank.

Every launch runs tutorials/03_ddp_torchrun.py, then reads back what each tracker stored
with its own reader: the per-rank journals, TensorBoard's EventAccumulator, and a real
`mlflow server` (the session fixture). torchrun is slow to start on two shared cores, so
each launch carries several assertions. The in-process tests at the end cover rank
detection and epoch accumulation without any launcher.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import fanlog  # noqa: E402
from fanlog import aggregation  # noqa: E402
from fanlog.backends.journal import JournalLogger  # noqa: E402
from fanlog.journal import Journal  # noqa: E402
from fanlog.rank import detect_local_rank, detect_placement, detect_rank, detect_world_size  # noqa: E402
from fanlog.reader import journal_paths  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "tutorials" / "03_ddp_torchrun.py"
EPOCHS, BATCHES = 2, 3
# Per logging rank and epoch: train/loss and train/loss_mean per batch, three epoch values.
METRICS_PER_RANK = EPOCHS * (2 * BATCHES + 3)
PARAMS_PER_RANK = 4  # epochs, batch_size, lr, world_size
LAUNCH_TIMEOUT = 240
LAUNCHER_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PMI_RANK",
    "PMI_SIZE",
    "PMIX_RANK",
    "MV2_COMM_WORLD_RANK",
    "FANLOG_RUN_ID",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
)


# ---------------------------------------------------------------------- launching
def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(
        FANLOG_REDUCE_TIMEOUT="20",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        WANDB_MODE="offline",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    env.update(extra)
    return env


def run_group(
    commands: list[list[str]], envs: list[dict[str, str]], cwd: Path, timeout: float = LAUNCH_TIMEOUT
) -> list[tuple[int, str]]:
    """Start processes in their own sessions; on timeout kill each group by PID and fail."""
    procs = [
        subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        for cmd, env in zip(commands, envs, strict=True)
    ]
    deadline = time.monotonic() + timeout
    results: list[tuple[int, str]] = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, out.decode(errors="replace")))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"distributed job still running after {timeout}s: it hangs")
    return results


def torchrun(
    nproc: int,
    savedir: Path,
    *flags: str,
    script: Path = TUTORIAL,
    timeout: float = LAUNCH_TIMEOUT,
    **env: str,
) -> tuple[int, str, float]:
    """Run `script` under `torchrun --nproc_per_node=nproc` (gloo on CPU)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--standalone",
        str(script),
        "--savedir",
        str(savedir),
        *flags,
    ]
    if script == TUTORIAL:
        command += ["--epochs", str(EPOCHS), "--batches", str(BATCHES), "--dist-backend", "gloo"]
    started = time.monotonic()
    [(code, out)] = run_group([command], [clean_env(**env)], savedir.parent, timeout)
    return code, out, time.monotonic() - started


# ---------------------------------------------------------------------- reading back
def journal_counts(savedir: Path, backend: str) -> dict[int, Counter[str]]:
    """Per rank, records per kind that the journal routed to `backend` (0 if it was not there)."""
    counts: dict[int, Counter[str]] = {}
    for path in journal_paths(savedir):
        journal = Journal(path, readonly=True)
        try:
            rank = int(journal.meta()["rank"])
            slot = journal.backends().get(backend)
            records = [] if slot is None else journal.read(0, slot=slot, limit=10**6, rank=rank)
            counts[rank] = Counter(r.kind for r in records)
        finally:
            journal.close()
    return counts


def the_run(savedir: Path) -> fanlog.reader.RunData:
    """The one run under `savedir`; fails if the ranks did not agree on a single run id."""
    runs = {Path(p).parents[1].name for p in journal_paths(savedir)}
    assert len(runs) == 1, f"ranks wrote to several runs: {sorted(runs)}"
    return fanlog.read_run(savedir / "runs" / runs.pop())


def tensorboard_scalars(savedir: Path, run_name: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """rank dir name → tag → (step, value), read with TensorBoard's own EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for rank_dir in sorted((savedir / "tensorboard" / run_name).iterdir()):
        acc = EventAccumulator(str(rank_dir), size_guidance={"scalars": 0})
        acc.Reload()
        found[rank_dir.name] = {
            tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
        }
    return found


def mlflow_runs(url: str, experiment: str) -> list[dict[str, Any]]:
    """Every run of `experiment` on the server: rank, parent, metric histories, params."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = []
    for run in client.search_runs([exp.experiment_id], max_results=100):
        histories = {
            key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            for key in run.data.metrics
        }
        runs.append(
            {
                "id": run.info.run_id,
                "rank": int(run.data.tags["fanlog.rank"]),
                "fanlog_run": run.data.tags["fanlog.run_id"],
                "status": run.info.status,
                "parent": run.data.tags.get("mlflow.parentRunId"),
                "metrics": histories,
                "params": dict(run.data.params),
            }
        )
    return runs


Histories = dict[int, dict[str, list[tuple[int, float]]]]
"""rank → metric key → [(step, value)]."""


def by_rank(histories: Histories, key: str) -> dict[int, dict[int, float]]:
    return {rank: dict(h.get(key, [])) for rank, h in histories.items()}


def check_reductions(local: dict[int, dict[int, float]], logged: Histories, world: int) -> None:
    """The reduced metrics each logging rank stored equal what the ranks' own losses give by hand.

    `local[r][step]` is rank r's own train/loss for every rank; `logged[r]` what rank r stored.
    """
    assert sorted(local) == list(range(world))
    steps = range(EPOCHS * BATCHES)
    by_hand = {s: math.fsum(local[r][s] for r in range(world)) / world for s in steps}
    for rank, metrics in logged.items():
        assert dict(metrics["train/loss_mean"]) == pytest.approx(by_hand, rel=1e-9, abs=1e-12)
        for epoch in range(EPOCHS):
            in_epoch = [s for s in steps if s // BATCHES == epoch]
            own = [local[rank][s] for s in in_epoch]
            every = [local[r][s] for r in range(world) for s in in_epoch]
            assert dict(metrics["epoch/loss_rank"])[epoch] == pytest.approx(sum(own) / len(own))
            assert dict(metrics["epoch/loss"])[epoch] == pytest.approx(sum(every) / len(every))
            assert dict(metrics["epoch/loss_max"])[epoch] == pytest.approx(max(every))


def metric_histories(run: fanlog.reader.RunData) -> Histories:
    found: Histories = defaultdict(lambda: defaultdict(list))
    for m in run.metrics:
        found[m.rank][m.key].append((m.step, m.value))
    return found


# ---------------------------------------------------------------------- the launches
def test_torchrun_two_ranks_journal_all_tensorboard_all_mlflow_rank0(tmp_path, mlflow_server):
    """2 ranks; journal, TensorBoard and W&B (offline) on every rank (-1), MLflow on rank 0 only."""
    experiment = f"ddp2-{uuid.uuid4().hex[:8]}"
    savedir = tmp_path / "mllogs"
    code, out, _ = torchrun(
        2,
        savedir,
        "--journal-workers",
        "-1",
        "--tensorboard-workers",
        "-1",
        "--mlflow-workers",
        "0",
        "--tracking-uri",
        mlflow_server.url,
        "--experiment",
        experiment,
        "--wandb-workers",
        "-1",
    )
    assert code == 0, out[-4000:]

    run = the_run(savedir)
    assert sorted(run.meta) == [0, 1]
    assert {m["status"] for m in run.meta.values()} == {"finished"}
    assert {m["world_size"] for m in run.meta.values()} == {2}
    counts = journal_counts(savedir, "journal")
    assert counts == {r: Counter(metric=METRICS_PER_RANK, param=PARAMS_PER_RANK) for r in (0, 1)}

    histories = metric_histories(run)
    local = by_rank(histories, "train/loss")
    check_reductions(local, histories, world=2)

    scalars = tensorboard_scalars(savedir, run.meta[0]["run_name"])
    assert sorted(scalars) == ["rank-0", "rank-1"]
    for rank in (0, 1):
        tb = scalars[f"rank-{rank}"]
        assert sum(len(v) for v in tb.values()) == METRICS_PER_RANK
        assert dict(tb["train/loss"]) == pytest.approx(local[rank], rel=1e-6)  # float32 in TB

    # W&B: one offline run per rank, grouped as one job, each with its own rank's values
    from test_wandb_backend import offline_runs  # wandb's own protobuf records, read back

    wandb_runs = offline_runs(savedir)
    job = run.meta[0]["run_name"]
    assert sorted((r.run.run_group, r.run.display_name) for r in wandb_runs) == [
        (job, f"{job}-rank0"),
        (job, f"{job}-rank1"),
    ]
    for wandb_run in wandb_runs:
        rank = int(wandb_run.run.display_name.rsplit("rank", 1)[1])
        assert dict(wandb_run.series("train/loss")) == pytest.approx(local[rank], rel=1e-6)

    runs = mlflow_runs(mlflow_server.url, experiment)
    assert [(r["rank"], r["parent"], r["status"]) for r in runs] == [(0, None, "FINISHED")]
    assert runs[0]["fanlog_run"] == run.meta[0]["run_id"]
    assert sum(len(h) for h in runs[0]["metrics"].values()) == METRICS_PER_RANK
    assert len(runs[0]["params"]) == PARAMS_PER_RANK
    assert runs[0]["metrics"] == {k: sorted(v) for k, v in histories[0].items()}


def test_torchrun_four_ranks_mixed_collection(tmp_path, mlflow_server):
    """4 ranks, one collection: journal on every rank, TensorBoard on rank 0, MLflow on
    [0, 2] (rank 0's run is the parent, rank 2's its child)."""
    experiment = f"ddp4-{uuid.uuid4().hex[:8]}"
    savedir = tmp_path / "mllogs"
    code, out, _ = torchrun(
        4,
        savedir,
        "--journal-workers",
        "-1",
        "--tensorboard-workers",
        "0",
        "--mlflow-workers",
        "0,2",
        "--tracking-uri",
        mlflow_server.url,
        "--experiment",
        experiment,
    )
    assert code == 0, out[-4000:]

    run = the_run(savedir)
    assert sorted(run.meta) == [0, 1, 2, 3]  # every rank has its own journal
    assert {m["world_size"] for m in run.meta.values()} == {4}
    assert {m["status"] for m in run.meta.values()} == {"finished"}
    full = Counter(metric=METRICS_PER_RANK, param=PARAMS_PER_RANK)
    assert journal_counts(savedir, "journal") == {r: full for r in range(4)}
    assert journal_counts(savedir, "mlflow") == {0: full, 1: Counter(), 2: full, 3: Counter()}
    histories = metric_histories(run)
    check_reductions(by_rank(histories, "train/loss"), histories, world=4)

    scalars = tensorboard_scalars(savedir, run.meta[0]["run_name"])
    assert sorted(scalars) == ["rank-0"]
    assert sum(len(v) for v in scalars["rank-0"].values()) == METRICS_PER_RANK

    runs = mlflow_runs(mlflow_server.url, experiment)
    parents = [r for r in runs if r["parent"] is None]
    assert len(parents) == 1, f"duplicate parent runs: {parents}"
    assert parents[0]["rank"] == 0
    children = [(r["rank"], r["parent"]) for r in runs if r["parent"] is not None]
    assert children == [(2, parents[0]["id"])]
    assert {r["fanlog_run"] for r in runs} == {run.meta[0]["run_id"]}
    assert {r["status"] for r in runs} == {"FINISHED"}
    for r in runs:
        assert len(r["params"]) == PARAMS_PER_RANK
        assert r["metrics"] == {k: sorted(v) for k, v in histories[r["rank"]].items()}


def test_slurm_style_variables_without_torchrun(tmp_path):
    """Two processes started the way srun starts them: SLURM_PROCID/SLURM_NTASKS, no RANK.

    The tutorial joins the process group from what fanlog.rank read; one JournalLogger
    with log_on_workers=-1 (a single logger, not a collection)."""
    from support.mlflow_server import free_port

    savedir = tmp_path / "mllogs"
    job = str(4000 + os.getpid() % 1000)
    command = [
        sys.executable,
        str(TUTORIAL),
        "--savedir",
        str(savedir),
        "--epochs",
        str(EPOCHS),
        "--batches",
        str(BATCHES),
        "--dist-backend",
        "gloo",
        "--journal-workers",
        "-1",
        "--tensorboard-workers",
        "off",
        "--mlflow-workers",
        "off",
    ]
    port = str(free_port())
    envs = [
        clean_env(
            SLURM_PROCID=str(r),
            SLURM_NTASKS="2",
            SLURM_LOCALID=str(r),
            SLURM_JOB_ID=job,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        for r in range(2)
    ]
    results = run_group([command, command], envs, tmp_path)
    assert [code for code, _ in results] == [0, 0], "\n".join(out[-3000:] for _, out in results)

    run = the_run(savedir)
    assert Path(run.paths[0]).parents[1].name == f"slurm-{job}"
    assert sorted(run.meta) == [0, 1]
    assert {m["world_size"] for m in run.meta.values()} == {2}
    full = Counter(metric=METRICS_PER_RANK, param=PARAMS_PER_RANK)
    assert journal_counts(savedir, "journal") == {0: full, 1: full}
    histories = metric_histories(run)
    check_reductions(by_rank(histories, "train/loss"), histories, world=2)


def test_a_rank_that_dies_does_not_hang_the_others(tmp_path):
    """Rank 1 dies (os._exit) at epoch 1, batch 1. Rank 0 (the only one logging: a single
    JournalLogger with log_on_workers=0) must stop, keep what it logged, and the job must end."""
    savedir = tmp_path / "mllogs"
    code, out, took = torchrun(
        2,
        savedir,
        "--journal-workers",
        "0",
        "--tensorboard-workers",
        "off",
        "--mlflow-workers",
        "off",
        "--crash",
        "1:1:1",
        timeout=120,
    )
    assert code != 0, out[-3000:]
    assert took < 120
    run = the_run(savedir)
    assert sorted(run.meta) == [0, 1]
    assert run.meta[0]["status"] in ("failed", "killed"), run.meta[0]
    assert run.meta[1]["status"] == "running"  # died without closing: nothing flushed it
    assert journal_counts(savedir, "journal")[1] == Counter()
    # Everything rank 0 logged before the crash point is in its journal: all of epoch 0,
    # and batch 0 of epoch 1 (its own loss is logged before the exchange with rank 1).
    assert [s for s, _ in run.metric("train/loss", rank=0)] == list(range(BATCHES + 1))
    assert [s for s, _ in run.metric("train/loss_mean", rank=0)][:BATCHES] == list(range(BATCHES))
    for key in ("epoch/loss_rank", "epoch/loss", "epoch/loss_max"):
        assert [s for s, _ in run.metric(key, rank=0)] == [0]


MISMATCH_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import torch, torch.distributed as dist
    from fanlog import JournalLogger
    from fanlog.aggregation import ReduceError

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = sys.argv[1]
    logger = JournalLogger(savedir=out, log_on_workers=-1).create_logger_context()
    logger.log(float(rank), "agreed", reduce="sum")
    try:  # rank 1 skips "a": its "b" meets rank 0's "a"
        if rank == 0:
            logger.log(1.0, "a", reduce="mean")
        logger.log(1.0, "b", reduce="mean")
    except ReduceError as exc:
        open(os.path.join(out, f"mismatch-{rank}.txt"), "w").write(str(exc))
    if rank == 0:  # rank 1 never calls "c": rank 0 must give up after the timeout
        started = time.monotonic()
        try:
            logger.log(1.0, "c", reduce="max")
        except ReduceError as exc:
            open(os.path.join(out, "timeout-0.txt"), "w").write(f"{time.monotonic() - started}\\n{exc}")
    else:
        time.sleep(5)
    logger.destroy_logger_context()
    """
)


def test_reduce_mismatch_and_timeout_name_the_metric(tmp_path):
    """A rank that skips a reduce= call: a clear error naming the metrics, or a timeout naming it.

    Two plain processes with torchrun's variables (RANK, WORLD_SIZE, MASTER_*), without
    torchrun's agent, which only adds start-up time here. No launcher run id either: each
    process generates its own, and rank 0's broadcast must make them one run."""
    from support.mlflow_server import free_port

    script = tmp_path / "mismatch.py"
    script.write_text(MISMATCH_SCRIPT)
    savedir = tmp_path / "out"
    savedir.mkdir()
    port = str(free_port())
    envs = [
        clean_env(
            RANK=str(r),
            LOCAL_RANK=str(r),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            FANLOG_REDUCE_TIMEOUT="2",
        )
        for r in range(2)
    ]
    command = [sys.executable, str(script), str(savedir)]
    results = run_group([command, command], envs, tmp_path, timeout=120)
    assert [code for code, _ in results] == [0, 0], "\n".join(out[-3000:] for _, out in results)
    for rank in (0, 1):
        text = (savedir / f"mismatch-{rank}.txt").read_text()
        assert "rank 0: 'a' call #0" in text and "rank 1: 'b' call #0" in text, text
        assert "Every rank must call" in text
    took, message = (savedir / "timeout-0.txt").read_text().split("\n", 1)
    assert 1.5 <= float(took) < 5, took
    assert "log('c', reduce='max')" in message and "did not complete within 2s" in message
    # The one exchange that matched was logged once per rank, with the sum over ranks.
    run = the_run(savedir)
    assert {r: run.metric("agreed", rank=r) for r in (0, 1)} == {0: [(0, 1.0)], 1: [(0, 1.0)]}


ONE_RANK_SCRIPT = textwrap.dedent(
    """
    import datetime, os, sys
    import torch, torch.distributed as dist
    from fanlog import JournalLogger

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
    rank = dist.get_rank()
    if rank == 0:  # as Accelerate calls its trackers: on the main process only
        job_id = "given-id" if sys.argv[2] == "job_id" else None
        logger = JournalLogger(savedir=sys.argv[1], job_id=job_id)
        with logger.start_logging():
            for step in range(5):
                logger.log(float(step), "loss", step=step)
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)  # the ranks' collectives are still paired
    with open(os.path.join(sys.argv[1], f"seen-by-{rank}.txt"), "w") as out:
        out.write(f"{os.environ.get('TORCHELASTIC_RUN_ID')} {float(total)}")
    dist.destroy_process_group()
    """
)


@pytest.mark.parametrize("given_as", ["job_id", "FANLOG_RUN_ID"])
def test_a_logger_opened_on_rank_0_only_with_a_known_run_id_needs_no_collective(tmp_path, given_as):
    """torchrun without --standalone (its rendezvous id is "none", so the launcher names no run),
    a process group initialised, and only rank 0 opening a logger, with its run id given. Only a
    generated id needs agreeing on: had rank 0 broadcast a given id, it would wait for rank 1,
    which never opens a logger, and the job would hang."""
    from support.mlflow_server import free_port

    script = tmp_path / "one_rank.py"
    script.write_text(ONE_RANK_SCRIPT)
    savedir = tmp_path / "mllogs"
    savedir.mkdir()
    launcher = ["-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2"]
    rendezvous = ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    command = [sys.executable, *launcher, *rendezvous, str(script), str(savedir), given_as]
    env = clean_env(FANLOG_RUN_ID="given-id") if given_as == "FANLOG_RUN_ID" else clean_env()
    [(code, out)] = run_group([command], [env], tmp_path, timeout=180)
    assert code == 0, out[-4000:]
    # each rank: the launcher named no run, and the sum over both ranks (1 + 2) came back
    assert [(savedir / f"seen-by-{r}.txt").read_text() for r in (0, 1)] == ["none 3.0"] * 2
    run = the_run(savedir)
    assert Path(run.paths[0]).parents[1].name == "given-id"
    assert sorted(run.meta) == [0] and run.meta[0]["status"] == "finished"
    assert run.metric("loss") == [(step, float(step)) for step in range(5)]


# ---------------------------------------------------------------------- in-process
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4, 1, "torchrun")),
        ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}, (5, 8, 1, "slurm")),
        ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "3"}, (2, 3, 2, "openmpi")),
        ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "0"}, (1, 2, 0, "mpich")),
        # mpirun inside a SLURM allocation: every process inherits SLURM_PROCID=0.
        (
            {
                "SLURM_PROCID": "0",
                "SLURM_NTASKS": "1",
                "OMPI_COMM_WORLD_RANK": "3",
                "OMPI_COMM_WORLD_SIZE": "4",
            },
            (3, 4, 3, "openmpi"),
        ),
        ({"RANK": "1"}, (1, 2, 1, "torchrun")),  # no size: at least rank + 1
        ({}, (0, 1, 0, "default")),
    ],
)
def test_placement_from_each_launcher(monkeypatch, env, expected):
    for name in LAUNCHER_VARIABLES + ("PMI_SIZE", "MPI_LOCALRANKID", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tuple(detect_placement()) == expected
    assert (detect_rank(), detect_world_size(), detect_local_rank()) == expected[:3]
    assert detect_rank(7) == 7


@pytest.fixture
def journal_logger(tmp_path, monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    logger = JournalLogger(savedir=tmp_path, log_freq="batch", log_on_workers=-1)
    logger.create_logger_context()
    yield logger
    logger.destroy_logger_context()


def test_on_epoch_logs_once_per_epoch_with_each_reduce_fx(journal_logger, tmp_path):
    """No record per batch; one per key at end_epoch, at step = epoch, batch_idx None."""
    logger = journal_logger
    values = {0: [3.0, 1.0, 2.0], 1: [5.0, 4.0]}
    for epoch, batch in values.items():
        for i, v in enumerate(batch):
            logger.log(v, "m/mean", batch_idx=i, on_epoch=True)
            logger.log(torch.tensor(v), "m/sum", batch_idx=i, on_epoch=True, reduce_fx="sum")
            logger.log(v, "m/max", batch_idx=i, on_epoch=True, reduce_fx="max")
            logger.log(torch.tensor(v), "m/min", batch_idx=i, on_epoch=True, reduce_fx="min")
        logger.flush()
        assert len(fanlog.read_run(tmp_path).metrics) == 4 * epoch  # only earlier epochs' values
        assert aggregation.pending(logger) == ["m/max", "m/mean", "m/min", "m/sum"]
        logger.end_epoch()
        assert aggregation.pending(logger) == []
    logger.flush()
    run = fanlog.read_run(tmp_path)
    for key, fx in (("m/mean", lambda b: sum(b) / len(b)), ("m/sum", sum), ("m/max", max), ("m/min", min)):
        assert run.metric(key) == [(e, pytest.approx(fx(b))) for e, b in values.items()], key
    assert {(m.epoch, m.batch_idx) for m in run.metrics} == {(0, None), (1, None)}


def test_on_epoch_value_passes_the_epoch_log_freq(tmp_path, monkeypatch):
    """log_freq='epoch' drops per-batch calls, but keeps the epoch aggregate of them."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    logger = JournalLogger(savedir=tmp_path, log_freq="epoch", log_on_workers=-1)
    with logger.start_logging():
        for i in range(4):
            logger.log(float(i), "loss", batch_idx=i)
            logger.log(float(i), "loss_epoch", batch_idx=i, on_epoch=True, step=10 + i)
        logger.end_epoch()
    run = fanlog.read_run(tmp_path)
    assert run.metric("loss") == []
    assert run.metric("loss_epoch") == [(13, 1.5)]  # the last step given, the mean


def test_reduce_without_process_group_logs_the_local_value(journal_logger, tmp_path):
    journal_logger.log(torch.tensor(2.5), "r", reduce="max")
    journal_logger.log(4, "r", reduce="sum", step=7)
    journal_logger.flush()
    assert fanlog.read_run(tmp_path).metric("r") == [(0, 2.5), (7, 4.0)]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reduce": "median"}, ValueError, "reduce='median'"),
        ({"on_epoch": 1}, TypeError, "on_epoch=1"),
        ({"on_epoch": True, "reduce_fx": "avg"}, ValueError, "reduce_fx='avg'"),
        ({"on_epoch": True, "kind": "text"}, ValueError, "metrics only"),
    ],
)
def test_bad_aggregation_options_are_named(journal_logger, kwargs, error, match):
    kind = kwargs.pop("kind", "metric")
    with pytest.raises(error, match=match):
        journal_logger.log(1.0 if kind == "metric" else "x", "k", kind=kind, **kwargs)


def test_changing_reduce_fx_within_an_epoch_is_an_error(journal_logger):
    journal_logger.log(1.0, "k", on_epoch=True)
    with pytest.raises(ValueError, match="differ from this epoch's earlier calls"):
        journal_logger.log(1.0, "k", on_epoch=True, reduce_fx="max")


@pytest.mark.parametrize(("fx", "expected"), [("mean", 0.875), ("sum", 3.5), ("max", 2.0), ("min", -0.5)])
def test_accumulator_mixes_tensors_and_floats_without_leaving_the_tensor(fx, expected):
    """The device path (tensors kept as tensors), run here with CPU tensors: the result
    stays a tensor, so on a GPU nothing would be copied to the host before end_epoch."""
    acc = aggregation.Accumulator(fx, None, "metric")
    for value in (torch.tensor(1.0, dtype=torch.float64), 2.0, torch.tensor(-0.5), 1.0):
        acc.add(value)
    result = acc.local()
    assert torch.is_tensor(result)
    assert float(result) == pytest.approx(expected)
    assert acc.count == 4


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_epoch_never_syncs_the_device_per_batch(journal_logger, tmp_path):
    """torch's sync debug mode raises on any synchronising call during the batches."""
    values = torch.rand(50, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(50):
            journal_logger.log(values[i], "gpu/mean", batch_idx=i, on_epoch=True)
            journal_logger.log(values[i], "gpu/max", batch_idx=i, on_epoch=True, reduce_fx="max")
        journal_logger.end_epoch()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    journal_logger.flush()
    run = fanlog.read_run(tmp_path)
    host = values.cpu().double()
    assert run.metric("gpu/mean") == [(0, pytest.approx(float(host.mean()), rel=1e-6))]
    assert run.metric("gpu/max") == [(0, pytest.approx(float(host.max()), rel=1e-6))]
