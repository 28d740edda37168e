"""Tutorial 2: choose the trackers in a YAML file, not in code.

The training loop below never names a tracker. ``fanlog.from_config`` builds the
loggers from a config file, so moving from MLflow to Weights & Biases is a change of
config only::

    python tutorials/02_swap_by_config.py --config tutorials/configs/mlflow.yaml
    python tutorials/02_swap_by_config.py --config tutorials/configs/wandb.yaml
    FANLOG_CONFIG=tutorials/configs/wandb.yaml python tutorials/02_swap_by_config.py

Without ``--config`` the file named by ``FANLOG_CONFIG`` is used, else
``configs/mlflow.yaml`` next to this script. ``--savedir`` overrides the save directory
of every configured logger. A typo in the config (an unknown option or backend) stops
the script before training, with the accepted names in the message;
``python -m fanlog.config FILE`` checks a file, ``python -m fanlog.config --schema``
prints the JSON Schema the files are checked against.
"""

# ci-args: --epochs 1 --batches 4
# ci-env: WANDB_MODE=offline

from __future__ import annotations

import argparse
import os

import torch
from torch import nn

import fanlog

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", default=None, help="YAML config (default: $FANLOG_CONFIG, else configs/mlflow.yaml)"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="training batches per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--savedir", default="mllogs")
    return parser.parse_args(argv)


def config_source(args: argparse.Namespace) -> str:
    """--config, else FANLOG_CONFIG, else the MLflow example config."""
    return args.config or os.environ.get("FANLOG_CONFIG") or os.path.join(HERE, "configs", "mlflow.yaml")


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    true_w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    logger = fanlog.from_config(config_source(args), savedir=args.savedir)
    with logger.start_logging():
        logger.save_hyperparameters(
            {"lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs, "seed": args.seed}
        )
        step = 0
        for epoch in range(args.epochs):
            total = 0.0
            for batch_idx in range(args.batches):
                x = torch.randn(args.batch_size, 4)
                y = x @ true_w + 0.1 * torch.randn(args.batch_size, 1)
                loss = nn.functional.mse_loss(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                logger.log(loss.detach(), "train/loss", step=step, batch_idx=batch_idx)
                total += loss.item()
                step += 1
            logger.log(total / args.batches, "train/epoch_loss", step=epoch)
            logger.end_epoch()
    print(
        f"logged to: {', '.join(type(m).__name__ for m in logger.members())}; journal: {logger.journal_path}"
    )
    return str(logger.journal_path)


if __name__ == "__main__":
    main()
