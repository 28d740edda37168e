"""itwinai compatibility: itwinai's documented example, run unchanged but for the import line.

No mocks except where a docstring says so: MLflow is a real ``mlflow server`` on
127.0.0.1 (the session fixture), TensorBoard is read with its EventAccumulator, W&B
is a real offline run read from its transaction log, and the journal with
``fanlog.read_run``.
"""

from __future__ import annotations

import inspect
import io
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing import event_accumulator as ea

import fanlog
from fanlog.backend import JOURNAL_ONLY_BIT, Backend
from fanlog.compat import itwinai
from fanlog.compat.itwinai import (
    BASE_EXP_NAME,
    ConsoleLogger,
    EmptyLogger,
    LoggersCollection,
    MLFlowLogger,
    Prov4MLLogger,
    TensorBoardLogger,
    WandBLogger,
    get_mlflow_logger,
)
from fanlog.journal import connect
from fanlog.logger import TrackerLogger
from fanlog.record import Record
from test_wandb_backend import QUIET, offline_env, offline_runs  # noqa: F401  (W&B reader, env)

# itwinai's documented example (docs "Tracking ML workflows", itwinai.loggers), with only the
# import line changed. Its "..." lines are kept: they are valid Python (an Ellipsis statement).
ITWINAI_EXAMPLE = """
from fanlog.compat.itwinai import MLFlowLogger

my_logger = MLFlowLogger(
    experiment_name='may_awesome_experiment',
    log_freq=100
)

# Initialize logger
my_logger.create_logger_context()

...

# During PyTorch model training
for epoch in range(100):

    loss_accumulator = .0
    for batch_idx, batch in enumerate(train_dataloader):
        x, y = batch
        pred = my_net(x)
        loss = loss_criterion(y, pred)
        ...
        # Log the loss with "batch" granularity
        my_logger.log(
            item=loss.item(),
            identifier='my_training_loss_batch',
            kind='metric',
            batch_idx=batch_idx
        )
        loss_accumulator += loss.item()
        ...

    epoch_loss = loss_accumulator / len(train_dataloader)
    # Log the loss with "epoch" granularity
    my_logger.log(
        item=loss.item(),
        identifier='my_training_loss_epoch',
        kind='metric'
    )

# Save model after training
my_logger.log(
    item=my_net,
    identifier='trained_model',
    kind='model'
)

# Destroy logger before exiting
my_logger.destroy_logger_context()
"""

# itwinai's declared supported_kinds, per class.
ITWINAI_SUPPORTED = {
    ConsoleLogger: {"torch", "artifact", "metric"},
    MLFlowLogger: {
        "metric",
        "figure",
        "image",
        "artifact",
        "torch",
        "dict",
        "param",
        "text",
        "model",
        "dataset",
    },
    WandBLogger: {"watch", "metric", "figure", "image", "torch", "dict", "param", "text"},
    TensorBoardLogger: {"metric", "image", "text", "figure", "torch"},
    Prov4MLLogger: {
        "metric",
        "flops_pb",
        "flops_pe",
        "system",
        "carbon",
        "execution_time",
        "model",
        "best_model",
        "torch",
    },
}

# itwinai's constructor arguments (name → default), per class, in itwinai's order.
ITWINAI_ARGS: dict[type, list[tuple[str, Any]]] = {
    ConsoleLogger: [("savedir", "mllogs"), ("log_freq", "epoch"), ("log_on_workers", 0)],
    MLFlowLogger: [
        ("savedir", "mllogs"),
        ("experiment_name", BASE_EXP_NAME),
        ("tracking_uri", None),
        ("run_description", None),
        ("run_name", None),
        ("log_freq", "epoch"),
        ("log_on_workers", 0),
    ],
    WandBLogger: [
        ("savedir", "mllogs"),
        ("project_name", BASE_EXP_NAME),
        ("log_freq", "epoch"),
        ("log_on_workers", 0),
        ("offline_mode", False),
    ],
    TensorBoardLogger: [
        ("savedir", "mllogs"),
        ("log_freq", "epoch"),
        ("framework", "pytorch"),
        ("log_on_workers", 0),
    ],
    Prov4MLLogger: [
        ("prov_user_namespace", "www.example.org"),
        ("experiment_name", "experiment_name"),
        ("provenance_save_dir", "mllogs/prov_logs"),
        ("save_after_n_logs", 100),
        ("create_graph", True),
        ("create_svg", True),
        ("log_freq", "epoch"),
        ("log_on_workers", 0),
    ],  # itwinai has log_freq here (issue 13)
    EmptyLogger: [("savedir", "mllogs"), ("log_freq", "epoch"), ("log_on_workers", 0)],
}


