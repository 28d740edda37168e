"""transformers.Trainer with FanlogCallback: real training of a tiny BERT, read back from each tracker.

Nothing is downloaded: the model is built from a config with 8 hidden units, the data are
random token ids (`support.hf_tiny`). What fanlog stored is compared with what the
Trainer logged (`state.log_history`) and with what transformers' own MLflow and
TensorBoard callbacks stored from the same training, read with MLflow's client and
TensorBoard's EventAccumulator; W&B is read from its offline transaction log.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
from support.hf_tiny import RandomTokens, go_offline, tiny_bert, training_arguments  # noqa: E402
from support.readback import files_containing, mlflow_run, tensorboard_scalars  # noqa: E402

go_offline()

import torch  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402

from fanlog import JournalLogger, LoggersCollection, find_runs, read_run  # noqa: E402
from fanlog.integrations.transformers import FanlogCallback, sectioned  # noqa: E402
from test_wandb_backend import QUIET, offline_env, offline_runs  # noqa: E402, F401 (offline_env: autouse fixture)

SECRET_KEYS = ("hub_token", "api_key", "password", "wandb_token")


def make_trainer(tmp_path: Path, callbacks: list[Any], **overrides: Any) -> Trainer:
    args = training_arguments(str(tmp_path / "out"), **overrides)
    return Trainer(
        model=tiny_bert(),
        args=args,
        train_dataset=RandomTokens(64, 1),
        eval_dataset=RandomTokens(16, 2),
        callbacks=callbacks,
    )


def sectioned_key(key: str) -> str:
    (name,) = sectioned({key: None})
    return name


def logged_by_trainer(trainer: Trainer) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per Trainer key, from the Trainer's own record of its log calls."""
    found: dict[str, list[tuple[int, float]]] = {}
    for entry in trainer.state.log_history:
        for key, value in entry.items():
            if key != "step":
                found.setdefault(key, []).append((entry["step"], value))
    return found


# ---------------------------------------------------------------------- against transformers' own
@pytest.fixture
def restore_mlflow_experiment(monkeypatch):
    """MLflow's callback calls ``mlflow.set_experiment``, which sets a process-wide experiment
    id and ``MLFLOW_EXPERIMENT_ID``; later tests (other stores) must not inherit them."""
    from mlflow.tracking import fluent

    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    before = os.environ.get("MLFLOW_EXPERIMENT_ID")
    yield
    if before is None:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    else:
        os.environ["MLFLOW_EXPERIMENT_ID"] = before


