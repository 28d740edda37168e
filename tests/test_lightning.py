"""Lightning adapter: a real ``lightning.Trainer.fit`` on CPU, read back from the journal and TensorBoard.

No mocks: the trainer runs a tiny model for 2 epochs; the results are read with
``fanlog.read_run`` and TensorBoard's own ``EventAccumulator``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import metadata as hp_metadata

lightning = pytest.importorskip("lightning")
from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import fanlog  # noqa: E402
from fanlog.backends.journal import JournalLogger  # noqa: E402
from fanlog.backends.tensorboard import TensorBoardLogger  # noqa: E402
from fanlog.lightning import FanlogLogger, log_learning_rate, log_on_epoch, run_status  # noqa: E402
from fanlog.logger import LoggersCollection  # noqa: E402
from fanlog.record import RunStatus  # noqa: E402

BATCHES = 4
LR = 0.1


class TinyRegressor(LightningModule):
    """y = 2x + 1 with one Linear layer; a StepLR halves the learning rate every epoch."""

    def __init__(
        self, lr: float = LR, hidden: int = 4, fail_at_epoch: int | None = None, two_groups: bool = False
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(1, 1)
        self.head = torch.nn.Linear(1, 1)
        self.example_input_array = torch.zeros(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.hparams.fail_at_epoch is not None and self.current_epoch == self.hparams.fail_at_epoch:
            raise RuntimeError("boom in training_step")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        log_on_epoch(self, "train_loss", loss)
        log_learning_rate(self)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        log_on_epoch(self, {"val_loss": torch.nn.functional.mse_loss(self(x), y)})

    def configure_optimizers(self) -> Any:
        if self.hparams.two_groups:
            groups = [
                {"params": self.layer.parameters()},
                {"params": self.head.parameters(), "lr": self.hparams.lr / 10},
            ]
            optimizer = torch.optim.SGD(groups, lr=self.hparams.lr)
        else:
            optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def loader() -> DataLoader:
    x = torch.linspace(-1, 1, BATCHES * 8).unsqueeze(1)
    return DataLoader(TensorDataset(x, 2 * x + 1), batch_size=8)


def fit(tmp_path: Path, adapter: FanlogLogger, module: LightningModule, **trainer_kw: Any) -> Trainer:
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=adapter,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        **trainer_kw,
    )
    trainer.fit(module, loader(), loader())
    return trainer


def scalars(logdir: str, tag: str) -> list[tuple[int, float]]:
    acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One 2-epoch fit into a journal + TensorBoard collection, log_model='all', graph on."""
    tmp_path = tmp_path_factory.mktemp("fit")
    savedir = tmp_path / "logs"
    collection = LoggersCollection(
        [JournalLogger(savedir=savedir), TensorBoardLogger(savedir=savedir, flush_secs=1)]
    )
    adapter = FanlogLogger(collection, log_model="all", log_graph=True)
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=2, save_last=True)
    trainer = fit(tmp_path, adapter, TinyRegressor(), callbacks=[checkpoint])
    return {
        "trainer": trainer,
        "collection": collection,
        "adapter": adapter,
        "checkpoint": checkpoint,
        "run": fanlog.read_run(collection.journal_path),
        "tb": collection.members()[1].backend,
    }


def test_metrics_epochs_and_learning_rates_reach_the_journal(fitted: dict[str, Any]) -> None:
    run = fitted["run"]
    train = [m for m in run.metrics if m.key == "train_loss"]
    assert [m.epoch for m in train] == [0, 1], "one epoch value per epoch, tagged with its epoch"
    assert all(v > 0 for v in (m.value for m in train))
    assert [v for _, v in run.metric("learning_rate")] == pytest.approx([LR, LR / 2])
    assert [m.epoch for m in run.metrics if m.key == "learning_rate"] == [0, 1]
    assert [v for _, v in run.metric("val_loss")].__len__() == 2
    assert sorted({v for _, v in run.metric("epoch")}) == [0.0, 1.0]
    steps = [s for s, _ in run.metric("train_loss")]
    assert steps == [BATCHES - 1, 2 * BATCHES - 1], "Lightning's global step is kept as the step"
    assert run.meta[0]["status"] == RunStatus.FINISHED.value


