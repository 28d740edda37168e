"""The delivery agent with real processes: a training process (tests/support/agent_trainer.py)
logs to a real `mlflow server` and to TensorBoard through the agent, and is ended normally,
killed with SIGKILL, or has its agent killed; what each tracker stored is read back with the
tracker's own reader and counted against the journal.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")

from fanlog.journal import Journal  # noqa: E402
from support.mlflow_server import MlflowServer, free_port  # noqa: E402
from support.readback import mlflow_run, tensorboard_scalars  # noqa: E402

pytestmark = pytest.mark.slow

TRAINER = Path(__file__).parent / "support" / "agent_trainer.py"
WAIT = 120.0
"""Longest a test waits for a process to report or to exit (a loaded machine is slow)."""


class Trainer:
    """One training process and what it reported."""

    def __init__(self, tmp_path: Path, url: str, then: str, count: int, **spec: Any) -> None:
        self.experiment = f"agent-{uuid.uuid4().hex[:8]}"
        self.savedir = tmp_path / "logs"
        spec = {
            "url": url,
            "experiment": self.experiment,
            "savedir": str(self.savedir),
            "delivery": "agent",
            "count": count,
            "then": then,
            **spec,
        }
        self.process = subprocess.Popen(
            [sys.executable, str(TRAINER), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(tmp_path / "trainer.err", "ab"),  # noqa: SIM115
            text=True,
            cwd=tmp_path,
        )
        self.stderr = tmp_path / "trainer.err"

    def report(self) -> dict[str, Any]:
        """The next line the trainer prints."""
        stdout = self.process.stdout
        assert stdout is not None
        while True:  # a tracker's own prints (MLflow's "View run") are not reports
            ready, _, _ = select.select([stdout], [], [], WAIT)
            line = stdout.readline() if ready else ""
            assert line, f"the trainer printed nothing; its stderr:\n{self.stderr.read_text()[-3000:]}"
            if line.startswith("{"):
                return dict(json.loads(line))

    def send(self, line: str = "go") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self) -> dict[str, Any]:
        """Close its stdin (the end of a ``wait`` trainer), read its last report, reap it."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        last = self.report()
        assert self.process.wait(WAIT) == 0, self.stderr.read_text()[-3000:]
        return last

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(WAIT)

    def tensorboard(self) -> int:
        return len(tensorboard_scalars(self.savedir / "tb").get("loss", []))


def journal_count(path: str) -> int:
    journal = Journal(path)
    try:
        return journal.committed()
    finally:
        journal.close()


def journal_health(path: str) -> dict[str, dict[str, Any]]:
    journal = Journal(path)
    try:
        return journal.health()
    finally:
        journal.close()


def exited(pid: int, timeout: float = WAIT, reaped: bool = False) -> bool:
    """Wait until process `pid` has exited (gone, or a zombie nobody reaped yet); with
    `reaped`, until it is gone (its parent reaped it: it did not stay a zombie)."""
    ended = (None,) if reaped else (None, "Z", "X")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_state(pid) in ended:
            return True
        time.sleep(0.1)
    return False


