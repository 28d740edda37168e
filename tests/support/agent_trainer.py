"""A training process for the delivery-agent tests (run as a script, killed with real signals).

``python agent_trainer.py SPEC`` where SPEC is JSON: ``url`` (MLflow tracking URI),
``experiment``, ``savedir``, ``delivery``, ``count`` (records logged at first), ``then``:

* ``"destroy"``: flush, then end the run;
* ``"wait"``: flush, print, then for each line on stdin log ``count`` more records (keys
  ``loss``), and end the run at end of file;
* ``"hang"``: print after logging (without a flush) and sleep until killed;
* ``"stream"``: log forever, printing once the first ``count`` records are logged.

Each report is one JSON line on stdout: the journal path, the agent's pid, what flush()
returned, and which tracker modules the process has imported.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from fanlog import LoggersCollection, MLflowLogger, TensorBoardLogger

TRACKER_MODULES = ("mlflow", "tensorboard", "wandb", "azureml", "prov4ml", "yprov4ml")


def report(pipeline: Any, **fields: Any) -> None:
    agent = pipeline.agent
    imported = sorted({m.split(".")[0] for m in sys.modules} & set(TRACKER_MODULES))
    print(
        json.dumps(
            {
                "journal": pipeline.journal.path,
                "agent_pid": agent.pid if agent else None,
                "delivery": pipeline.delivery,
                "imported": imported,
                "restarts": agent.restarts if agent else 0,
                **fields,
            }
        ),
        flush=True,
    )


def main(spec: dict[str, Any]) -> None:
    options = spec.get("options", {})
    logger = LoggersCollection(
        [
            MLflowLogger(
                experiment_name=spec["experiment"],
                tracking_uri=spec["url"],
                savedir=spec["savedir"],
                log_freq="batch",
            ),
            TensorBoardLogger(savedir=spec["savedir"] + "/tb", log_freq="batch"),
        ],
        delivery=spec["delivery"],
        **options,
    )
    logger.create_logger_context()
    pipeline = logger._run.pipeline  # noqa: SLF001 - the test reads the agent's pid from it
    step = 0

    def log_some(count: int) -> None:
        nonlocal step
        for _ in range(count):
            logger.log(float(step), "loss", step=step)
            step += 1

    log_some(spec["count"])
    then = spec["then"]
    if then == "hang":
        report(pipeline)
        time.sleep(3600)
    if then == "stream":
        report(pipeline)
        while True:
            log_some(10)
            time.sleep(0.001)
    flushed = logger.flush(spec.get("flush_timeout", 120))
    report(pipeline, flushed=flushed, step=step)
    if then == "wait":
        for _line in sys.stdin:
            log_some(spec["count"])
            flushed = logger.flush(spec.get("flush_timeout", 120))
            report(pipeline, flushed=flushed, step=step)
    ended = logger.destroy_logger_context()
    report(pipeline, ended=ended, step=step)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
