"""itwinai's trainer drives fanlog's compat loggers (issue 13).

:func:`train_like_itwinai` makes the logger calls of itwinai's ``TorchTrainer._run_worker``
and ``train()`` in their order and with their arguments (itwinai 0.4.2, read from its source:
the "train run" made on the main worker through the MLflow logger's surface, then
``create_logger_context(rank=..., parent_run_id=..., run_name=...)``, the strategy params,
``save_hyperparameters``, batch and epoch metrics with ``batch_idx``, checkpoint artifacts,
``destroy_logger_context()``), plus the kinds itwinai's use cases log. Every tracker is real:
an ``mlflow server`` on 127.0.0.1, TensorBoard's reader, W&B offline files, yprov4ml's
PROV-JSON, and fanlog's journal. Nothing is mocked.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing import event_accumulator as ea

import fanlog
from fanlog.compat.itwinai import (
    LoggersCollection,
    MLFlowLogger,
    Prov4MLLogger,
    TensorBoardLogger,
    WandBLogger,
    get_mlflow_logger,
)
from fanlog.errors import LoggerNotStartedError
from support.readback import tensorboard_scalars
from test_tensorboard_backend import hparams_of
from test_wandb_backend import QUIET, offline_env, offline_runs  # noqa: F401  (W&B reader, env)

pytest.importorskip("yprov4ml")

EPOCHS = 2
BATCHES = 4
HPARAMS: dict[str, Any] = {
    "batch_size": 8,
    "shuffle_train": True,
    "optimizer": "sgd",
    "optim_lr": 0.1,
    "optim_betas": (0.9, 0.99),
    "lr_scheduler": None,
    "fp16_allreduce": False,
}
"""A slice of itwinai's TrainingConfiguration.model_dump(): a tuple, None, str, bool, float."""


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def write_checkpoint(folder: Path, net: TinyNet) -> list[str]:
    """itwinai's save_checkpoint: state.pt, model.pt and config.yaml in one folder."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "state.pt")
    torch.save(net.state_dict(), folder / "model.pt")
    (folder / "config.yaml").write_text("optim_lr: 0.1\n")
    return [str(folder / name) for name in ("state.pt", "model.pt", "config.yaml")]


def train_like_itwinai(logger: Any, rank: int, checkpoints: Path) -> dict[str, Any]:
    """The logger calls of itwinai's TorchTrainer, in order; returns what the trainer read."""
    seen: dict[str, Any] = {}
    run_name = "worker_0"
    train_run_id = ""
    mlflow_logger = get_mlflow_logger(logger)
    if rank == 0 and mlflow_logger is not None:  # _run_worker: the "train run", then its child
        mlflow.set_tracking_uri(mlflow_logger.tracking_uri)
        mlflow.set_experiment(mlflow_logger.experiment_name)
        experiment_id = mlflow_logger.resolve_experiment_id()
        mlflow_logger.mlflow.set_tracking_uri(mlflow_logger.tracking_uri)
        train_run = mlflow_logger.mlflow.start_run(experiment_id=experiment_id, run_name="tiny-run")
        train_run_id = train_run.info.run_id
        mlflow_logger.mlflow.end_run()
        run_name += " (main)"
    seen["train_run_id"] = train_run_id
    seen["returned"] = logger.create_logger_context(rank=rank, parent_run_id=train_run_id, run_name=run_name)
    logger.log(item="non-distributed", identifier="strategy", kind="param")
    logger.log(item=rank, identifier="global_rank", kind="param")
    logger.log(item=1, identifier="global_world_size", kind="param")
    if mlflow_logger is not None and mlflow_logger.should_log():
        seen["worker_run_id"] = mlflow_logger.active_run.info.run_id
    logger.save_hyperparameters({**HPARAMS, "distributed_strategy": "NonDistributedStrategy"})

    torch.manual_seed(0)
    net = TinyNet()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(32, 4)), batch_size=8)
    step = 0
    for epoch in range(EPOCHS):
        for batch_idx in range(BATCHES):
            loss = 1.0 / (step + 1)
            logger.log(loss, "train_loss", kind="metric", step=step, batch_idx=batch_idx)
            logger.log(np.array(loss * 2), "train_accuracy", kind="metric", step=step, batch_idx=batch_idx)
            step += 1
        logger.log(1.0 / step, "train_loss_epoch", kind="metric", step=step)
        logger.log(0.5 / (epoch + 1), "validation_loss", kind="metric", step=epoch, batch_idx=0)
        logger.log(
            0.5 / (epoch + 1), "validation_loss_epoch", kind="metric", step=epoch + 1, context="validation"
        )
        for path in write_checkpoint(checkpoints / f"epoch_{epoch}", net):
            logger.log(path, f"epoch_{epoch}_{Path(path).stem}", kind="artifact")
        logger.log(0.5 / (epoch + 1), "global_validation_loss_epoch", kind="metric", step=epoch)
        logger.log(None, None, kind="system", step=epoch)  # 3dgan's forms: item and identifier unused
        logger.log(None, None, kind="carbon", step=epoch)
        logger.log(0.01, "train_epoch_time", kind="execution_time", step=epoch)
        logger.log(float(epoch + 1), "epoch_time_s", kind="metric", step=epoch)
    logger.log(net, "trained_model", kind="model", step=EPOCHS)
    logger.log(net, "best_model", kind="best_model")
    logger.log(optimizer, "optimizer", kind="torch")
    logger.log(loader, "train_dataloader", kind="dataset")
    logger.log(net, "net_v1", kind="model_version")  # itwinai's loggers all ignore this kind
    logger.log(None, "provenance", kind="prov_documents", step=EPOCHS)
    seen["flushed"] = logger.flush(timeout=240)
    seen["errors"] = logger.delivery_errors()
    logger.destroy_logger_context()
    return seen


