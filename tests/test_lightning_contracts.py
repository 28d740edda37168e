"""Lightning logger contracts that fanlog's adapters must keep (issue 13): pickling for
``ddp_spawn``, complex hyperparameters, MLflow's source tags, checkpoint folder names, no
noise from members that cannot take an adapter's kind, and itwinai's Lightning adapter.

Real fits on CPU, a real ``mlflow server``, TensorBoard files, fanlog's journal; no mocks.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

lightning = pytest.importorskip("lightning")
from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import fanlog  # noqa: E402
from fanlog.backends.journal import JournalLogger  # noqa: E402
from fanlog.backends.mlflow import MLflowLogger  # noqa: E402
from fanlog.backends.tensorboard import TensorBoardLogger  # noqa: E402
from fanlog.compat import itwinai  # noqa: E402
from fanlog.journal.layout import journal_paths  # noqa: E402
from fanlog.lightning import FanlogLogger  # noqa: E402
from fanlog.logger import LoggersCollection  # noqa: E402


class Tiny(LightningModule):
    """Module-level: ddp_spawn children unpickle it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    x = torch.linspace(-1, 1, 16).unsqueeze(1)
    return DataLoader(TensorDataset(x, 2 * x + 1), batch_size=4)


def fit(tmp_path: Path, adapter: Any, **kw: Any) -> Trainer:
    options: dict[str, Any] = {
        "max_epochs": 2,
        "accelerator": "cpu",
        "devices": 1,
        "logger": adapter,
        "default_root_dir": tmp_path,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
    }
    options.update(kw)
    trainer = Trainer(**options)
    trainer.fit(Tiny(), loader(), loader())
    return trainer


@pytest.mark.parametrize("with_mlflow", [False, True], ids=["journal", "mlflow"])
def test_a_started_adapter_pickles(mlflow_server: Any, tmp_path: Path, with_mlflow: bool) -> None:
    members: list[Any] = [JournalLogger(savedir=tmp_path)]
    if with_mlflow:
        members.append(
            MLflowLogger(savedir=tmp_path, tracking_uri=mlflow_server.url, experiment_name="pickled")
        )
    adapter = FanlogLogger(LoggersCollection(members))
    adapter.log_hyperparams({"lr": 0.1})
    copy = pickle.loads(pickle.dumps(adapter))
    assert copy.version == adapter.version
    adapter.finalize("success")
    copy.log_metrics({"after": 1.0}, step=0)  # the copy reopens the same run
    copy.finalize("success")
    records = [r for path in journal_paths(tmp_path) for r in fanlog.read_run(path).records]
    assert sorted((r.kind, r.key) for r in records) == [("metric", "after"), ("param", "lr")]
    if with_mlflow:
        client = MlflowClient(mlflow_server.url)
        (run,) = client.search_runs([client.get_experiment_by_name("pickled").experiment_id])
        assert run.data.params == {"lr": "0.1"} and run.data.metrics == {"after": 1.0}


@pytest.mark.slow
def test_ddp_spawn_fit_after_logging_before_fit(tmp_path: Path) -> None:
    """A hyperparameter logged in the parent, then a real 2-rank ddp_spawn fit on CPU."""
    journal = JournalLogger(savedir=tmp_path / "logs", log_on_workers=-1)
    adapter = FanlogLogger(journal)
    adapter.log_hyperparams({"before_fit": 1})
    fit(tmp_path, adapter, strategy="ddp_spawn", devices=2, max_epochs=1, enable_checkpointing=False)
    adapter.finalize("success")
    found: dict[int, list[str]] = {}
    for path in journal_paths(tmp_path / "logs"):
        run = fanlog.read_run(path)
        (rank,) = run.meta
        found.setdefault(rank, []).extend(f"{r.kind}:{r.key}" for r in run.records)
    assert sorted(found) == [0, 1]
    assert found[0].count("param:before_fit") == 1
    for rank in (0, 1):
        assert found[rank].count("metric:train_loss") == 1, found[rank]
        assert found[rank].count("metric:val_loss") == 1, found[rank]


def test_complex_hyperparameters_are_stored_as_strings(mlflow_server: Any, tmp_path: Path) -> None:
    mlf = MLflowLogger(savedir=tmp_path, tracking_uri=mlflow_server.url, experiment_name="complex")
    adapter = FanlogLogger(LoggersCollection([mlf, TensorBoardLogger(savedir=tmp_path)]))
    values = {"c128": np.complex128(1 + 2j), "c64": np.complex64(0.5 - 1j), "plain": complex(3, 4)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter.log_hyperparams(values)
        adapter.finalize("success")
    expected = {"c128": "(1+2j)", "c64": "(0.5-1j)", "plain": "(3+4j)"}
    assert fanlog.read_run(mlf.journal_path).params == expected
    client = MlflowClient(mlflow_server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("complex").experiment_id])
    assert {k: run.data.params[k] for k in expected} == expected