def test_hyperparameters_reach_journal_and_tensorboard(fitted: dict[str, Any]) -> None:
    params = fitted["run"].params
    assert params["lr"] == LR and params["hidden"] == 4 and params["two_groups"] is False
    logdir = fitted["tb"].logdir
    acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0})
    acc.Reload()
    content = acc.PluginTagToContent(hp_metadata.PLUGIN_NAME)
    start = hp_metadata.parse_session_start_info_plugin_data(content[hp_metadata.SESSION_START_INFO_TAG])
    assert start.hparams["lr"].number_value == pytest.approx(LR)
    assert start.hparams["hidden"].number_value == 4


def test_tensorboard_reads_the_epoch_metrics_and_graph(fitted: dict[str, Any]) -> None:
    logdir = fitted["tb"].logdir
    lr = scalars(logdir, "learning_rate")
    assert [v for _, v in lr] == pytest.approx([LR, LR / 2])
    assert len(scalars(logdir, "train_loss")) == 2
    acc = ea.EventAccumulator(logdir)
    acc.Reload()
    graph = acc.Graph()
    assert any("Linear" in node.name or "layer" in node.name for node in graph.node)


def test_log_model_all_logs_every_saved_checkpoint(fitted: dict[str, Any]) -> None:
    artifacts = fitted["run"].of_kind("artifact")
    names = [r.key for r in artifacts]
    assert all(n.startswith("checkpoints/") and n.endswith(".ckpt") for n in names)
    assert "checkpoints/last.ckpt" in names
    epoch_ckpts = {n for n in names if n.startswith("checkpoints/epoch=")}
    assert len(epoch_ckpts) == 2, names  # one per epoch (both in the top 2)
    copy = next(r.value for r in artifacts if r.key.startswith("checkpoints/epoch=1"))
    state = torch.load(copy, map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and "layer.weight" in state["state_dict"]
    scored = [r for r in artifacts if "score" in r.options]
    assert scored and all(r.options["monitor"] == "val_loss" for r in scored)


def test_experiment_version_and_checkpoint_dir_come_from_fanlog(fitted: dict[str, Any]) -> None:
    adapter, collection = fitted["adapter"], fitted["collection"]
    assert adapter.experiment is collection or not collection.is_active
    assert adapter.version == collection.run_info.run_id
    assert collection.run_info.run_id in fitted["checkpoint"].dirpath


def test_log_model_true_logs_the_best_k_at_the_end(tmp_path: Path) -> None:
    journal = JournalLogger(savedir=tmp_path / "logs")
    checkpoint = ModelCheckpoint(monitor="val_loss", save_top_k=1, filename="{epoch}")
    fit(
        tmp_path,
        FanlogLogger(journal, log_model=True),
        TinyRegressor(two_groups=True),
        callbacks=[checkpoint],
    )
    run = fanlog.read_run(journal.journal_path)
    names = [r.key for r in run.of_kind("artifact")]
    kept = [f"checkpoints/{os.path.basename(p)}" for p in checkpoint.best_k_models]
    assert names == kept and len(kept) == 1
    assert run.of_kind("artifact")[0].time >= max(m.time for m in run.metrics), "logged at the end"
    rates = {k: [v for _, v in run.metric(k)] for k in ("learning_rate/0/0", "learning_rate/0/1")}
    assert rates["learning_rate/0/0"] == pytest.approx([LR, LR / 2])
    assert rates["learning_rate/0/1"] == pytest.approx([LR / 10, LR / 20])
    assert not run.metric("learning_rate")


def test_a_failing_fit_marks_the_run_failed(tmp_path: Path) -> None:
    journal = JournalLogger(savedir=tmp_path / "logs")
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, FanlogLogger(journal), TinyRegressor(fail_at_epoch=1))
    run = fanlog.read_run(journal.journal_path)
    assert run.meta[0]["status"] == RunStatus.FAILED.value
    assert len(run.metric("train_loss")) == 1, "epoch 0 was logged before the failure"


