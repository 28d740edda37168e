"""Every prov kind through the compat Prov4MLLogger, on whatever yprov4ml is installed (run by
tests/test_itwinai_real.py with an interpreter that has yprov4ml 2.0.x). Prints a JSON result."""

from __future__ import annotations

import json
import os
import sys
from importlib import metadata

import torch

from fanlog.compat.itwinai import Prov4MLLogger


def main(workdir: str) -> None:
    os.chdir(workdir)
    logger = Prov4MLLogger(
        provenance_save_dir="prov",
        experiment_name="any",
        create_svg=False,
        savedir="journal",
        log_freq="batch",
    )
    net = torch.nn.Linear(3, 2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(10, 3)), batch_size=4)
    logger.create_logger_context(rank=0)
    logger.save_hyperparameters({"lr": 0.01, "optimizer": "sgd"})
    for step in range(3):
        logger.log(1.0 / (step + 1), "loss", step=step)  # no context: itwinai's "training"
        logger.log(0.5, "val/acc", step=step, context="validation")
    logger.log(None, None, kind="system", step=0)
    logger.log(0.2, "epoch_time", kind="execution_time", step=0)
    logger.log(1000.0, "flops", kind="flops_pb", step=0)
    logger.log(net, "net", kind="model", step=1)
    logger.log(net, "best", kind="best_model")
    logger.log(loader, "train_data", kind="dataset")
    logger.log(None, "docs", kind="prov_documents")
    assert logger.flush(timeout=240)
    errors = logger.delivery_errors()
    logger.destroy_logger_context()
    folder = logger.backend.experiment_dir if logger.backend else None
    print(
        "RESULT "
        + json.dumps({"version": metadata.version("yprov4ml"), "errors": errors, "experiment_dir": folder})
    )


if __name__ == "__main__":
    main(sys.argv[1])