@pytest.mark.slow
@pytest.mark.usefixtures("restore_mlflow_experiment")
def test_trainer_matches_transformers_own_mlflow_and_tensorboard(tmp_path, mlflow_server, monkeypatch):
    """One training, logged by fanlog (journal, MLflow, TensorBoard, W&B) and by transformers'
    MLflowCallback and TensorBoardCallback: same keys (fanlog's sectioned like TensorBoard's),
    same steps, same values; params as MLflow's callback names them; checkpoints; FINISHED."""
    from fanlog import MLflowLogger, TensorBoardLogger, WandBLogger

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hf-own-trainer")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb-hf"))
    savedir = tmp_path / "mllogs"
    trackers = LoggersCollection(
        [
            JournalLogger(savedir=savedir),
            MLflowLogger(savedir=savedir, tracking_uri=mlflow_server.url, experiment_name="fanlog-trainer"),
            TensorBoardLogger(savedir=savedir, logdir=str(tmp_path / "tb-fanlog")),
            WandBLogger(savedir=savedir, mode="offline", settings=QUIET),
        ],
        unsupported="ignore",
    )
    trainer = make_trainer(
        tmp_path,
        [FanlogCallback(trackers, log_model="all")],
        report_to=["mlflow", "tensorboard"],
        hub_token="hf_do_not_leak_1",
    )
    # MLflow's callback starts a process-wide MLflow run; fanlog's MLflow backend would attach to
    # an active run (by design), so it runs after ours. PrinterCallback pops `total_flos` from
    # the log dict it prints, so it goes last, as in a Trainer without our callback.
    from transformers.integrations import MLflowCallback
    from transformers.trainer_callback import PrinterCallback

    for callback in (MLflowCallback, PrinterCallback):
        trainer.add_callback(trainer.pop_callback(callback))
    trainer.train()

    by_trainer = logged_by_trainer(trainer)
    expected = {sectioned_key(key): series for key, series in by_trainer.items()}
    assert {
        "train/loss",
        "train/grad_norm",
        "train/learning_rate",
        "train/epoch",
        "eval/loss",
        "train/train_loss",
        "train/total_flos",
    } <= set(expected)
    assert [s for s, _ in expected["train/loss"]] == [2, 4, 6, 8, 10]
    assert [s for s, _ in expected["eval/loss"]] == [5, 10]

    # the journal: every value at its step, exactly (float64)
    run = read_run(savedir)
    assert run.meta[0]["status"] == "finished"
    assert {m.key for m in run.metrics} == set(expected)
    for key, series in expected.items():
        assert run.metric(key) == series, key

    # TensorBoard: fanlog's event files hold what transformers' TensorBoardCallback wrote, tag by
    # tag (both store float32); the callback also writes its args/config texts, not scalars.
    ours, theirs = tensorboard_scalars(tmp_path / "tb-fanlog"), tensorboard_scalars(tmp_path / "tb-hf")
    assert set(ours) == set(theirs) == set(expected)
    for key, series in expected.items():
        assert ours[key] == theirs[key], key
        assert [s for s, _ in ours[key]] == [s for s, _ in series]
        assert [v for _, v in ours[key]] == pytest.approx([v for _, v in series], rel=1e-6)

    # MLflow: the same histories under the Trainer's raw keys (MLflow's callback) and fanlog's
    # sectioned keys; the same param names, values equal up to how nested values are written.
    their_run, their_metrics = mlflow_run(mlflow_server.url, "hf-own-trainer")
    our_run, our_metrics = mlflow_run(mlflow_server.url, "fanlog-trainer")
    assert our_run.info.status == their_run.info.status == "FINISHED"
    assert set(their_metrics) == set(by_trainer)
    assert {sectioned_key(k): v for k, v in their_metrics.items()} == our_metrics
    for key, series in expected.items():
        assert our_metrics[key] == [(s, pytest.approx(v)) for s, v in series], key
    check_params_match_mlflow_callback(our_run.data.params, their_run.data.params)
    assert files_containing(tmp_path / "mllogs", "hf_do_not_leak_1") == []

    # W&B (offline): each metric at its step, params in the config
    (wandb_run,) = offline_runs(savedir)
    for key, series in expected.items():
        assert wandb_run.series(key) == [(s, pytest.approx(v)) for s, v in series], key
    config = wandb_run.config()
    assert config["learning_rate"] == 5e-05 and config["hidden_size"] == 8
    assert config["hub_token"] == "***REDACTED***"

    # log_model="all": each checkpoint directory, at its step, in the journal and in MLflow
    artifacts = run.of_kind("artifact")
    assert [(a.key, a.step) for a in artifacts] == [(f"checkpoints/checkpoint-{s}", s) for s in (5, 10)]
    for record in artifacts:
        assert {"config.json", "model.safetensors"} <= set(os.listdir(record.value))
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    stored = {f.path for f in client.list_artifacts(our_run.info.run_id, "checkpoints/checkpoint-10")}
    assert "checkpoints/checkpoint-10/model.safetensors" in stored


