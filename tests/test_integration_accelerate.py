"""accelerate.Accelerator with FanlogTracker: a real training loop of a tiny GPT-2, read back.

Nothing is downloaded (`support.hf_tiny`). What fanlog stored is compared with what the
loop logged and with what Accelerate's own TensorBoard and MLflow trackers stored from the
same `accelerator.log` calls, read with TensorBoard's EventAccumulator and MLflow's client;
W&B is read from its offline transaction log. Multi-process runs use torchrun with gloo.
"""

from __future__ import annotations

import signal
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("accelerate")
pytest.importorskip("transformers")
from support.hf_tiny import RandomTokens, go_offline, tiny_gpt2  # noqa: E402
from support.readback import mlflow_run, tensorboard_scalars  # noqa: E402

go_offline()

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState, PartialState  # noqa: E402

from fanlog import JournalLogger, LoggersCollection, find_runs, read_run  # noqa: E402
from fanlog.integrations.accelerate import FanlogTracker  # noqa: E402
from test_wandb_backend import QUIET, offline_env, offline_runs  # noqa: E402, F401 (offline_env: autouse fixture)

CONFIG = {
    "lr": 1e-3,
    "layers": 1,
    "model": "gpt2",
    "amp": False,
    "schedule": None,
    "hub_token": "hf_do_not_leak_5",
}


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Accelerate keeps its state process-wide (a Trainer leaves some too): each test builds its
    Accelerator from scratch, as Accelerate's own tests do."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def train(accelerator: Accelerator, steps: int = 6) -> list[dict[str, Any]]:
    """A few optimizer steps of a tiny GPT-2, each logged with `accelerator.log`; returns the rows."""
    model = tiny_gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=CONFIG["lr"])
    loader = torch.utils.data.DataLoader(RandomTokens(4 * steps, 1, labels=False), batch_size=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    rows = []
    for step, batch in enumerate(loader):
        loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        row = {
            "train/loss": loss.item(),
            "lr": optimizer.param_groups[0]["lr"],
            "step_int": step * 10,
            "note": f"step {step}",
        }
        accelerator.log(row, step=step)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- against Accelerate's own
@pytest.mark.slow
def test_accelerate_matches_its_own_tensorboard_and_mlflow(tmp_path, mlflow_server, monkeypatch):
    """One loop logged by fanlog (journal, MLflow, TensorBoard, W&B) and by Accelerate's
    TensorBoard and MLflow trackers: same keys, steps and values; params as MLflow's tracker
    names them (fanlog redacts the token); runs FINISHED."""
    from fanlog import MLflowLogger, TensorBoardLogger, WandBLogger

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    savedir = tmp_path / "mllogs"
    trackers = LoggersCollection(
        [
            JournalLogger(savedir=savedir),
            MLflowLogger(
                savedir=savedir, tracking_uri=mlflow_server.url, experiment_name="fanlog-accelerate"
            ),
            TensorBoardLogger(savedir=savedir, logdir=str(tmp_path / "tb-fanlog")),
            WandBLogger(savedir=savedir, mode="offline", settings=QUIET),
        ],
        unsupported="ignore",
    )
    tracker = FanlogTracker(trackers)
    # fanlog first: its MLflow backend would join a run Accelerate's MLflow tracker had started.
    accelerator = Accelerator(
        log_with=[tracker, "tensorboard", "mlflow"], project_dir=str(tmp_path / "tb-own"), cpu=True
    )
    accelerator.init_trackers("accelerate-own", config=CONFIG)
    assert accelerator.get_tracker("fanlog") is tracker
    assert accelerator.get_tracker("fanlog", unwrap=True) is trackers and trackers.is_active
    rows = train(accelerator)
    accelerator.end_training()
    assert not trackers.is_active

    numbers = {
        key: [(step, row[key]) for step, row in enumerate(rows)] for key in ("train/loss", "lr", "step_int")
    }
    run = read_run(savedir)
    assert run.meta[0]["status"] == "finished"
    assert {m.key for m in run.metrics} == set(numbers)
    for key, series in numbers.items():
        assert run.metric(key) == series, key  # exact: float64 in the journal
    notes = [(r.step, r.value) for r in run.of_kind("text")]
    assert notes == [(step, row["note"]) for step, row in enumerate(rows)]
    assert run.params == {**CONFIG, "hub_token": "***REDACTED***"}

    ours, theirs = tensorboard_scalars(tmp_path / "tb-fanlog"), tensorboard_scalars(tmp_path / "tb-own")
    assert set(ours) == set(theirs) == set(numbers)
    for key, series in numbers.items():
        assert ours[key] == theirs[key], key
        assert ours[key] == [(s, pytest.approx(v, rel=1e-6)) for s, v in series], key

    their_run, their_metrics = mlflow_run(mlflow_server.url, "accelerate-own")
    our_run, our_metrics = mlflow_run(mlflow_server.url, "fanlog-accelerate")
    assert our_run.info.status == their_run.info.status == "FINISHED"
    assert (
        our_metrics
        == their_metrics
        == {k: [(s, pytest.approx(v)) for s, v in series] for k, series in numbers.items()}
    )
    assert their_run.data.params["hub_token"] == "hf_do_not_leak_5"  # Accelerate's tracker stores it
    assert our_run.data.params == {**their_run.data.params, "hub_token": "***REDACTED***"}

    (wandb_run,) = offline_runs(savedir)
    for key, series in numbers.items():
        assert wandb_run.series(key) == [(s, pytest.approx(v)) for s, v in series], key
    assert wandb_run.config()["lr"] == 1e-3 and wandb_run.config()["hub_token"] == "***REDACTED***"


# ---------------------------------------------------------------------- what log() does with values
def test_log_forms_steps_dicts_images_and_odd_values(tmp_path):
    """No step: each key counts its calls. A dict of numbers: one metric per entry. Images as
    kind="image". Values fanlog cannot store: skipped with one warning each, the rest logged."""
    savedir = tmp_path / "mllogs"
    accelerator = Accelerator(log_with=[FanlogTracker(JournalLogger(savedir=savedir))], cpu=True)
    accelerator.init_trackers("forms")
    tracker = accelerator.get_tracker("fanlog")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            accelerator.log(
                {
                    "a": 1.0,
                    "pair": {"x": 1, "y": torch.tensor(2.5)},
                    "bad": [1, 2],
                    "worse": torch.ones(2),
                    "np": np.float32(0.25),
                }
            )
        accelerator.log({"a": 5.0}, step=10)
        accelerator.log({"a": 6.0})
        tracker.log_images({"samples": np.zeros((2, 3, 4, 4), dtype=np.float32)}, step=7)
    accelerator.end_training()

    skipped = sorted(str(w.message).split("'")[1] for w in caught if "is not logged" in str(w.message))
    assert skipped == ["bad", "worse"]
    run = read_run(savedir)
    assert run.metric("a") == [(0, 1.0), (1, 1.0), (2, 1.0), (10, 5.0), (11, 6.0)]
    assert run.metric("pair/x") == [(0, 1.0), (1, 1.0), (2, 1.0)]
    assert run.metric("pair/y") == [(0, 2.5), (1, 2.5), (2, 2.5)]
    assert run.metric("np") == [(0, 0.25), (1, 0.25), (2, 0.25)]
    assert not {"bad", "worse"} & {r.key for r in run.records}
    (image,) = run.of_kind("image")
    assert (image.key, image.step) == ("samples", 7)


def test_log_kwargs_reach_fanlog_and_its_log_freq(tmp_path):
    """`log_kwargs={"fanlog": {"batch_idx": i}}` makes each member's log_freq apply: the journal
    keeps every batch, one TensorBoard every second batch, one only epoch-level values."""
    from fanlog import TensorBoardLogger

    trackers = LoggersCollection(
        [
            JournalLogger(log_freq="batch"),
            TensorBoardLogger(log_freq=2, logdir=str(tmp_path / "tb-every-2")),
            TensorBoardLogger(log_freq="epoch", logdir=str(tmp_path / "tb-epochs")),
        ],
        savedir=tmp_path / "mllogs",
    )
    accelerator = Accelerator(log_with=[FanlogTracker(trackers)], cpu=True)
    accelerator.init_trackers("freq")
    for i in range(6):
        accelerator.log({"loss": float(i)}, step=i, log_kwargs={"fanlog": {"batch_idx": i}})
    accelerator.log({"epoch_loss": 1.0}, step=0)
    accelerator.end_training()
    assert [s for s, _ in read_run(tmp_path / "mllogs").metric("loss")] == [0, 1, 2, 3, 4, 5]
    assert tensorboard_scalars(tmp_path / "tb-every-2") == {
        "loss": [(0, 0.0), (2, 2.0), (4, 4.0)],
        "epoch_loss": [(0, 1.0)],
    }
    assert tensorboard_scalars(tmp_path / "tb-epochs") == {"epoch_loss": [(0, 1.0)]}


# ---------------------------------------------------------------------- configs, bad input, ownership
def test_tracker_from_a_config_path_a_dict_or_fanlog_config(tmp_path, monkeypatch):
    path = tmp_path / "loggers.yaml"
    path.write_text(f"savedir: {tmp_path / 'from-yaml'}\nloggers:\n  - type: journal\n")
    monkeypatch.setenv("FANLOG_CONFIG", str(path))
    from_dict = FanlogTracker({"type": "journal", "savedir": str(tmp_path / "from-dict")})
    assert from_dict.tracker.savedir == str(tmp_path / "from-dict")
    from_env = FanlogTracker().tracker
    assert (from_env.savedir, [type(m).__name__ for m in from_env.members()]) == (
        str(tmp_path / "from-yaml"),
        ["JournalLogger"],
    )
    accelerator = Accelerator(log_with=[FanlogTracker(str(path))], cpu=True)
    accelerator.init_trackers("from-yaml", config={"lr": 0.1})
    accelerator.log({"loss": 0.5}, step=3)
    accelerator.end_training()
    run = read_run(tmp_path / "from-yaml")
    assert (run.metric("loss"), run.params, run.meta[0]["status"]) == ([(3, 0.5)], {"lr": 0.1}, "finished")


@pytest.mark.parametrize(
    ("source", "error", "words"),
    [
        (3.5, TypeError, ["FanlogTracker", "float"]),
        ({1, 2}, TypeError, ["FanlogTracker", "set"]),
        ({"loggers": [{"type": "mlfow"}]}, ValueError, ["mlfow"]),
    ],
)
def test_bad_logger_sources_name_what_was_expected(source, error, words):
    with pytest.raises(error) as caught:
        FanlogTracker(source)
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_a_logger_the_user_started_is_only_flushed(tmp_path):
    savedir = tmp_path / "mllogs"
    logger = JournalLogger(savedir=savedir)
    with logger.start_logging():
        accelerator = Accelerator(log_with=[FanlogTracker(logger)], cpu=True)
        accelerator.init_trackers("mine")
        accelerator.log({"loss": 1.5}, step=0)
        accelerator.end_training()
        assert logger.is_active and read_run(savedir).metric("loss") == [(0, 1.5)]  # flushed, still open
    assert read_run(savedir).meta[0]["status"] == "finished"


# ---------------------------------------------------------------------- real processes
@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "what", "status"),
    [
        pytest.param("--fail-at", 3, "failed", id="exception"),
        pytest.param("signal", signal.SIGTERM, "killed", id="sigterm"),
        pytest.param("signal", signal.SIGINT, "killed", id="ctrl-c"),
    ],
)
def test_run_status_follows_how_the_loop_ended(tmp_path, how, what, status):
    from support.hf_launch import interrupt_job, run_job

    config = {"type": "journal", "savedir": str(tmp_path / "mllogs")}
    if how == "signal":
        code = interrupt_job(tmp_path, "accelerate", config, what)
        assert code in (-what, 128 + what, 1), code
    else:
        done = run_job(tmp_path, "accelerate", config, how, str(what))
        assert done.returncode == 1 and "boom at step 3" in done.stderr, done.stderr[-2000:]
    run = read_run(tmp_path / "mllogs")
    assert run.meta[0]["status"] == status and run.meta[0].get("ended") is not None
    if how != "signal":
        assert [s for s, _ in run.metric("train/loss")] == [1, 2, 3]


