"""Tutorial 4: PyTorch Lightning, logging through fanlog.

``FanlogLogger`` is a Lightning logger that forwards to any fanlog logger, here a
collection of the journal, the console and TensorBoard::

    python tutorials/04_lightning.py --epochs 3 --batches 20
    fanlog show mllogs

What it shows:

* ``Trainer(logger=FanlogLogger(collection, log_model=True))``: Lightning's metrics,
  hyperparameters (``self.save_hyperparameters()``) and, at the end, the best
  checkpoints ModelCheckpoint kept reach every tracker of the collection, without the
  trainer waiting on any of them. ``log_model="all"`` logs each checkpoint as it is saved.
* ``log_on_epoch(self, "train/loss", loss)``: one value per epoch, synchronised across
  devices only when there is more than one.
* ``log_learning_rate(self)``: the scheduler's learning rate, once per epoch.
* Ranks: the run is opened with the trainer's global rank and fanlog's
  ``log_on_workers`` decides which ranks store (Lightning's own loggers only log on rank 0).
"""

# ci-args: --epochs 1 --batches 4
# ci-requires: lightning tensorboard

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fanlog
from fanlog import ConsoleLogger, JournalLogger, LoggersCollection
from fanlog.lightning import FanlogLogger, log_learning_rate, log_on_epoch


class Regressor(LightningModule):
    """A small MLP fitting y = x·w; StepLR halves the learning rate every epoch."""

    def __init__(self, lr: float = 0.05, hidden: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.example_input_array = torch.zeros(1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        log_on_epoch(self, "train/loss", loss)
        log_learning_rate(self, "train/lr")
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        log_on_epoch(self, "val/loss", nn.functional.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)}


def data(batches: int, batch_size: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batches * batch_size, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="training batches per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--savedir", default="mllogs")
    parser.add_argument(
        "--log-model",
        choices=["none", "best", "all"],
        default="best",
        help="checkpoints to log: none, the best k at the end, or every one",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    loggers: list[fanlog.Logger] = [JournalLogger(savedir=args.savedir), ConsoleLogger(savedir=args.savedir)]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(fanlog.TensorBoardLogger(savedir=args.savedir))
    collection = LoggersCollection(loggers)
    adapter = FanlogLogger(
        collection, log_model={"none": False, "best": True, "all": "all"}[args.log_model], log_graph=True
    )
    trainer = Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=adapter,
        callbacks=[ModelCheckpoint(monitor="val/loss", save_top_k=2)],
        default_root_dir=args.savedir,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(
        Regressor(lr=args.lr),
        data(args.batches, args.batch_size, 0),
        data(max(1, args.batches // 4), args.batch_size, 1),
    )

    run = fanlog.read_run(collection.journal_path)
    losses = ", ".join(f"{v:.4f}" for _, v in run.metric("train/loss"))
    print(f"train/loss per epoch: {losses}")
    print(f"learning rates: {[v for _, v in run.metric('train/lr')]}")
    print(f"checkpoints logged: {[r.key for r in run.of_kind('artifact')]}")
    print(f"journal: {collection.journal_path}")


if __name__ == "__main__":
    main()