def check_params_match_mlflow_callback(ours: dict[str, str], theirs: dict[str, str]) -> None:
    """Same names; equal values, except that fanlog writes a nested value as JSON (MLflow's
    callback as a Python repr) and redacts secret-looking keys."""
    assert set(ours) == set(theirs)
    assert len(ours) > 100  # the model config and every training argument
    redacted = 0
    for key, value in ours.items():
        if value == "***REDACTED***":
            redacted += 1
            continue
        if value != theirs[key]:
            assert json.loads(value) == json.loads(json.dumps(ast.literal_eval(theirs[key]))), key
    assert ours["hub_token"] == "***REDACTED***" and theirs["hub_token"] == "<HUB_TOKEN>"
    assert (ours["learning_rate"], ours["hidden_size"], ours["max_steps"]) == ("5e-05", "8", "10")
    assert redacted < 10


# ---------------------------------------------------------------------- keys, evaluate, predict
def test_raw_keys_and_logging_after_training_reopen_the_run(tmp_path):
    """section_keys=False keeps the Trainer's keys; evaluate() and predict() after train() log
    into the same run (reopened), at the global step; predict's metrics are test_* keys."""
    savedir = tmp_path / "mllogs"
    callback = FanlogCallback(JournalLogger(savedir=savedir), section_keys=False)
    trainer = make_trainer(tmp_path, [callback])
    trainer.train()
    assert not callback.logger.is_active  # closed when training ended
    assert read_run(savedir).meta[0]["status"] == "finished"
    trainer.evaluate()
    trainer.predict(RandomTokens(8, 3))
    callback.logger.destroy_logger_context()

    assert len(find_runs(savedir)) == 1
    run = read_run(savedir)
    assert run.meta[0]["status"] == "finished"
    by_trainer = logged_by_trainer(trainer)
    predicted = {"test_loss", "test_runtime", "test_samples_per_second", "test_steps_per_second"}
    assert {m.key for m in run.metrics} == set(by_trainer) | predicted
    for key, series in by_trainer.items():
        assert run.metric(key) == series, key
    assert [s for s, _ in run.metric("eval_loss")] == [5, 10, 10]  # the last one from evaluate()
    assert [s for s, _ in run.metric("test_loss")] == [10]
    params = [r for r in run.of_kind("param") if r.key == "learning_rate"]
    assert len(params) == 1  # params are logged once per run, not again when it reopens


def test_epochs_follow_the_trainer(tmp_path):
    """One epoch is 16 steps here: records after on_epoch_end carry epoch 1."""
    savedir = tmp_path / "mllogs"
    trainer = make_trainer(
        tmp_path,
        [FanlogCallback(JournalLogger(savedir=savedir))],
        max_steps=20,
        logging_steps=4,
        eval_strategy="no",
        save_strategy="no",
    )
    trainer.train()
    losses = [r for r in read_run(savedir).records if r.key == "train/loss"]
    assert [(r.step, r.epoch) for r in losses] == [(4, 0), (8, 0), (12, 0), (16, 0), (20, 1)]