def wait_for(condition: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def process_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def stored(url: str, trainer: Trainer) -> tuple[str, list[tuple[int, float]]]:
    run, histories = mlflow_run(url, trainer.experiment)
    return run.info.status, histories.get("loss", [])


# ------------------------------------------------------------------------- a normal end
@pytest.mark.parametrize("count", [1, 250, 3000])
def test_a_normal_end_delivers_everything_and_no_tracker_enters_the_trainer(
    mlflow_server: MlflowServer, tmp_path: Path, count: int
) -> None:
    trainer = Trainer(tmp_path, mlflow_server.url, "destroy", count)
    flushed, ended = trainer.report(), trainer.report()
    assert trainer.process.wait(WAIT) == 0
    assert flushed["delivery"] == "agent" and flushed["flushed"] is True and ended["ended"] is True
    assert flushed["imported"] == [] and ended["imported"] == []  # no tracker in the trainer
    status, series = stored(mlflow_server.url, trainer)
    assert status == "FINISHED"
    assert series == [(i, float(i)) for i in range(count)]
    assert trainer.tensorboard() == count == journal_count(flushed["journal"])
    assert exited(flushed["agent_pid"], reaped=True)
    assert {h["state"] for h in journal_health(flushed["journal"]).values()} == {"closed"}


# ------------------------------------------------------------------------- kill -9 of the trainer
@pytest.mark.parametrize("then", ["destroy-never", "hang", "stream"])
def test_kill_9_of_the_trainer_needs_no_manual_sync(
    mlflow_server: MlflowServer, tmp_path: Path, then: str
) -> None:
    """After a flush, before any flush, and while logging: the agent delivers what the
    journal holds and closes the trackers' runs as killed."""
    trainer = Trainer(tmp_path, mlflow_server.url, "wait" if then == "destroy-never" else then, 500)
    first = trainer.report()
    if then != "destroy-never":  # no flush(): wait until the journal writer committed them
        wait_for(lambda: journal_count(first["journal"]) >= 500)
    trainer.kill()  # when streaming, records keep arriving until it dies
    assert exited(first["agent_pid"]), "the agent did not finish after its trainer died"
    count = journal_count(first["journal"])
    assert count >= 500
    status, series = stored(mlflow_server.url, trainer)
    assert status == "KILLED"
    assert series == [(i, float(i)) for i in range(count)]
    assert trainer.tensorboard() == count


# ------------------------------------------------------------------------- kill -9 of the agent
@pytest.mark.parametrize("kills", [1, 2])
def test_kill_9_of_the_agent_is_noticed_and_nothing_is_lost(
    mlflow_server: MlflowServer, tmp_path: Path, kills: int
) -> None:
    trainer = Trainer(tmp_path, mlflow_server.url, "wait", 200)
    report = trainer.report()
    killed = []
    for _ in range(kills):
        os.kill(report["agent_pid"], signal.SIGKILL)
        killed.append(report["agent_pid"])
        assert exited(report["agent_pid"], reaped=True)  # the trainer reaped it: no zombie
        trainer.send()
        report = trainer.report()
        assert report["flushed"] is True
    last = trainer.finish()
    assert last["ended"] is True and last["restarts"] == kills
    assert last["agent_pid"] not in killed
    status, series = stored(mlflow_server.url, trainer)  # one MLflow run: the restart resumed it
    assert status == "FINISHED"
    assert series == [(i, float(i)) for i in range(200 * (kills + 1))]
    assert trainer.tensorboard() == 200 * (kills + 1) == journal_count(last["journal"])


# ------------------------------------------------------------------------- tracker down, then up
@pytest.mark.parametrize("down_from", ["the start", "the second batch"])
def test_a_tracker_down_then_up_gets_everything(start_server: Any, tmp_path: Path, down_from: str) -> None:
    server: MlflowServer = start_server("own")
    if down_from == "the start":
        server.stop()
    trainer = Trainer(tmp_path, server.url, "wait", 100, flush_timeout=3)
    first = trainer.report()
    if down_from == "the start":
        assert first["flushed"] is False
    else:
        flush_until_delivered(trainer, first)
        server.stop()
        trainer.send()
        assert trainer.report()["flushed"] is False
    server.start()
    flush_until_delivered(trainer, {"flushed": False})
    last = trainer.finish()
    status, series = stored(server.url, trainer)
    assert status == "FINISHED"
    assert series == [(i, float(i)) for i in range(last["step"])]
    assert trainer.tensorboard() == last["step"] == journal_count(last["journal"])


def flush_until_delivered(trainer: Trainer, report: dict[str, Any]) -> None:
    """Log and flush (up to 3 s each) again until a flush says everything is delivered (the
    agent's first import of the tracker, or its backoff, may take longer)."""
    deadline = time.monotonic() + WAIT
    while not report["flushed"]:
        assert time.monotonic() < deadline, "never delivered"
        trainer.send()
        report = trainer.report()


# ------------------------------------------------------------------------- flush() in both modes
@pytest.mark.parametrize("delivery", ["agent", "thread"])
@pytest.mark.parametrize("count", [1, 700])
def test_flush_means_delivered_in_both_modes(
    mlflow_server: MlflowServer, tmp_path: Path, delivery: str, count: int
) -> None:
    from mlflow import MlflowClient

    from fanlog import LoggersCollection, MLflowLogger, TensorBoardLogger

    experiment = f"flush-{uuid.uuid4().hex[:8]}"
    mlflow_logger = MLflowLogger(
        experiment_name=experiment, tracking_uri=mlflow_server.url, savedir=tmp_path, log_freq="batch"
    )
    logger = LoggersCollection(
        [mlflow_logger, TensorBoardLogger(savedir=tmp_path / "tb", log_freq="batch")], delivery=delivery
    )
    logger.create_logger_context()
    try:
        for i in range(count):
            logger.log(float(i), "loss", step=i)
        assert logger.flush(WAIT) is True
        # No waiting from here: flush() returned, so both trackers hold every record.
        run_id = mlflow_logger.mlflow_run_id
        assert run_id is not None
        assert len(MlflowClient(mlflow_server.url).get_metric_history(run_id, "loss")) == count
        assert len(tensorboard_scalars(tmp_path / "tb").get("loss", [])) == count
    finally:
        assert logger.destroy_logger_context() is True


@pytest.mark.parametrize("delivery", ["agent", "thread"])
def test_flush_reports_a_tracker_that_is_down_in_both_modes(tmp_path: Path, delivery: str) -> None:
    from fanlog import MLflowLogger

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    logger = MLflowLogger(
        experiment_name="down",
        tracking_uri=url,
        savedir=tmp_path,
        log_freq="batch",
        delivery=delivery,
        down_after=1.0,
        close_timeout=2.0,
        agent_linger=2.0,
    )  # the agent gives up soon after destroy
    logger.create_logger_context()
    for i in range(50):
        logger.log(float(i), "loss", step=i)
    assert logger.flush(0.5) is False  # not delivered yet, and not down for long enough
    assert logger.flush(WAIT) is False  # down: flush() stops waiting, and says so
    path = logger.journal_path
    assert logger.destroy_logger_context() is False
    assert journal_count(str(path)) == 50  # kept for `fanlog sync`


# ------------------------------------------------------------------------- an orphaned agent
@pytest.mark.parametrize("count", [0, 40])
def test_an_orphaned_agent_with_a_dead_tracker_gives_up_and_exits(tmp_path: Path, count: int) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    trainer = Trainer(tmp_path, url, "hang", count, options={"agent_linger": 2.0})
    first = trainer.report()
    wait_for(lambda: journal_count(first["journal"]) >= count)
    trainer.kill()
    assert exited(first["agent_pid"]), "an orphaned agent did not give up"
    health = journal_health(first["journal"])
    assert health["mlflow"]["state"] == "gave_up"
    assert journal_count(first["journal"]) == count  # nothing lost: left for `fanlog sync`


# ------------------------------------------------------------------------- fanlog sync --follow
def fanlog_command(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fanlog.cli", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.parametrize("batches", [1, 3])
def test_sync_follow_delivers_a_live_run_as_it_goes(
    mlflow_server: MlflowServer, tmp_path: Path, batches: int
) -> None:
    """The trainer delivers to MLflow and TensorBoard from threads; `fanlog sync --follow`
    delivers the same live journal to a second TensorBoard directory by hand."""
    trainer = Trainer(tmp_path, mlflow_server.url, "wait", 150, delivery="thread")
    first = trainer.report()
    rank_dir = str(Path(first["journal"]).parent)
    follow = fanlog_command(
        "sync",
        rank_dir,
        "--to",
        "tensorboard",
        "--follow",
        "--logdir",
        str(tmp_path / "followed"),
        "--cursor",
        "by-hand",
        cwd=tmp_path,
    )
    wait_for(lambda: "by-hand" in journal_health(first["journal"]))  # it follows the live run
    for _ in range(batches - 1):
        trainer.send()
        trainer.report()
    last = trainer.finish()
    output, _ = follow.communicate(timeout=WAIT)
    assert follow.returncode == 0, output
    assert "everything delivered" in output
    followed = tensorboard_scalars(tmp_path / "followed").get("loss", [])
    assert followed == [(i, float(i)) for i in range(last["step"])] and last["step"] == 150 * batches


@pytest.mark.parametrize("host", ["login-node", "other.cluster.example"])
def test_sync_follow_refuses_a_live_journal_of_another_host(
    mlflow_server: MlflowServer, tmp_path: Path, host: str
) -> None:
    trainer = Trainer(tmp_path, mlflow_server.url, "hang", 20)
    first = trainer.report()
    wait_for(lambda: journal_count(first["journal"]) >= 20)
    trainer.kill()
    assert exited(first["agent_pid"])
    journal = Journal(first["journal"])
    try:  # as a login node sees a journal that a compute node writes (or wrote, and died)
        journal.set_meta({"host": host, "status": "running"})
    finally:
        journal.close()
    follow = fanlog_command(
        "sync",
        first["journal"],
        "--to",
        "tensorboard",
        "--follow",
        "--logdir",
        str(tmp_path / "followed"),
        cwd=tmp_path,
    )
    output, _ = follow.communicate(timeout=WAIT)
    assert follow.returncode != 0
    assert f"can be followed only on {host!r}" in output
    assert not (tmp_path / "followed").exists()
    assert journal_count(first["journal"]) == 20


# ------------------------------------------------------------------------- torchrun, 2 ranks
@pytest.mark.parametrize("tensorboard_workers", [[0, 1], [0]])
def test_torchrun_two_ranks_one_agent_per_rank_with_trackers(
    mlflow_server: MlflowServer, tmp_path: Path, tensorboard_workers: list[int]
) -> None:
    """Rank 0 logs to MLflow and TensorBoard; rank 1 to TensorBoard, or only to its journal
    (then it starts no agent)."""
    pytest.importorskip("torch")
    from support.agent_ddp import COUNT

    experiment = f"ddp-agent-{uuid.uuid4().hex[:8]}"
    savedir = tmp_path / "logs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(Path(__file__).parent / "support" / "agent_ddp.py"),
        "--savedir",
        str(savedir),
        "--tracking-uri",
        mlflow_server.url,
        "--experiment",
        experiment,
        "--tensorboard-workers",
        json.dumps(tensorboard_workers),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    lines = [line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    reports = {r["rank"]: r for r in map(json.loads, lines)}
    assert sorted(reports) == [0, 1] and all(r["ended"] for r in reports.values())
    assert all(r["imported"] == [] for r in reports.values())
    assert reports[0]["agent_pid"] is not None
    assert (reports[1]["agent_pid"] is not None) == (1 in tensorboard_workers)
    run, histories = mlflow_run(mlflow_server.url, experiment)
    assert run.info.status == "FINISHED"
    assert histories["loss"] == [(i, float(i)) for i in range(COUNT)]
    scalars = {p.parent.name: p.parent for p in (savedir / "tensorboard").rglob("events.out.tfevents.*")}
    for rank in tensorboard_workers:
        folder = scalars[f"rank-{rank}"] if len(tensorboard_workers) > 1 else next(iter(scalars.values()))
        assert tensorboard_scalars(folder)["loss"] == [(i, float(rank * 10_000 + i)) for i in range(COUNT)]


# ------------------------------------------------------------------------- what cannot travel
@pytest.mark.parametrize("records", [0, 5])
def test_wandb_watch_with_the_agent_is_a_clear_error_and_loses_nothing(tmp_path: Path, records: int) -> None:
    pytest.importorskip("wandb")
    torch = pytest.importorskip("torch")
    from fanlog import WandBLogger

    logger = WandBLogger(
        savedir=tmp_path, mode="offline", log_freq="batch", delivery="agent", agent_linger=2.0
    )
    logger.create_logger_context()
    for i in range(records):
        logger.log(float(i), "loss", step=i)
    with pytest.raises(RuntimeError, match="delivery='thread'"):
        logger.watch(torch.nn.Linear(2, 1))
    logger.log(1.0, "after", step=0)
    path = str(logger.journal_path)
    assert logger.destroy_logger_context() is True
    assert journal_count(path) == records + 1
