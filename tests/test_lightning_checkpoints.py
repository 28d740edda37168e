"""Lightning's ModelCheckpoint (default save_top_k=1) deletes a checkpoint right after the next
one is saved. With log_model="all", every checkpoint must still reach MLflow, every time.

Real `Trainer.fit` runs on CPU, ten in a row, into a real `mlflow server`; every checkpoint is
downloaded back from MLflow and loaded with torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

lightning = pytest.importorskip("lightning")
pytest.importorskip("mlflow")
from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from fanlog import read_run  # noqa: E402
from fanlog.backends.mlflow import MLflowLogger  # noqa: E402
from fanlog.lightning import FanlogLogger  # noqa: E402

pytestmark = pytest.mark.slow
FITS, EPOCHS = 10, 3


class Line(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    return DataLoader(TensorDataset(x, 2 * x + 1), batch_size=8)


@pytest.mark.timeout(900)
def test_every_checkpoint_reaches_mlflow_over_many_fits(tmp_path: Path, mlflow_server: Any) -> None:
    client = MlflowClient(tracking_uri=mlflow_server.url)
    for fit in range(FITS):
        workdir = tmp_path / f"fit-{fit}"
        logger = MLflowLogger(
            savedir=str(workdir / "logs"),
            tracking_uri=mlflow_server.url,
            experiment_name="lightning-checkpoints",
            log_freq="batch",
        )
        checkpoint = ModelCheckpoint(dirpath=workdir / "ckpt")  # save_top_k=1: the old one goes
        trainer = Trainer(
            max_epochs=EPOCHS,
            accelerator="cpu",
            devices=1,
            logger=FanlogLogger(logger, log_model="all"),
            callbacks=[checkpoint],
            default_root_dir=workdir,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
        )
        trainer.fit(Line(), loader())
        assert not logger.is_active  # the adapter ended the run it started
        journal = read_run(str(logger.journal_path))
        assert journal.meta[0]["status"] == "finished"
        logged = {r.key: r.value for r in journal.of_kind("artifact")}
        assert sorted(logged) == [f"checkpoints/epoch={e}-step={4 * (e + 1)}.ckpt" for e in range(EPOCHS)], (
            logged
        )
        assert len(list((workdir / "ckpt").iterdir())) == 1  # Lightning kept only the last one

        run_id = logger.members()[0].backend.run_id
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        stored = sorted(a.path for a in client.list_artifacts(run_id, "checkpoints"))
        assert stored == sorted(logged)
        download = Path(client.download_artifacts(run_id, "checkpoints", str(workdir / "dl")))
        for key, local in logged.items():
            name = key.split("/", 1)[1]
            assert _digest(download / name) == _digest(local), key
            state = torch.load(download / name, map_location="cpu", weights_only=False)
            assert f"epoch={state['epoch']}-" in name


def _digest(path: Any) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