class TinyNet(torch.nn.Module):
    """Module-level so MLflow's pytorch flavour can pickle it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_itwinai_documented_example_runs_unchanged(
    mlflow_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's default savedir is ./mllogs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    torch.manual_seed(0)
    data = torch.randn(16, 3)
    target = data.sum(dim=1, keepdim=True)
    net = TinyNet()
    namespace: dict[str, Any] = {
        "train_dataloader": torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(data, target), batch_size=4
        ),
        "my_net": net,
        "loss_criterion": torch.nn.MSELoss(),
    }
    exec(compile(ITWINAI_EXAMPLE, "itwinai_example.py", "exec"), namespace)

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("may_awesome_experiment")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    batch = client.get_metric_history(run.info.run_id, "my_training_loss_batch")
    epoch = client.get_metric_history(run.info.run_id, "my_training_loss_epoch")
    assert len(batch) == 100, "log_freq=100 with 4 batches: only batch_idx 0 of each epoch"
    assert sorted(m.step for m in epoch) == list(range(100))
    assert epoch[-1].value == pytest.approx(namespace["loss"].item())
    (model_output,) = client.get_run(run.info.run_id).outputs.model_outputs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)  # where models:/ resolves
    loaded = mlflow.pytorch.load_model(f"models:/{model_output.model_id}")
    assert torch.allclose(loaded(data), net(data))
    journal = fanlog.read_run(tmp_path / "mllogs")
    assert len(journal.metric("my_training_loss_epoch")) == 100


@pytest.mark.parametrize("cls", list(ITWINAI_ARGS), ids=lambda c: c.__name__)
def test_constructor_arguments_are_itwinai(cls: type) -> None:
    params = inspect.signature(cls.__init__).parameters
    named = [(n, p.default) for n, p in params.items() if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
    assert named == ITWINAI_ARGS[cls]


@pytest.mark.parametrize("cls", list(ITWINAI_SUPPORTED), ids=lambda c: c.__name__)
def test_supported_kinds_are_itwinai(cls: type, tmp_path: Path) -> None:
    logger = cls() if cls is not Prov4MLLogger else cls(provenance_save_dir=str(tmp_path))
    assert set(logger.supported_kinds) == ITWINAI_SUPPORTED[cls]
    assert EmptyLogger().supported_kinds == frozenset()


def test_exports_are_itwinai_names() -> None:
    for name in (
        "Logger",
        "ConsoleLogger",
        "MLFlowLogger",
        "WandBLogger",
        "TensorBoardLogger",
        "Prov4MLLogger",
        "LoggersCollection",
        "EmptyLogger",
        "get_mlflow_logger",
    ):
        assert name in itwinai.__all__ and hasattr(itwinai, name)
    assert issubclass(MLFlowLogger, itwinai.Logger)


def test_console_keeps_torch_and_artifact_in_the_journal_and_ignores_other_kinds(tmp_path: Path) -> None:
    stream = io.StringIO()
    artifact = tmp_path / "notes.txt"
    artifact.write_text("hello")
    logger = ConsoleLogger(savedir=str(tmp_path / "logs"), log_freq="batch", stream=stream)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # itwinai ignores unsupported kinds silently
        with logger.start_logging():
            logger.log(0.5, "loss", kind="metric", step=0)
            logger.log(torch.ones(2), "weights.pt", kind="torch")
            logger.log(str(artifact), "files/notes.txt", kind="artifact")
            logger.log(3, "epochs", kind="param")  # not a ConsoleLogger kind in itwinai
            logger.save_hyperparameters({"lr": 0.1})
    run = fanlog.read_run(logger.journal_path)
    assert run.metric("loss") == [(0, 0.5)]
    (tensor,) = run.of_kind("torch")
    assert torch.equal(torch.load(io.BytesIO(tensor.value), weights_only=True), torch.ones(2))
    (copied,) = run.of_kind("artifact")
    assert Path(copied.value).read_text() == "hello"
    # Adapted for issue 13 (was `run.params == {}`): the journal is the complete record of
    # the run, so hyperparameters reach it even where itwinai's console drops them.
    assert run.params == {"epochs": 3, "lr": 0.1}
    text = stream.getvalue()
    assert "ConsoleLogger: weights.pt (torch) saved in the journal" in text
    assert "ConsoleLogger: files/notes.txt (artifact)" in text


def test_log_freq_and_workers_keep_itwinai_meaning(tmp_path: Path) -> None:
    tb = TensorBoardLogger(savedir=str(tmp_path), log_freq=5, framework="tensorflow")
    silent = TensorBoardLogger(savedir=str(tmp_path / "other"), log_on_workers=[1])
    collection = LoggersCollection([tb, silent])
    collection.create_logger_context(rank=0)
    for batch_idx in range(10):
        collection.log(float(batch_idx), "batch_loss", batch_idx=batch_idx, step=batch_idx)
    collection.log(1.5, "epoch_loss", step=0)
    collection.destroy_logger_context()
    acc = ea.EventAccumulator(tb.backend.logdir, size_guidance={ea.SCALARS: 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("batch_loss")] == [(0, 0.0), (5, 5.0)]
    assert [e.value for e in acc.Scalars("epoch_loss")] == [1.5]
    assert silent.backend is None, "rank 0 is not in log_on_workers=[1]"
    with pytest.raises(ValueError, match="framework"):
        TensorBoardLogger(framework="jax")


def test_get_mlflow_logger_finds_it_in_a_collection() -> None:
    mlf = MLFlowLogger()
    assert get_mlflow_logger(LoggersCollection([ConsoleLogger(), mlf])) is mlf
    assert get_mlflow_logger(mlf) is mlf
    assert get_mlflow_logger(ConsoleLogger()) is None


@pytest.mark.slow
def test_wandb_watch_kind_and_offline_mode(tmp_path: Path) -> None:
    wandb_logger = WandBLogger(savedir=str(tmp_path), log_freq="batch", offline_mode=True, settings=QUIET)
    logger = LoggersCollection([wandb_logger, ConsoleLogger(savedir=str(tmp_path), stream=io.StringIO())])
    model = TinyNet()
    with logger.start_logging():
        logger.log(model, "model", kind="watch", log="all", log_freq=1)  # reaches the W&B member
        for step in range(2):
            model(torch.randn(4, 3)).sum().backward()
            logger.log(float(step), "loss", step=step)
            logger.flush(timeout=60)
        logger.save_hyperparameters({"lr": 0.01})
    (run,) = offline_runs(tmp_path)
    keys = {key for row in run.rows() for key in row}
    assert any(key.startswith("gradients/fc.weight") for key in keys), sorted(keys)
    assert run.series("loss") == [(0, 0.0), (1, 1.0)]
    assert run.config()["lr"] == 0.01


def test_carbon_kind_is_registered_and_checked() -> None:
    kind = fanlog.kinds.get_kind("carbon")
    assert kind.normalize({"emissions": 1}, "c") == {"emissions": 1.0}
    assert kind.normalize(0.25, "c") == {"emissions_kg": 0.25}
    with pytest.raises(TypeError, match="carbon"):
        kind.normalize("lots", "c")


class MetricsOnly(Backend):
    """A real backend that stores metrics in a list: what reached the tracker, counted."""

    name = "metrics-only"
    writers = {"metric": "_store"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored: list[Record] = []

    def _store(self, record: Record) -> None:
        self.stored.append(record)


class ItwinaiStyleLogger(TrackerLogger):
    """Declares more kinds than its tracker stores, as the itwinai classes do."""

    backend_class = MetricsOnly

    @property
    def supported_kinds(self) -> frozenset[str]:
        return frozenset({"metric", "torch", "carbon"})


def test_kinds_the_tracker_does_not_store_stay_in_the_journal_only(tmp_path: Path) -> None:
    """(Replaces the test of the former runtime kinds adapter.) A declared kind the tracker
    cannot store is journaled with no tracker bit: the tracker never sees it, nothing is
    lost, delivery is complete; an undeclared kind is ignored as itwinai ignores it."""
    logger = ItwinaiStyleLogger(savedir=str(tmp_path), log_freq="batch", unsupported="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logger.create_logger_context(rank=0)
        logger.log(1.0, "loss", step=0)
        logger.log(torch.ones(2), "weights.pt", kind="torch")
        logger.log(0.5, "co2", kind="carbon")
        logger.log(3, "epochs", kind="param")  # not declared: ignored
        logger.log(2.0, "loss", step=1)
        backend = logger.backend
        assert logger.destroy_logger_context() is True
    assert isinstance(backend, MetricsOnly)
    assert [(r.key, r.value) for r in backend.stored] == [("loss", 1.0), ("loss", 2.0)]
    run = fanlog.read_run(logger.journal_path)
    assert [r.kind for r in run.records] == ["metric", "torch", "carbon", "metric"]
    conn = connect(logger.journal_path, readonly=True)
    masks = dict(conn.execute("SELECT kind, mask FROM records WHERE kind != 'metric'"))
    conn.close()
    assert masks == {"torch": JOURNAL_ONLY_BIT, "carbon": JOURNAL_ONLY_BIT}
