"""Tutorial 3: a plain PyTorch DDP loop under torchrun, logging to several trackers.

Run it on CPU with two processes (gloo)::

    torchrun --nproc_per_node=2 tutorials/03_ddp_torchrun.py --epochs 2 --batches 8

or on a SLURM cluster, one task per GPU (MASTER_ADDR/MASTER_PORT set by your script)::

    srun python tutorials/03_ddp_torchrun.py --mlflow-workers 0

The rank rules this loop shows (docs/distributed.md has the full text):

* **Every rank creates the logger.** ``create_logger_context()`` finds the rank in the
  launcher's variables (torchrun, SLURM, Open MPI, MPICH/PMI), agrees on one run id with
  rank 0, and opens a per-rank journal ``<savedir>/runs/<run id>/rank-<r>/``.
* **``log_on_workers`` picks the ranks that store records, per tracker.** By default the
  journal and TensorBoard keep every rank (``-1``; TensorBoard writes one subdirectory
  per rank) and MLflow rank 0 only (``0``). With a tracking server, ``--tracking-uri
  http://... --mlflow-workers -1`` gives a parent run for rank 0 and a child run for
  each other rank. Any rank list works too, e.g. ``--tensorboard-workers 0,2``.
* **``reduce=`` is a collective.** ``log(loss, "train/loss_mean", reduce="mean")`` averages
  the value over all ranks, then the ranks allowed to log store it. Every rank must make
  the same ``reduce=`` calls in the same order, also ranks that do not log. A rank that
  skips one makes the others raise ``fanlog.aggregation.ReduceError`` after
  ``FANLOG_REDUCE_TIMEOUT`` seconds instead of hanging.
* **``on_epoch=True`` accumulates** over the epoch's batches on the device (no
  synchronisation per batch) and logs one value at ``logger.end_epoch()``.
"""
# ci-launcher: torchrun --standalone --nproc_per_node 2
# ci-args: --epochs 1 --batches 4 --dist-backend gloo
# ci-requires: tensorboard mlflow
# ci-timeout: 400

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from fanlog import JournalLogger, Logger, LoggersCollection, MLflowLogger, TensorBoardLogger
from fanlog.rank import detect_placement


def workers(text: str) -> int | list[int] | None:
    """``-1``, ``0``, ``0,2`` or ``off`` (this tracker is not used)."""
    if text == "off":
        return None
    if "," in text:
        return [int(part) for part in text.split(",") if part]
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="batches per epoch and rank")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--savedir", default="mllogs")
    parser.add_argument("--experiment", default="fanlog-ddp")
    parser.add_argument("--tracking-uri", default=None, help="MLflow URI (default: sqlite in savedir)")
    parser.add_argument("--journal-workers", type=workers, default=-1)
    parser.add_argument("--tensorboard-workers", type=workers, default=-1)
    parser.add_argument("--mlflow-workers", type=workers, default=0)
    parser.add_argument("--wandb-workers", type=workers, default=None, help="off by default; offline")
    parser.add_argument(
        "--log-freq",
        default="batch",
        type=lambda s: int(s) if s.isdigit() else s,
        help="'batch', 'epoch' or every N batches",
    )
    parser.add_argument("--dist-backend", default="nccl" if torch.cuda.is_available() else "gloo")
    parser.add_argument(
        "--crash",
        default=None,
        metavar="RANK:EPOCH:BATCH",
        help="make RANK die (os._exit) at that batch, to see the other ranks stop cleanly",
    )
    return parser.parse_args(argv)