def test_log_on_workers_decides_not_rank_zero_only(tmp_path: Path) -> None:
    """Rank 1 logs when fanlog says so (log_on_workers=-1) and not when it says rank 0 only."""
    everywhere = JournalLogger(savedir=tmp_path / "a", log_on_workers=-1)
    only_zero = JournalLogger(savedir=tmp_path / "b", log_on_workers=0)
    for logger in (everywhere, only_zero):
        adapter = FanlogLogger(logger, rank=1)
        adapter.log_metrics({"loss": 0.5, "epoch": 0}, step=3)
        adapter.log_hyperparams({"lr": 0.01})
        adapter.finalize("success")
        assert logger.rank == 1
    seen = fanlog.read_run(everywhere.journal_path)
    assert seen.metric("loss") == [(3, 0.5)] and seen.params == {"lr": 0.01}
    assert fanlog.read_run(only_zero.journal_path).records == []


def test_a_user_started_logger_stays_open_after_finalize(tmp_path: Path) -> None:
    logger = JournalLogger(savedir=tmp_path)
    logger.create_logger_context()
    adapter = FanlogLogger(logger, prefix="pl")
    assert adapter.experiment is logger
    adapter.log_metrics({"acc": 0.75}, step=0)
    adapter.finalize("success")
    assert logger.is_active, "the user ends a run they started"
    logger.log(1.0, "after", step=0)
    logger.destroy_logger_context()
    run = fanlog.read_run(logger.journal_path)
    assert run.metric("pl-acc") == [(0, 0.75)] and run.metric("after") == [(0, 1.0)]


def test_status_mapping_and_argument_checks() -> None:
    assert run_status("success") is RunStatus.FINISHED
    assert run_status("failed") is RunStatus.FAILED
    assert run_status("interrupted") is RunStatus.KILLED
    with pytest.raises(ValueError, match="log_model"):
        FanlogLogger(JournalLogger(), log_model="best")
    with pytest.raises(TypeError, match="fanlog Logger"):
        FanlogLogger(object())  # type: ignore[arg-type]


def test_log_on_epoch_needs_a_value() -> None:
    with pytest.raises(ValueError, match="no value"):
        log_on_epoch(TinyRegressor(), "loss")
    with pytest.raises(ValueError, match="either"):
        log_on_epoch(TinyRegressor(), {"loss": 1.0}, 2.0)


def test_model_graph_record_round_trips(fitted: dict[str, Any]) -> None:
    graph = [r for r in fitted["run"].of_kind("torch") if r.key == "graph"]
    assert len(graph) == 1
    model, example = torch.load(io.BytesIO(graph[0].value), weights_only=False)
    assert isinstance(model, TinyRegressor) and tuple(example.shape) == (2, 1)


def test_logging_after_finalize_reopens_the_same_run(tmp_path: Path) -> None:
    """fit then test: the adapter ends the run it started and reopens it under the same id."""
    logger = JournalLogger(savedir=tmp_path)
    adapter = FanlogLogger(logger)
    adapter.log_metrics({"train_loss": 1.0}, step=0)
    adapter.finalize("success")
    first = logger.run_info.run_id
    adapter.log_metrics({"test_loss": 2.0}, step=0)
    adapter.finalize("success")
    assert logger.run_info.run_id == first == adapter.version
    run = fanlog.read_run(logger.journal_path)
    assert run.metric("train_loss") == [(0, 1.0)] and run.metric("test_loss") == [(0, 2.0)]
    assert run.meta[0]["status"] == RunStatus.FINISHED.value