def test_values_fanlog_cannot_store_are_skipped_with_one_warning(tmp_path):
    """A list, a complex number and a multi-element tensor in one log dict: each skipped with one
    warning naming it, every other value logged (a string as text), training goes on."""
    savedir = tmp_path / "mllogs"

    class OddValues(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (3, 4):
                trainer.log(
                    {"shape": [1, 2], "phase": 1j, "batch": torch.ones(3), "note": "warm-up", "ok": 0.5}
                )

    trainer = make_trainer(
        tmp_path,
        [FanlogCallback(JournalLogger(savedir=savedir)), OddValues()],
        eval_strategy="no",
        save_strategy="no",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    skipped = [str(w.message) for w in caught if "is not logged" in str(w.message)]
    assert sorted(m.split("'")[1] for m in skipped) == ["train/batch", "train/phase", "train/shape"]
    run = read_run(savedir)
    assert run.metric("train/ok") == [(3, 0.5), (4, 0.5)]
    assert [(r.step, r.value) for r in run.of_kind("text")] == [(3, "warm-up"), (4, "warm-up")]
    assert not {"train/shape", "train/phase", "train/batch"} & {r.key for r in run.records}
    assert run.metric("train/loss") == logged_by_trainer(trainer)["loss"]


# ---------------------------------------------------------------------- params and secrets
def test_params_hold_arguments_and_config_without_secrets(tmp_path):
    """Secrets in the training arguments and in the model config reach no file fanlog writes
    (journal, TensorBoard's HParams); nor does the hub token reach the logged checkpoint, whose
    training_args.bin the Trainer pickles with it. The model's own config.json is logged as
    saved. Ordinary params arrive with their values."""
    from fanlog import TensorBoardLogger

    savedir = tmp_path / "mllogs"
    secrets = {"api_key": "sk-do-not-leak-2", "password": "do-not-leak-3", "wandb_token": "do-not-leak-4"}
    trackers = LoggersCollection(
        [JournalLogger(savedir=savedir), TensorBoardLogger(savedir=savedir)], unsupported="ignore"
    )
    args = training_arguments(
        str(tmp_path / "out"), hub_token="hf_do_not_leak_1", max_steps=2, eval_strategy="no", save_steps=2
    )
    trainer = Trainer(
        model=tiny_bert(**secrets),
        args=args,
        train_dataset=RandomTokens(16, 1),
        callbacks=[FanlogCallback(trackers, log_model="all")],
    )
    trainer.train()
    assert files_containing(tmp_path / "out", "hf_do_not_leak_1")  # the Trainer's own checkpoint has it

    run = read_run(savedir)
    params = run.params
    for key in SECRET_KEYS:
        assert params[key] == "***REDACTED***", key
    assert files_containing(savedir, "hf_do_not_leak_1") == []
    for value in secrets.values():
        assert [os.path.basename(p) for p in files_containing(savedir, value)] == ["config.json"], value
    assert params["learning_rate"] == 5e-05 and params["hidden_size"] == 8 and params["max_steps"] == 2
    assert json.loads(params["id2label"]) == {"0": "LABEL_0", "1": "LABEL_1"}
    assert (params["model_type"], params["num_hidden_layers"], params["architectures"]) == ("bert", 1, None)
    (checkpoint,) = run.of_kind("artifact")
    logged_args = torch.load(os.path.join(checkpoint.value, "training_args.bin"), weights_only=False)
    assert logged_args.hub_token is None
    assert (logged_args.learning_rate, logged_args.max_steps) == (5e-05, 2)


# ---------------------------------------------------------------------- log_model
@pytest.mark.parametrize("log_model", [False, "all", True, "end"])
def test_log_model_options(tmp_path, log_model):
    """Saves at steps 3, 6, 9 keeping one (plus the best): what each option logs, as artifacts.

    With "all", the Trainer deletes checkpoint-9 right after saving it (it is not the best):
    what the journal holds is still complete."""
    savedir = tmp_path / "mllogs"
    trainer = make_trainer(
        tmp_path,
        [FanlogCallback(JournalLogger(savedir=savedir), log_model=log_model)],
        max_steps=9,
        eval_steps=3,
        save_steps=3,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=3,
    )
    trainer.train()
    artifacts = read_run(savedir).of_kind("artifact")
    kept = sorted(
        (p for p in os.listdir(tmp_path / "out") if p.startswith("checkpoint-")),
        key=lambda p: int(p.split("-")[1]),
    )
    best = os.path.basename(trainer.state.best_model_checkpoint)
    if log_model is False:
        assert artifacts == []
    elif log_model == "all":
        assert [(a.key, a.step) for a in artifacts] == [(f"checkpoints/checkpoint-{s}", s) for s in (3, 6, 9)]
    elif log_model is True:
        assert [a.key for a in artifacts] == [f"checkpoints/{name}" for name in kept]
        marked = {a.key: a.options for a in artifacts}
        assert marked[f"checkpoints/{best}"] == {"score": trainer.state.best_metric, "monitor": "eval_loss"}
        assert all(options == {} for key, options in marked.items() if key != f"checkpoints/{best}")
    else:
        (model,) = artifacts
        assert (model.key, model.step) == ("model", 9)
        loaded = type(trainer.model).from_pretrained(model.value)
        for name, tensor in trainer.model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name
    for artifact in artifacts:
        assert {"config.json", "model.safetensors"} <= set(os.listdir(artifact.value))
        assert artifact.value.startswith(str(savedir))  # the journal's own copy
    assert not list((tmp_path / "out").glob(".fanlog-staging-*"))  # removed once the run ended


# ---------------------------------------------------------------------- configs and bad input
def test_logger_from_a_config_path_a_dict_or_fanlog_config(tmp_path, monkeypatch):
    config = {"loggers": [{"type": "journal", "savedir": str(tmp_path / "from-dict")}]}
    path = tmp_path / "loggers.yaml"
    path.write_text(f"type: journal\nsavedir: {tmp_path / 'from-yaml'}\nlog_on_workers: -1\n")
    monkeypatch.setenv("FANLOG_CONFIG", str(path))
    from_dict, from_path, from_env = FanlogCallback(config), FanlogCallback(path), FanlogCallback()
    assert [type(m).__name__ for m in from_dict.logger.members()] == ["JournalLogger"]
    assert from_dict.logger.members()[0].savedir == str(tmp_path / "from-dict")
    for callback in (from_path, from_env):
        assert (callback.logger.savedir, callback.logger.log_on_workers) == (str(tmp_path / "from-yaml"), -1)
    make_trainer(tmp_path, [from_path], max_steps=2, eval_strategy="no", save_strategy="no").train()
    assert read_run(tmp_path / "from-yaml").metric("train/loss") == [(2, pytest.approx(0.69, abs=0.05))]


@pytest.mark.parametrize(
    ("source", "error", "words"),
    [
        (42, TypeError, ["FanlogCallback", "int"]),
        (object(), TypeError, ["FanlogCallback", "object"]),
        ({"type": "nope"}, ValueError, ["nope"]),
    ],
)
def test_bad_logger_sources_name_what_was_expected(source, error, words):
    with pytest.raises(error) as caught:
        FanlogCallback(source)
    assert all(word in str(caught.value) for word in words), str(caught.value)


@pytest.mark.parametrize("log_model", ["best", "checkpoint", 1, 0, None])
def test_bad_log_model_names_the_choices(log_model):
    with pytest.raises(ValueError, match=r"log_model must be one of \(False, True, 'all', 'end'\)"):
        FanlogCallback(JournalLogger(), log_model=log_model)


# ---------------------------------------------------------------------- who ends the run
def test_a_logger_the_user_started_is_only_flushed(tmp_path):
    savedir = tmp_path / "mllogs"
    logger = JournalLogger(savedir=savedir)
    with logger.start_logging():
        trainer = make_trainer(
            tmp_path, [FanlogCallback(logger)], max_steps=4, eval_strategy="no", save_strategy="no"
        )
        trainer.train()
        assert logger.is_active
        assert read_run(savedir).metric("train/loss") == logged_by_trainer(trainer)["loss"]  # flushed
        logger.log(1.0, "after/trainer", step=0)
    run = read_run(savedir)
    assert run.meta[0]["status"] == "finished" and run.metric("after/trainer") == [(0, 1.0)]
    assert run.params["max_steps"] == 4 and run.params["hub_token"] == "***REDACTED***"


class FailAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"boom at step {self.step}")


@pytest.mark.parametrize("first_fails", [True, False], ids=["caught-exception", "finished"])
def test_each_train_call_is_a_run_and_a_caught_exception_closes_its_run_failed(tmp_path, first_fails):
    """A notebook catches the exception: the next train() closes the run it left open as failed.
    A train() that finished is not reopened by the next one: each gets its own run."""
    savedir = tmp_path / "mllogs"
    callback = FanlogCallback(JournalLogger(savedir=savedir))
    first = make_trainer(
        tmp_path, [callback, FailAt(3 if first_fails else 99)], eval_strategy="no", save_strategy="no"
    )
    if first_fails:
        with pytest.raises(RuntimeError, match="boom at step 3"):
            first.train()
        assert callback.logger.is_active
    else:
        first.train()
    make_trainer(tmp_path, [callback], max_steps=2, eval_strategy="no", save_strategy="no").train()

    runs = [read_run(run) for run in find_runs(savedir)]
    assert [run.meta[0]["status"] for run in runs] == ["failed" if first_fails else "finished", "finished"]
    assert [s for s, _ in runs[0].metric("train/loss")] == ([2] if first_fails else [2, 4, 6, 8, 10])
    assert [s for s, _ in runs[1].metric("train/loss")] == [2]
    assert len(runs[1].of_kind("param")) > 100  # the new run has its own params


# ---------------------------------------------------------------------- real processes
EXITS = [
    pytest.param("--fail-at", 3, "failed", id="exception"),
    pytest.param("signal", signal.SIGTERM, "killed", id="sigterm"),
    pytest.param("signal", signal.SIGINT, "killed", id="ctrl-c"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("how", "what", "status"), EXITS)
def test_run_status_follows_how_the_trainer_ended(tmp_path, how, what, status):
    from support.hf_launch import interrupt_job, run_job

    config = {"type": "journal", "savedir": str(tmp_path / "mllogs")}
    if how == "signal":
        code = interrupt_job(tmp_path, "trainer", config, what)
        assert code in (-what, 128 + what, 1), code
    else:
        done = run_job(tmp_path, "trainer", config, how, str(what))
        assert done.returncode == 1 and "boom at step 3" in done.stderr, done.stderr[-2000:]
    run = read_run(tmp_path / "mllogs")
    assert run.meta[0]["status"] == status
    assert run.meta[0].get("ended") is not None
    if how != "signal":
        assert run.metric("train/loss") == [(2, pytest.approx(0.69, abs=0.05))]


@pytest.mark.slow
def test_trainer_under_torchrun_two_ranks(tmp_path):
    """DDP on gloo: every rank opens the run with its process index; the journal logs on every
    rank (log_on_workers=-1), TensorBoard on rank 0 only; checkpoints come from the saving rank."""
    from support.hf_launch import run_job

    savedir = tmp_path / "mllogs"
    config = {
        "savedir": str(savedir),
        "loggers": [{"type": "journal", "log_on_workers": -1}, {"type": "tensorboard"}],
    }
    done = run_job(tmp_path, "trainer", config, "--log-model", "all", nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]

    (run_dir,) = find_runs(savedir)
    run = read_run(run_dir)
    assert sorted(run.meta) == [0, 1]
    assert all(meta["status"] == "finished" and meta["world_size"] == 2 for meta in run.meta.values())
    losses = {rank: run.metric("train/loss", rank=rank) for rank in (0, 1)}
    assert [s for s, _ in losses[0]] == [2, 4, 6, 8, 10] and losses[1] == losses[0]  # the Trainer's mean
    for rank in (0, 1):
        assert len([r for r in run.records if r.rank == rank and r.kind == "param"]) > 100
    artifacts = [(r.rank, r.key) for r in run.of_kind("artifact")]
    assert artifacts == [(0, "checkpoints/checkpoint-5"), (0, "checkpoints/checkpoint-10")]

    tensorboard = tensorboard_scalars(savedir / "tensorboard")
    assert {p.name for p in (savedir / "tensorboard").glob("*/rank-*")} == {"rank-0"}
    assert tensorboard["train/loss"] == [(s, pytest.approx(v, rel=1e-6)) for s, v in losses[0]]