def build_logger(args: argparse.Namespace) -> Logger:
    """One logger per tracker, each with its own log_on_workers; a collection if several."""
    common: dict[str, Any] = {"savedir": args.savedir, "log_freq": args.log_freq}
    loggers: list[Logger] = []
    if args.journal_workers is not None:
        loggers.append(JournalLogger(log_on_workers=args.journal_workers, **common))
    if args.tensorboard_workers is not None:
        loggers.append(TensorBoardLogger(log_on_workers=args.tensorboard_workers, flush_secs=5, **common))
    if args.mlflow_workers is not None:
        loggers.append(
            MLflowLogger(
                experiment_name=args.experiment,
                tracking_uri=args.tracking_uri,
                log_on_workers=args.mlflow_workers,
                per_rank_runs=True,
                **common,
            )
        )
    if args.wandb_workers is not None:
        from fanlog import WandBLogger

        loggers.append(
            WandBLogger(
                project_name=args.experiment, mode="offline", log_on_workers=args.wandb_workers, **common
            )
        )
    if not loggers:
        raise SystemExit("no tracker selected: every --*-workers is 'off'")
    return loggers[0] if len(loggers) == 1 else LoggersCollection(loggers)


def init_distributed(backend: str) -> tuple[int, int, torch.device]:
    """Join the process group; torchrun's variables, or SLURM's/MPI's (read by fanlog.rank)."""
    place = detect_placement()
    if place.world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        dist.init_process_group(backend, rank=place.rank, world_size=place.world_size)
    if torch.cuda.is_available():
        torch.cuda.set_device(place.local_rank)
        return place.rank, place.world_size, torch.device("cuda", place.local_rank)
    return place.rank, place.world_size, torch.device("cpu")


def make_data(args: argparse.Namespace, world_size: int) -> TensorDataset:
    """A small regression problem, the same on every rank (the sampler shards it)."""
    generator = torch.Generator().manual_seed(args.seed)
    n = args.batches * args.batch_size * world_size
    x = torch.randn(n, 8, generator=generator)
    y = x @ torch.randn(8, 1, generator=generator) + 0.1 * torch.randn(n, 1, generator=generator)
    return TensorDataset(x, y)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rank, world_size, device = init_distributed(args.dist_backend)
    crash = [int(part) for part in args.crash.split(":")] if args.crash else None
    torch.manual_seed(args.seed)
    dataset = make_data(args, world_size)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    model: nn.Module = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)).to(device)
    if world_size > 1:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.index is not None else None
        )
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss_fn = nn.MSELoss()

    logger = build_logger(args)
    with logger.start_logging():  # every rank: a failure marks the run FAILED, SIGTERM KILLED
        logger.save_hyperparameters(
            {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "world_size": world_size}
        )
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            model.train()
            for batch_idx, (x, y) in enumerate(loader):
                if crash is not None and crash == [rank, epoch, batch_idx]:
                    os._exit(3)  # a hard crash: no flush, no exception, like an OOM kill
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                step = epoch * args.batches + batch_idx
                value = loss.detach()  # stays on the device: logging never syncs it
                # This rank's own loss; stored only by the ranks each tracker keeps.
                logger.log(value, "train/loss", step=step, batch_idx=batch_idx)
                # The mean over ranks: a collective, so every rank calls it.
                logger.log(value, "train/loss_mean", step=step, batch_idx=batch_idx, reduce="mean")
                # One value per epoch, accumulated on the device: this rank's mean, the mean
                # over every rank's batches, and the largest batch loss of any rank.
                logger.log(value, "epoch/loss_rank", batch_idx=batch_idx, on_epoch=True)
                logger.log(value, "epoch/loss", batch_idx=batch_idx, on_epoch=True, reduce="mean")
                logger.log(
                    value, "epoch/loss_max", batch_idx=batch_idx, on_epoch=True, reduce_fx="max", reduce="max"
                )
            logger.end_epoch()  # logs the on_epoch values (reducing the reduce= ones)
        if rank == 0:
            print(
                f"run {logger.run_info.run_id if logger.run_info else '?'} done "
                f"({time.strftime('%H:%M:%S')})",
                flush=True,
            )
    if dist.is_initialized():
        dist.barrier()  # every collective is released before the group goes (a gloo teardown race)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