def test_mlflow_runs_get_mlflows_source_tags(mlflow_server: Any, tmp_path: Path) -> None:
    """A script run from a git repository, as MLflow's own context providers tag it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    script = repo / "train.py"
    script.write_text(
        textwrap.dedent(f"""
        from fanlog.backends.mlflow import MLflowLogger
        logger = MLflowLogger(savedir={str(tmp_path / "logs")!r}, tracking_uri={mlflow_server.url!r},
                              experiment_name="tags")
        with logger.start_logging():
            logger.log(1.0, "loss", step=0)
    """)
    )
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run([*git[:3], "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "train.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    commit = subprocess.run([*git[:3], "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, str(script)], check=True, cwd=repo, timeout=300)
    client = MlflowClient(mlflow_server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("tags").experiment_id])
    tags = run.data.tags
    assert tags["mlflow.source.name"] == str(script)
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.git.branch"] == "main"


def test_checkpoints_are_named_after_the_mlflow_experiment_and_tensorboard_keeps_quiet(
    mlflow_server: Any, tmp_path: Path
) -> None:
    mlf = MLflowLogger(savedir=tmp_path, tracking_uri=mlflow_server.url, experiment_name="named")
    collection = LoggersCollection([mlf, TensorBoardLogger(savedir=tmp_path)])
    adapter = FanlogLogger(collection, log_model="all")
    assert adapter.name == "named"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(tmp_path, adapter, callbacks=[ModelCheckpoint(save_top_k=-1)])
    assert not [w for w in caught if "does not support kind" in str(w.message)]
    checkpoint_dir = Path(trainer.checkpoint_callback.dirpath)
    assert checkpoint_dir.parent.parent.name == "named", checkpoint_dir
    assert len(list(checkpoint_dir.glob("*.ckpt"))) == 2
    client = MlflowClient(mlflow_server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("named").experiment_id])
    assert len(client.list_artifacts(run.info.run_id, "checkpoints")) == 2


@pytest.mark.parametrize("log_model", ["all", True, False])
def test_itwinai_lightning_adapter(mlflow_server: Any, tmp_path: Path, log_model: Any) -> None:
    mlf = itwinai.MLFlowLogger(
        savedir=str(tmp_path),
        tracking_uri=mlflow_server.url,
        experiment_name=f"itwinai-lightning-{log_model}",
    )
    adapter = itwinai.ItwinaiLogger(itwinai_logger=mlf, log_model=log_model)
    assert adapter.experiment is mlf and mlf.is_initialized
    adapter.log_hyperparams({"lr": 0.1})
    fit(tmp_path, adapter, callbacks=[ModelCheckpoint(monitor="val_loss", save_top_k=1)])
    assert not mlf.is_initialized, "finalize ends the itwinai logger's run"
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name(f"itwinai-lightning-{log_model}")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params == {"lr": "0.1"}
    assert {"train_loss", "val_loss", "epoch"} <= set(run.data.metrics)
    folders = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    expected = {"all": ["epoch=0-step=4", "epoch=1-step=8"], True: ["epoch=1-step=8"], False: []}
    assert folders == expected[log_model]
    for folder in folders:
        inside = sorted(Path(a.path).name for a in client.list_artifacts(run.info.run_id, folder))
        assert inside == sorted([f"{folder}.ckpt", "metadata.yaml", "aliases.txt"])


def test_itwinai_adapter_skip_finalize_leaves_the_logger_open(tmp_path: Path) -> None:
    console = itwinai.ConsoleLogger(savedir=str(tmp_path), log_freq="batch")
    adapter = itwinai.ItwinaiLogger(itwinai_logger=console, skip_finalize=True)
    adapter.log_metrics({"loss": 0.5}, step=0)
    adapter.finalize("success")
    assert console.is_initialized
    console.log(1.0, "after", step=1)
    console.destroy_logger_context()
    run = fanlog.read_run(console.journal_path)
    assert run.metric("loss") == [(0, 0.5)] and run.metric("after") == [(1, 1.0)]
    copy = pickle.loads(pickle.dumps(itwinai.ItwinaiLogger(itwinai_logger=itwinai.ConsoleLogger())))
    assert isinstance(copy, itwinai.ItwinaiLogger)