def test_itwinai_trainer_shape_against_every_tracker(mlflow_server: Any, tmp_path: Path) -> None:
    mlf = MLFlowLogger(
        savedir=str(tmp_path / "m"),
        experiment_name="itwinai-shape",
        tracking_uri=mlflow_server.url,
        log_freq="epoch",
    )
    tb = TensorBoardLogger(savedir=str(tmp_path / "tb"), log_freq="batch")
    wb = WandBLogger(
        savedir=str(tmp_path / "wb"),
        project_name="itwinai-shape",
        log_freq=2,
        offline_mode=True,
        settings=QUIET,
    )
    prov = Prov4MLLogger(
        provenance_save_dir=str(tmp_path / "prov"),
        experiment_name="tiny",
        create_svg=False,
        savedir=str(tmp_path / "p"),
    )
    collection = LoggersCollection([mlf, tb, wb, prov])
    assert not collection.is_initialized and not mlf.is_initialized
    with pytest.raises(LoggerNotStartedError, match="has not been initialized"):
        collection.destroy_logger_context()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = train_like_itwinai(collection, 0, tmp_path / "ckpt")
    assert seen["flushed"] is True and seen["errors"] == {}, seen["errors"]
    assert seen["returned"] is None, "itwinai's LoggersCollection returns None"
    assert not collection.is_initialized and not mlf.is_initialized
    journal_only = [str(w.message) for w in caught if "journal only" in str(w.message)]
    assert len(journal_only) == len({m.split(": the tracker does not store kind ")[1] for m in journal_only})
    assert any("'carbon'" in m for m in journal_only), "carbon reaches no tracker: said once"
    assert sum("model_version" in str(w.message) for w in caught) == 1

    params = {
        "strategy": "non-distributed",
        "global_rank": 0,
        "global_world_size": 1,
        **HPARAMS,
        "distributed_strategy": "NonDistributedStrategy",
    }

    # MLflow: the worker run is the child of the train run, named as the trainer named it.
    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("itwinai-shape")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["tiny-run", "worker_0 (main)"]
    worker = runs["worker_0 (main)"]
    assert worker.info.run_id == seen["worker_run_id"] == mlf.run_id
    assert worker.data.tags["mlflow.parentRunId"] == seen["train_run_id"] == runs["tiny-run"].info.run_id
    assert worker.info.status == "FINISHED"
    assert set(worker.data.params) == set(params)
    assert worker.data.params["optim_lr"] == "0.1" and worker.data.params["strategy"] == "non-distributed"
    history = {
        key: sorted((m.step, m.value) for m in client.get_metric_history(worker.info.run_id, key))
        for key in worker.data.metrics
    }
    assert "train_loss" not in history, "log_freq='epoch' drops the batch metrics"
    assert history["train_loss_epoch"] == [(4, 0.25), (8, 0.125)]
    assert history["epoch_time_s"] == [(0, 1.0), (1, 2.0)]
    assert [s for s, _ in history["validation_loss_epoch"]] == [1, 2]
    folders = {a.path for a in client.list_artifacts(worker.info.run_id)}
    for epoch in range(EPOCHS):
        for stem, file in (("state", "state.pt"), ("model", "model.pt"), ("config", "config.yaml")):
            assert f"epoch_{epoch}_{stem}" in folders
            inside = [a.path for a in client.list_artifacts(worker.info.run_id, f"epoch_{epoch}_{stem}")]
            assert inside == [f"epoch_{epoch}_{stem}/{file}"]
    prov_docs = sorted(Path(a.path).name for a in client.list_artifacts(worker.info.run_id, "prov"))
    assert any(name.endswith(".json") for name in prov_docs), prov_docs
    assert len(client.get_run(worker.info.run_id).outputs.model_outputs) == 1

    # TensorBoard: batch metrics at every step, the hyperparameters in the hparams plugin.
    scalars = tensorboard_scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["train_loss"]] == list(range(EPOCHS * BATCHES))
    assert scalars["train_loss_epoch"] == [(4, 0.25), (8, 0.125)]
    (folder,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}
    acc = ea.EventAccumulator(str(folder))
    acc.Reload()
    start, _ = hparams_of(acc)
    assert start.hparams["optim_lr"].number_value == pytest.approx(0.1)
    assert start.hparams["optimizer"].string_value == "sgd"
    assert start.hparams["distributed_strategy"].string_value == "NonDistributedStrategy"
    assert set(params) - {"lr_scheduler"} <= set(start.hparams)

    # W&B offline: config holds the hyperparameters, history the metrics at log_freq=2.
    (wandb_run,) = offline_runs(tmp_path / "wb")
    config = wandb_run.config()
    assert config["optim_lr"] == 0.1 and config["strategy"] == "non-distributed"
    assert [s for s, _ in wandb_run.series("train_loss")] == [0, 2, 4, 6]
    assert [s for s, _ in wandb_run.series("train_loss_epoch")] == [4, 8]

    # yprov4ml: the params and metrics in the training context, the model, the documents.
    (document,) = (tmp_path / "prov").rglob("prov_tiny_*.json")
    text = document.read_text()
    prov_json = json.loads(text)
    entities = prov_json["entity"]
    assert any(k.endswith("optim_lr") for k in entities), sorted(entities)
    assert any("train_loss_epoch" in k and "training" in k for k in entities)
    assert any("validation_loss_epoch" in k and "validation" in k for k in entities)
    assert any("trained_model" in k for k in entities)

    # The journal: every record, including those no tracker took (carbon, model_version excepted).
    run = fanlog.read_run(tmp_path / "m")
    counts: dict[str, int] = {}
    for record in run.records:
        counts[record.kind] = counts.get(record.kind, 0) + 1
    assert counts["param"] == len(params)
    assert counts["carbon"] == EPOCHS and counts["system"] == EPOCHS
    assert counts["artifact"] == 3 * EPOCHS
    assert len(run.metric("train_loss")) == EPOCHS * BATCHES
    assert "model_version" not in counts


