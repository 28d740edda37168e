"""A small PyTorch training run logged to the embedded defaults (``fanlog demo``, ``make demo``).

A plain loop on synthetic regression data. Batch-level metrics are gated by
`log_freq`; epoch-level metrics are logged without `batch_idx`. Trackers that are
installed and need no server (MLflow's local store, TensorBoard) join in.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from fanlog.backends import installed
from fanlog.journal.layout import run_dir_of
from fanlog.logger import Logger, LoggersCollection


def optional_trackers(savedir: str, log_freq: int | str) -> tuple[list[Logger], list[str]]:
    """Loggers for the trackers that are installed, and the commands that open their UIs."""
    loggers: list[Logger] = []
    hints: list[str] = []
    if installed("mlflow") and "MLFLOW_TRACKING_URI" not in os.environ:
        from fanlog.backends.mlflow import MLflowLogger, default_tracking_uri

        loggers.append(MLflowLogger(savedir=savedir, experiment_name="fanlog-demo", log_freq=log_freq))
        hints.append(f"mlflow ui --backend-store-uri {default_tracking_uri(savedir)}")
    if installed("tensorboard"):
        from fanlog.backends.tensorboard import TensorBoardLogger

        tb_dir = os.path.join(savedir, "tensorboard")  # where TensorBoardLogger puts its events
        loggers.append(TensorBoardLogger(savedir=savedir, log_freq=log_freq))
        hints.append(f"tensorboard --logdir {tb_dir}")
    return loggers, hints


def train(logger: Logger, epochs: int, batches: int, seed: int = 0) -> dict[str, float]:
    """Fit a two-layer MLP to y = sin(x·w/√8) with SGD; log batch and epoch metrics."""
    import torch

    torch.manual_seed(seed)
    inputs = torch.randn(batches * 32, 8)
    targets = torch.sin(inputs @ torch.randn(8, 1) / 8**0.5)  # unit-variance argument: learnable
    hidden = torch.nn.Linear(8, 32)
    model = torch.nn.Sequential(hidden, torch.nn.Tanh(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    logger.save_hyperparameters(
        {"optimizer": {"name": "SGD", "lr": 0.1, "momentum": 0.9}, "epochs": epochs, "batch_size": 32}
    )
    step = 0
    epoch_loss = 0.0
    for epoch in range(epochs):
        running = torch.zeros(())
        for batch_idx in range(batches):
            x = inputs[batch_idx * 32 : (batch_idx + 1) * 32]
            y = targets[batch_idx * 32 : (batch_idx + 1) * 32]
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.detach()  # stays a tensor: no .item() per step
            logger.log(loss, "train/loss", step=step, batch_idx=batch_idx)
            step += 1
        epoch_loss = float(running) / batches
        logger.log(epoch_loss, "train/epoch_loss", step=epoch)
        logger.log(scheduler.get_last_lr()[0], "train/lr", step=epoch)
        scheduler.step()
        logger.end_epoch()
    weights = hidden.weight.detach()
    logger.log(weights, "layer0/weights", kind="histogram", step=epochs)
    logger.log(model, "model", kind="model")
    return {"final_epoch_loss": epoch_loss, "steps": float(step)}


def run_demo(savedir: str, epochs: int, batches: int, log_freq: int, extras: bool) -> dict[str, Any]:
    """Train, log, plot; return where everything went."""
    from fanlog.backends.console import ConsoleLogger
    from fanlog.backends.journal import JournalLogger
    from fanlog.plots import plot_run
    from fanlog.reader import read_run

    loggers: list[Logger] = [
        JournalLogger(savedir=savedir, log_freq=log_freq),
        ConsoleLogger(savedir=savedir, log_freq=log_freq, total_epochs=epochs, interval=1.0),
    ]
    hints: list[str] = []
    if extras:
        more, hints = optional_trackers(savedir, log_freq)
        loggers.extend(more)
    logger = LoggersCollection(loggers, savedir=savedir, run_name="fanlog-demo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # console/histogram: unsupported kinds
        with logger.start_logging():
            result = train(logger, epochs, batches)
    run_dir = run_dir_of(logger.journal_path or "")
    plot = plot_run(read_run(run_dir), output=os.path.join(run_dir, "curves.png"))
    return {"journal": logger.journal_path, "run_dir": run_dir, "plot": plot, "hints": hints, **result}
