"""A torchrun job (gloo, CPU) for the delivery-agent tests: every rank journals, MLflow takes
rank 0, TensorBoard the ranks in ``--tensorboard-workers``; ``delivery="agent"``.

Each rank prints one line ``REPORT {json}``: its rank, its agent's pid (None: no agent) and
the tracker modules it imported.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch.distributed as dist

from fanlog import JournalLogger, LoggersCollection, MLflowLogger, TensorBoardLogger

COUNT = 300


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--savedir", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--tensorboard-workers", type=json.loads, required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    common = {"savedir": args.savedir, "log_freq": "batch"}
    logger = LoggersCollection(
        [
            JournalLogger(log_on_workers=-1, **common),
            MLflowLogger(
                experiment_name=args.experiment, tracking_uri=args.tracking_uri, log_on_workers=0, **common
            ),
            TensorBoardLogger(log_on_workers=args.tensorboard_workers, **common),
        ],
        delivery="agent",
    )
    logger.create_logger_context(rank=rank)
    agent = logger._run.pipeline.agent  # noqa: SLF001 - the test checks which ranks start one
    for step in range(COUNT):
        logger.log(float(rank * 10_000 + step), "loss", step=step)
    dist.barrier()
    ended = logger.destroy_logger_context()
    imported = sorted({m.split(".")[0] for m in sys.modules} & {"mlflow", "tensorboard"})
    print(
        "REPORT "
        + json.dumps(
            {"rank": rank, "agent_pid": agent.pid if agent else None, "ended": ended, "imported": imported}
        ),
        flush=True,
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
