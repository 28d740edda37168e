"""itwinai's real ``TorchTrainer`` on fanlog's compat loggers (run by tests/test_itwinai_real.py).

Usage: python itwinai_real_trainer.py <mlflow url> <workdir>. Needs ``itwinai`` importable (an
interpreter where it is installed; fanlog on PYTHONPATH). fanlog's compat classes are
registered as virtual subclasses of itwinai's, so that itwinai's ``get_mlflow_logger`` finds
the MLflow member and the trainer takes its "train run, then child run" path.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from itwinai import loggers as itwinai_loggers
from itwinai.torch.trainer import TorchTrainer
from torch.utils.data import TensorDataset

from fanlog.compat.itwinai import LoggersCollection, MLFlowLogger, Prov4MLLogger, TensorBoardLogger


def main(url: str, workdir: str) -> None:
    os.chdir(workdir)
    itwinai_loggers.MLFlowLogger.register(MLFlowLogger)
    itwinai_loggers.LoggersCollection.register(LoggersCollection)
    mlf = MLFlowLogger(savedir="m", experiment_name="real-trainer", tracking_uri=url, log_freq="epoch")
    tb = TensorBoardLogger(savedir="tb", log_freq="batch")
    prov = Prov4MLLogger(provenance_save_dir="prov", experiment_name="real", create_svg=False, savedir="p")
    logger = LoggersCollection([mlf, tb, prov])
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    trainer = TorchTrainer(
        config={"batch_size": 8, "optimizer": "sgd", "optim_lr": 0.1, "num_workers_dataloader": 0},
        epochs=2,
        model=torch.nn.Linear(4, 3),
        strategy=None,
        logger=logger,
        checkpoints_location=os.path.join(workdir, "ckpts"),
        checkpoint_every=1,
        disable_tqdm=True,
        run_name="real-run",
    )
    trainer.execute(TensorDataset(x[:32], y[:32]), TensorDataset(x[32:], y[32:]))
    print(
        "RESULT "
        + json.dumps(
            {
                "train_run_id": trainer.mlflow_train_run_id,
                "worker_run_id": trainer.mlflow_worker_run_id,
                "found_mlflow": trainer.mlflow_logger is mlf,
                "tb_logdir": tb.backend.logdir if tb.backend else None,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