def test_run_id_attaches_to_the_worker_run(mlflow_server: Any, tmp_path: Path) -> None:
    """itwinai's GPU monitor: after ``is_initialized = False``, ``create_logger_context(run_id=...)``
    attaches to the worker's run; the records of both starts are in that one run."""
    first = MLFlowLogger(
        savedir=str(tmp_path / "a"),
        experiment_name="attach",
        tracking_uri=mlflow_server.url,
        run_name="ctor-name",
    )
    active = first.create_logger_context(rank=0, unknown_option=1)
    assert isinstance(active, mlflow.ActiveRun) and first.active_run is active
    assert first.run_id == active.info.run_id and first.is_initialized
    first.log(1.0, "gpu_power_W", step=0)
    first.destroy_logger_context()
    monitor = MLFlowLogger(
        savedir=str(tmp_path / "b"), experiment_name="attach", tracking_uri=mlflow_server.url
    )
    monitor.is_initialized = False
    again = monitor.create_logger_context(rank=0, parent_run_id="", run_id=first.run_id)
    assert again.info.run_id == first.run_id
    monitor.log(5, "probing_interval", kind="param")
    monitor.log(2.0, "gpu_power_W", step=1)
    monitor.destroy_logger_context()
    client = MlflowClient(tracking_uri=mlflow_server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("attach").experiment_id])
    assert run.info.run_name == "ctor-name", "no run_name option: the constructor's is used"
    assert run.data.params == {"probing_interval": "5"}
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "gpu_power_W")) == [
        (0, 1.0),
        (1, 2.0),
    ]


@pytest.mark.parametrize(
    ("workers", "rank", "expected"),
    [(0, 0, True), (0, 1, False), (-1, 3, True), ([1, 2], 2, True), ([1, 2], 0, False)],
)
def test_should_log_applies_log_on_workers(tmp_path: Path, workers: Any, rank: int, expected: bool) -> None:
    logger = TensorBoardLogger(savedir=str(tmp_path), log_freq=2, log_on_workers=workers)
    logger.create_logger_context(rank=rank)
    try:
        assert logger.should_log() is expected
        assert logger.should_log(batch_idx=4) is expected
        assert logger.should_log(batch_idx=3) is False
        assert logger.is_initialized, "itwinai: initialized on every rank, logging or not"
    finally:
        logger.destroy_logger_context()


def test_mlflow_surface_before_and_after_start(
    mlflow_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    from_env = MLFlowLogger(savedir=str(tmp_path))
    assert from_env.tracking_uri == mlflow_server.url
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert MLFlowLogger(tracking_uri="rel/store").tracking_uri == (Path.cwd() / "rel" / "store").as_uri()
    assert MLFlowLogger(tracking_uri="sqlite:////abs/x.db").tracking_uri == "sqlite:////abs/x.db"
    assert MLFlowLogger(savedir=str(tmp_path)).tracking_uri.startswith("sqlite:")
    assert from_env.mlflow is mlflow and from_env.run_id is None and from_env.experiment_id is None
    with pytest.raises(LoggerNotStartedError, match="has not been initialized"):
        from_env.destroy_logger_context()
    experiment_id = from_env.resolve_experiment_id()
    found = MlflowClient(mlflow_server.url).get_experiment_by_name("unnamed-experiment")
    assert found is not None and experiment_id == found.experiment_id
    assert from_env.create_logger_context(rank=1) is None, "rank 1 does not log (log_on_workers=0)"
    assert from_env.is_initialized and not from_env.should_log()
    from_env.destroy_logger_context()