@pytest.mark.slow
def test_torchrun_main_process_only(tmp_path):
    """Default main_process_only=True: only the main process opens a run, even for a journal with
    log_on_workers=-1 and tracker.log called on every process; no collective is waited for."""
    from support.hf_launch import run_job

    savedir = tmp_path / "mllogs"
    done = run_job(
        tmp_path,
        "accelerate",
        {"type": "journal", "savedir": str(savedir), "log_on_workers": -1},
        "--steps",
        "4",
        nproc=2,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = find_runs(savedir)
    run = read_run(run_dir)
    assert list(run.meta) == [0] and run.meta[0]["status"] == "finished" and run.meta[0]["world_size"] == 2
    assert [s for s, _ in run.metric("train/loss")] == [1, 2, 3, 4]
    assert run.metric("rank/index") == [(s, 0.0) for s in (1, 2, 3, 4)]
    assert run.params == {"lr": 1e-3, "steps": 4}


@pytest.mark.slow
def test_torchrun_every_process_with_a_shared_run_id(tmp_path):
    """main_process_only=False: each process logs what it calls the tracker with, as its rank,
    in one run (FANLOG_RUN_ID); Accelerator.log still reaches the main process only."""
    from support.hf_launch import run_job

    savedir = tmp_path / "mllogs"
    done = run_job(
        tmp_path,
        "accelerate",
        {"type": "journal", "savedir": str(savedir), "log_on_workers": -1},
        "--steps",
        "4",
        "--every-process",
        nproc=2,
        FANLOG_RUN_ID="shared-7",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [Path(p).name for p in find_runs(savedir)] == ["shared-7"]
    run = read_run(savedir / "runs" / "shared-7")
    assert sorted(run.meta) == [0, 1] and all(m["status"] == "finished" for m in run.meta.values())
    for rank in (0, 1):
        assert run.metric("rank/index", rank=rank) == [(s, float(rank)) for s in (1, 2, 3, 4)]
        assert [s for s, _ in run.metric("rank/loss", rank=rank)] == [1, 2, 3, 4]
    assert [s for s, _ in run.metric("train/loss", rank=0)] == [1, 2, 3, 4]
    assert run.metric("train/loss", rank=1) == []


def test_a_single_process_needs_no_run_id_from_outside(tmp_path, monkeypatch):
    """One process: the run id is fanlog's own (no FANLOG_RUN_ID is set for it)."""
    monkeypatch.delenv("FANLOG_RUN_ID", raising=False)
    tracker = FanlogTracker(JournalLogger(savedir=tmp_path / "mllogs", job_id="mine-1"))
    accelerator = Accelerator(log_with=[tracker], cpu=True)
    accelerator.init_trackers("one")
    assert PartialState().num_processes == 1
    accelerator.end_training()
    assert [Path(p).name for p in find_runs(tmp_path / "mllogs")] == ["mine-1"]
