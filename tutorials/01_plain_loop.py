"""Tutorial 1: a plain PyTorch training loop that logs to several trackers at once.

Run it::

    python tutorials/01_plain_loop.py                  # 5 epochs, writes ./mllogs
    python tutorials/01_plain_loop.py --epochs 1 --batches 4 --savedir /tmp/mllogs

then look at the run::

    fanlog ls mllogs
    fanlog show mllogs
    fanlog plot mllogs -o curves.png
    tensorboard --logdir mllogs/tensorboard          # if tensorboard is installed
    mlflow ui --backend-store-uri sqlite:///mllogs/mlflow.db   # if mlflow is installed

What it shows:

* **One collection, many trackers.** The journal (every record, always), the console,
  and TensorBoard and MLflow when their libraries are installed. The loop calls
  ``logger.log`` once per value; each tracker gets what its gate and kinds allow.
* **Batch level and epoch level.** Values logged with ``batch_idx=`` are batch-level:
  the journal and TensorBoard (``log_freq=...``) keep them, while MLflow and the console
  (``log_freq="epoch"``) keep only the values logged without ``batch_idx``.
* **Tensors as they are.** ``loss.detach()`` is logged without ``.item()``; fanlog takes
  the value off the training thread.
* **Nothing to clean up by hand.** ``start_logging()`` closes every run as finished, or as
  failed if the loop raises.
"""
# ci-args: --epochs 2 --batches 4

from __future__ import annotations

import argparse
import importlib.util
import math

import torch
from torch import nn

import fanlog
from fanlog import ConsoleLogger, JournalLogger, Logger, LoggersCollection


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=50, help="training batches per epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--savedir", default="mllogs")
    parser.add_argument(
        "--tensorboard-freq",
        type=int,
        default=2,
        help="TensorBoard keeps every n-th batch (and every epoch value)",
    )
    parser.add_argument("--no-tensorboard", action="store_true")
    parser.add_argument("--no-mlflow", action="store_true")
    return parser.parse_args(argv)


def build_logger(args: argparse.Namespace) -> Logger:
    """The journal and the console always; TensorBoard and MLflow when installed."""
    loggers: list[Logger] = [
        JournalLogger(savedir=args.savedir, log_freq="batch"),
        ConsoleLogger(savedir=args.savedir, interval=2.0, total_epochs=args.epochs),
    ]
    if not args.no_tensorboard and importlib.util.find_spec("tensorboard") is not None:
        from fanlog import TensorBoardLogger

        loggers.append(TensorBoardLogger(savedir=args.savedir, log_freq=args.tensorboard_freq))
    if not args.no_mlflow and importlib.util.find_spec("mlflow") is not None:
        from fanlog import MLflowLogger

        # No tracking URI: an SQLite store at <savedir>/mlflow.db, artifacts beside it.
        # model_flavour=False stores the model as a state_dict artifact; True uses
        # mlflow.pytorch.log_model, which also infers pip requirements (slower).
        loggers.append(MLflowLogger(savedir=args.savedir, experiment_name="tutorial-01", model_flavour=False))
    # Each tracker skips the kinds it cannot store (the console: histograms, the model).
    return LoggersCollection(loggers, run_name="plain-loop", unsupported="ignore")


def make_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Two Gaussian blobs in 2-D: small, learnable, and nothing to download."""
    count = args.batches * args.batch_size
    labels = torch.randint(0, 2, (count,))
    centres = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    points = centres[labels] + 0.8 * torch.randn(count, 2)
    return points, labels


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    points, labels = make_data(args)
    val_points, val_labels = make_data(args)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, args.epochs))
    loss_fn = nn.CrossEntropyLoss()

    logger = build_logger(args)
    with logger.start_logging():
        logger.save_hyperparameters(
            {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "seed": args.seed,
                "optimizer": {"name": "SGD", "lr": args.lr, "momentum": 0.9},
            }
        )
        step = 0
        for epoch in range(args.epochs):
            model.train()
            epoch_loss = torch.zeros(())
            for batch_idx in range(args.batches):
                rows = slice(batch_idx * args.batch_size, (batch_idx + 1) * args.batch_size)
                loss = loss_fn(model(points[rows]), labels[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                epoch_loss += loss.detach()
                # Batch level: a global step, so every tracker draws the same x axis.
                logger.log(loss.detach(), "train/loss", step=step, batch_idx=batch_idx)
                step += 1
            model.eval()
            with torch.no_grad():
                val_logits = model(val_points)
                val_loss = loss_fn(val_logits, val_labels)
                accuracy = (val_logits.argmax(dim=1) == val_labels).float().mean()
            # Epoch level: no batch_idx, so every tracker keeps these.
            logger.log_metrics(
                {
                    "train/epoch_loss": epoch_loss / args.batches,
                    "val/loss": val_loss,
                    "val/accuracy": accuracy,
                    "lr": scheduler.get_last_lr()[0],
                },
                step=epoch,
            )
            logger.log(model[0].weight.detach().flatten(), "weights/layer0", kind="histogram", step=epoch)
            scheduler.step()
            logger.end_epoch()
        logger.log(model, "model", kind="model")
        run_dir = logger.run_info.run_dir if logger.run_info else args.savedir

    run = fanlog.read_run(run_dir)
    accuracies = run.metric("val/accuracy")
    final = {"val/accuracy": accuracies[-1][1], "train/loss": run.metric("train/loss")[-1][1]}
    if not all(math.isfinite(v) for v in final.values()):
        raise SystemExit(f"training diverged: {final}")
    print(f"run {run.meta[0]['run_id']}: {len(run.records)} records in {run_dir}")
    print(f"final validation accuracy {final['val/accuracy']:.3f}; next: fanlog show {args.savedir}")
    return final


if __name__ == "__main__":
    main()
