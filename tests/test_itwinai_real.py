"""itwinai's real ``TorchTrainer``, and yprov4ml 2.0.x (itwinai's pin), driving fanlog.

fanlog's venv has yprov4ml 3.2.4 and no itwinai (itwinai pins yprov4ml 2.0.9 and needs ray).
These tests run a script in a subprocess with another interpreter, given by the environment
variable ``FANLOG_ITWINAI_PYTHON``: one where ``itwinai`` 0.4.x and ``yprov4ml`` 2.0.x are
installed (docs/migration-itwinai.md says how such a venv is made); fanlog comes from this
checkout through ``PYTHONPATH``. Without it they are skipped, except the yprov4ml test on this
venv's own 3.2.4, so that both yprov4ml APIs are exercised by the same script.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

SUPPORT = Path(__file__).parent / "support"
SRC = Path(__file__).parent.parent / "src"
ITWINAI_PYTHON = os.environ.get("FANLOG_ITWINAI_PYTHON", "")
needs_itwinai = pytest.mark.skipif(not ITWINAI_PYTHON, reason="FANLOG_ITWINAI_PYTHON is not set")


YPROV4ML_2_0 = [  # itwinai's pin and what it imports that this venv lacks, all without their deps
    "yprov4ml==2.0.9",
    "codecarbon==3.3.2",
    "rapidfuzz==3.14.6",
    "aenum==3.1.17",
    "GPUtil==1.4.0",
    "gpustat==1.1.1",
    "blessed==1.52.0",
    "jinxed==2.1.0",
    "pynvml==13.0.1",
    "nvidia-ml-py==13.615.71",
]


@pytest.fixture(scope="session")
def yprov4ml_2_0(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A folder that, put first on PYTHONPATH, gives this venv yprov4ml 2.0.9 instead of its
    3.2.x: both APIs are then tested in every CI run, without a second venv."""
    target = tmp_path_factory.mktemp("yprov4ml-2.0.9")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *YPROV4ML_2_0],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot install yprov4ml 2.0.9 from the package index: {done.stderr[-500:]}")
    return str(target)


def run_script(python: str, script: str, *args: str, first_on_path: str | None = None) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [first_on_path, str(SRC)])),
        "PYTHONDONTWRITEBYTECODE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    done = subprocess.run(
        [python, str(SUPPORT / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result


@needs_itwinai
def test_itwinais_torch_trainer_on_fanlog(mlflow_server: Any, tmp_path: Path) -> None:
    seen = run_script(ITWINAI_PYTHON, "itwinai_real_trainer.py", mlflow_server.url, str(tmp_path))
    assert seen["found_mlflow"], "itwinai's get_mlflow_logger found the compat MLFlowLogger"
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("real-trainer")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["real-run", "worker_0 (main)"]
    worker = runs["worker_0 (main)"]
    assert worker.info.run_id == seen["worker_run_id"]
    assert worker.data.tags["mlflow.parentRunId"] == seen["train_run_id"] == runs["real-run"].info.run_id
    assert {"strategy", "global_rank", "global_world_size", "optim_lr", "distributed_strategy"} <= set(
        worker.data.params
    )
    assert worker.data.params["optim_lr"] == "0.1"
    assert set(worker.data.metrics) == {
        "epoch_time_s",
        "global_validation_loss_epoch",
        "train_loss_epoch",
        "validation_loss_epoch",
    }
    folders = sorted(a.path for a in client.list_artifacts(worker.info.run_id))
    assert [f for f in folders if f.startswith("epoch_")] == [
        f"epoch_{e}_{part}" for e in (0, 1) for part in ("config", "model", "state")
    ]
    (document,) = (tmp_path / "prov").rglob("prov_real_*.json")
    assert "train_loss_epoch" in document.read_text()


def prov_python() -> list[Any]:
    versions: list[Any] = [pytest.param(sys.executable, id="this-venv")]
    versions.append(pytest.param("2.0.9", id="yprov4ml-2.0.9-on-this-venv"))
    versions.append(pytest.param(ITWINAI_PYTHON, id="itwinai-venv", marks=needs_itwinai))
    return versions


@pytest.mark.parametrize("python", prov_python())
def test_every_prov_kind_on_either_yprov4ml_api(
    python: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip("yprov4ml")
    overlay = request.getfixturevalue("yprov4ml_2_0") if python == "2.0.9" else None
    seen = run_script(
        sys.executable if overlay else python, "prov_any_version.py", str(tmp_path), first_on_path=overlay
    )
    assert seen["errors"] == {}
    if overlay:
        assert seen["version"] == "2.0.9"
    experiment = Path(seen["experiment_dir"])
    (document,) = experiment.glob("prov_any_GR0_*.json")
    text = document.read_text()
    assert "lr" in text and "0.01" in text and "optimizer" in text
    metrics = experiment / "metrics_GR0"

    def rows(pattern: str, context: str = "") -> list[list[str]]:
        """The value rows of the one metric file matching `pattern` (2.0.x writes the context
        as ``Context.TRAINING``, 3.2.x as ``training``)."""
        (path,) = [p for p in metrics.rglob(pattern) if p.suffix == ".csv" and context in p.name.lower()]
        with open(path, newline="") as handle:
            return [row for row in csv.reader(handle) if row and row[0].isdigit()]

    assert len(rows("loss_*", "training")) == 3, "a metric without context= is in itwinai's 'training'"
    assert len(rows("acc_*", "validation")) == 3
    assert len(rows("epoch_time_*")) == 1 and len(rows("flops_*")) == 1
    artifacts = experiment / "artifacts_GR0"
    assert list(artifacts.rglob("net_0.pt")) and list(artifacts.rglob("best*.pt"))
