"""Tutorial 5: log on an offline HPC compute node, deliver the run later with `fanlog sync`.

The compute node has no network, so the loop logs to the journal only (and, to show
the other common case, to an MLflow server that is configured but unreachable). Later,
on a login node, ``fanlog sync`` delivers everything the tracker has not received yet.

Run it::

    python tutorials/05_offline_hpc_sync.py                       # journal, then sync to MLflow
    python tutorials/05_offline_hpc_sync.py --to tensorboard      # ... or to TensorBoard
    python tutorials/05_offline_hpc_sync.py --tracking-uri http://127.0.0.1:5000   # a server

The same on a real cluster::

    # compute node (sbatch): the training script logs with JournalLogger(savedir="mllogs")
    rsync -a node:/scratch/me/mllogs ./mllogs                      # copy the save dir
    fanlog sync mllogs --to mlflow --tracking-uri https://mlflow.example.org --dry-run
    fanlog sync mllogs --to mlflow --tracking-uri https://mlflow.example.org

What it shows:

* **The journal is enough.** Everything logged is in ``<savedir>/runs/<run>/rank-<r>/``;
  no tracker library is needed on the compute node.
* **A configured but unreachable tracker costs the loop nothing.** Its records wait in
  the journal; ``destroy_logger_context()`` says which ``fanlog sync`` command delivers them.
* **Sync is exactly-once.** ``--dry-run`` says what would be sent; a second sync sends nothing;
  an interrupted sync continues where it stopped.
"""
# ci-args: --epochs 1 --batches 4 --to tensorboard
# ci-requires: mlflow tensorboard

from __future__ import annotations

import argparse
import os
import warnings

import torch
from torch import nn

import fanlog
from fanlog import JournalLogger, Logger, LoggersCollection


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="training batches per epoch")
    parser.add_argument("--savedir", default="mllogs")
    parser.add_argument(
        "--to",
        default="mlflow",
        choices=["mlflow", "tensorboard", "wandb"],
        help="the tracker to sync to on the 'login node'",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow server to sync to (default: an SQLite store in the savedir)",
    )
    parser.add_argument(
        "--no-unreachable",
        action="store_true",
        help="do not configure the unreachable MLflow server on the compute node",
    )
    return parser.parse_args(argv)


def compute_node_logger(args: argparse.Namespace) -> Logger:
    """The journal, plus (optionally) an MLflow server the node cannot reach."""
    loggers: list[Logger] = [JournalLogger(savedir=args.savedir, log_freq="batch")]
    if not args.no_unreachable:
        from fanlog import MLflowLogger

        loggers.append(
            MLflowLogger(
                savedir=args.savedir,
                tracking_uri="http://127.0.0.1:9",  # port 9: nothing listens
                experiment_name="offline-hpc",
                close_timeout=2.0,
                down_after=1.0,
            )
        )
    return LoggersCollection(loggers, savedir=args.savedir, experiment_name="offline-hpc")


def train_on_compute_node(args: argparse.Namespace) -> str:
    """A small regression; returns the journal path."""
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    logger = compute_node_logger(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unreachable server's warnings, expected here
        with logger.start_logging(rank=0):
            logger.save_hyperparameters({"lr": 0.05, "model": {"in": 8, "out": 1}})
            for epoch in range(args.epochs):
                for batch in range(args.batches):
                    x = torch.randn(16, 8)
                    loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    step = epoch * args.batches + batch
                    logger.log(loss.detach(), "train/loss", step=step, batch_idx=batch)
                logger.log(float(epoch), "epoch", step=epoch)
                logger.end_epoch()
            logger.log("trained offline on a compute node", "notes.txt", kind="text")
    assert logger.journal_path is not None
    return logger.journal_path


def sync_on_login_node(args: argparse.Namespace) -> None:
    options: dict[str, object] = {}
    if args.to == "mlflow":
        options["tracking_uri"] = args.tracking_uri or (
            f"sqlite:///{os.path.abspath(os.path.join(args.savedir, 'mlflow-synced.db'))}"
        )
    elif args.to == "wandb":
        options["mode"] = "offline"
    preview = fanlog.sync(args.savedir, to=args.to, dry_run=True, **options)
    print("dry run:\n" + preview.summary())
    report = fanlog.sync(args.savedir, to=args.to, **options)
    print("sync:\n" + report.summary())
    again = fanlog.sync(args.savedir, to=args.to, **options)
    print("again:\n" + again.summary())
    assert report.ok and again.sent == 0, "a second sync must send nothing"
    print(
        f"\nthe same from a shell: fanlog sync {args.savedir} --to {args.to}"
        + "".join(f" --{k.replace('_', '-')} {v}" for k, v in options.items())
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    journal = train_on_compute_node(args)
    data = fanlog.read_run(journal)
    print(f"compute node: {len(data.metrics)} metrics in {journal}")
    sync_on_login_node(args)


if __name__ == "__main__":
    main()
