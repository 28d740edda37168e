"""Prov4MLLogger against the real yprov4ml 3.2.4, read back with the `prov` package.

Every test parses the PROV-JSON that yprov4ml wrote (``prov.model.ProvDocument``) and the
metric files it points to; nothing is mocked.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("yprov4ml")
torch = pytest.importorskip("torch")
from prov.model import ProvActivity, ProvDocument, ProvEntity  # noqa: E402

from fanlog.backends.prov import CONTEXTS, Prov4MLLogger  # noqa: E402

pytestmark = pytest.mark.slow


def read_document(path: Path) -> ProvDocument:
    return ProvDocument.deserialize(str(path), format="json")


def entities(doc: ProvDocument) -> dict[str, dict[str, Any]]:
    """Entity id (local part) -> its attributes; later records of one id win."""
    found: dict[str, dict[str, Any]] = {}
    for record in doc.get_records(ProvEntity):
        found.setdefault(record.identifier.localpart, {}).update(
            {str(name): value for name, value in record.attributes}
        )
    return found


def root_activity(doc: ProvDocument, name: str) -> dict[str, Any]:
    for record in doc.get_records(ProvActivity):
        if record.identifier.localpart == name:
            return {str(k): v for k, v in record.attributes}
    raise AssertionError(f"no activity {name!r}")


def metric_rows(path: str) -> list[tuple[int, float]]:
    with open(path, newline="") as handle:
        return [(int(row["epoch"]), float(row["value"])) for row in csv.DictReader(handle)]


def make_logger(tmp_path: Path, **kw: Any) -> Prov4MLLogger:
    options: dict[str, Any] = {
        "experiment_name": "exp",
        "provenance_save_dir": str(tmp_path / "prov"),
        "savedir": str(tmp_path / "journal"),
        "create_svg": False,
        "log_on_workers": -1,
    }
    options.update(kw)
    return Prov4MLLogger(**options)


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.norm = torch.nn.BatchNorm1d(2)

    def forward(self, x: Any) -> Any:
        return self.norm(self.fc(x))


@pytest.mark.filterwarnings("ignore:fanlog:RuntimeWarning")  # the refused record
def test_every_kind_lands_in_the_prov_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Metrics, params, models, dataset, system, FLOPs and timing, through the Logger."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    logger = make_logger(tmp_path, job_id="run-all")
    net = TinyNet()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(10, 3)), batch_size=4)
    with logger.start_logging(rank=0):
        logger.log(0.5, "train/loss", step=0, context="training")
        logger.log(0.25, "train/loss", step=1, context="training")
        logger.log(0.75, "val/acc", step=1, context="validation")
        logger.save_hyperparameters({"lr": 0.01, "optim": {"name": "adam"}})
        logger.log(net, "net", kind="model", step=1, context="training")
        logger.log(net, "best", kind="best_model")
        logger.log(loader, "train_data", kind="dataset", context="training")
        logger.log({"num_rows": "many"}, "broken", kind="dataset")  # refused, then skipped
        logger.log({"gpu_busy": 12.5}, "sys", kind="system", step=0)
        logger.log(1234.0, "flops", kind="flops_pb", step=0, context="training")
        logger.log(3.5, "epoch_time", kind="execution_time", step=0)
        assert logger.flush(timeout=120)
    errors = logger.delivery_errors()
    assert list(errors) == ["prov"] and len(errors["prov"]) == 1
    assert "could not store dataset" in errors["prov"][0] and "broken" in errors["prov"][0]

    exp_dir = tmp_path / "prov" / "exp_run-all"
    doc = read_document(exp_dir / "prov_exp_GR0_run-all.json")
    found = entities(doc)

    assert found["lr"]["prov:value"] == "0.01"
    assert found["optim/name"]["prov:value"] == "adam"
    assert found["run_status"]["prov:value"] == "finished"

    loss = found["train/loss//training"]
    assert str(loss["prov:type"]) == "provml:Metric"
    assert metric_rows(loss["dcterms:identifier"]) == [(0, 0.5), (1, 0.25)]
    acc = found["val/acc//validation"]
    assert metric_rows(acc["dcterms:identifier"]) == [(1, 0.75)]
    flops = found["torch.utils.flop_counter//flops//training"]
    assert metric_rows(flops["dcterms:identifier"]) == [(0, 1234.0)]
    timing = found["std.time//epoch_time//exp_GR0_run-all"]
    assert metric_rows(timing["dcterms:identifier"]) == [(0, 3.5)]
    recorded = found["fanlog//sys/gpu_busy//exp_GR0_run-all"]
    assert metric_rows(recorded["dcterms:identifier"]) == [(0, 12.5)]
    assert any(name.startswith("psutil//ram_usage_pct") for name in found)  # log_system_metrics

    model = found["net_0.pt//training"]
    assert str(model["prov:type"]) == "provml:Model"
    saved = torch.load(model["dcterms:identifier"], weights_only=True)
    assert set(saved) == set(net.state_dict())
    assert torch.equal(saved["fc.weight"], net.fc.weight.detach())
    best = found["best.pt//exp_GR0_run-all"]
    parameters = sum(p.numel() for p in net.parameters())
    assert int(best["yprov:best_total_params"]) == parameters  # buffers are not parameters

    data = found["train_data//training"]
    assert str(data["prov:type"]) == "provml:Dataset"
    assert data["yprov:train_data_stat_batch_size"] == "4"
    assert data["yprov:train_data_stat_total_steps"] == "3"

    # yprov4ml saves models in its working directory: never the user's.
    assert sorted(os.listdir(workdir)) == []
    assert Path.cwd() == workdir


def test_two_ranks_write_their_own_files_under_one_run_id(tmp_path: Path) -> None:
    """Rank 0 and rank 1 run side by side (each has its own worker process)."""
    loggers = [make_logger(tmp_path, job_id="job-2") for _ in range(2)]
    errors: list[BaseException] = []

    def train(rank: int) -> None:
        try:
            logger = loggers[rank]
            logger.create_logger_context(rank=rank)
            logger.log(float(rank) + 0.5, "loss", step=0, context="training")
            logger.log(f"value-of-rank-{rank}", "who", kind="param")
            logger.destroy_logger_context()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=train, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert errors == []
    assert all(logger.delivery_errors() == {} for logger in loggers)

    exp_dir = tmp_path / "prov" / "exp_job-2"
    assert sorted(p.name for p in exp_dir.glob("prov_*.json")) == [
        "prov_exp_GR0_job-2.json",
        "prov_exp_GR1_job-2.json",
    ]
    for rank in range(2):
        name = f"exp_GR{rank}_job-2"
        doc = read_document(exp_dir / f"prov_{name}.json")
        found = entities(doc)
        assert found["who"]["prov:value"] == f"value-of-rank-{rank}"
        loss_file = found["loss//training"]["dcterms:identifier"]
        assert Path(loss_file).parent == exp_dir / f"metrics_GR{rank}"
        assert metric_rows(loss_file) == [(0, rank + 0.5)]
        root = root_activity(doc, name)
        assert str(root["yprov:run_id"]) == "job-2"
        assert str(root["yprov:global_rank"]) == str(rank)


def test_two_runs_in_one_process_are_clean(tmp_path: Path) -> None:
    """The second run sees none of the first run's metrics, params or status."""
    first = make_logger(tmp_path, job_id="first")
    with first.start_logging(rank=0):
        first.log(1.0, "only_in_first", step=0)
        first.log("a", "param_of_first", kind="param")
    second = make_logger(tmp_path, job_id="second")
    with pytest.raises(RuntimeError, match="boom"), second.start_logging(rank=0):
        second.log(2.0, "only_in_second", step=0)
        assert second.flush(timeout=120)
        raise RuntimeError("boom")

    one = entities(read_document(tmp_path / "prov" / "exp_first" / "prov_exp_GR0_first.json"))
    two = entities(read_document(tmp_path / "prov" / "exp_second" / "prov_exp_GR0_second.json"))
    assert "only_in_first//exp_GR0_first" in one and "param_of_first" in one
    assert not any("first" in name for name in two)
    assert metric_rows(two["only_in_second//exp_GR0_second"]["dcterms:identifier"]) == [(0, 2.0)]
    assert one["run_status"]["prov:value"] == "finished"
    assert two["run_status"]["prov:value"] == "failed"


def test_prov_documents_go_to_the_active_mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kind='prov_documents' writes the documents mid-run and uploads them to the caller's
    MLflow run (a local SQLite store, read back with MlflowClient)."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(tmp_path)  # the SQLite store keeps artifacts in ./mlruns
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    logger = make_logger(tmp_path, job_id="docs")
    try:
        with mlflow.start_run() as active, logger.start_logging(rank=0):
            logger.log(0.1, "loss", step=0)
            logger.log(None, "prov", kind="prov_documents")
            assert logger.flush(timeout=120)
            assert logger.delivery_errors() == {}
            written = list(logger.backend.documents)
    finally:
        mlflow.set_tracking_uri(None)
    assert [Path(p).name for p in written] == ["prov_exp_GR0_docs.json", "prov_exp_GR0_docs.dot"]
    client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
    names = sorted(Path(a.path).name for a in client.list_artifacts(active.info.run_id, "prov"))
    assert names == ["prov_exp_GR0_docs.dot", "prov_exp_GR0_docs.json"]
    local = client.download_artifacts(active.info.run_id, "prov/prov_exp_GR0_docs.json", str(tmp_path))
    assert "loss//exp_GR0_docs" in entities(read_document(Path(local)))


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
def test_svg_graph_with_graphviz(tmp_path: Path) -> None:
    logger = make_logger(tmp_path, job_id="svg", create_svg=True)
    with logger.start_logging(rank=0):
        logger.log(0.1, "loss", step=0)
    svg = tmp_path / "prov" / "exp_svg" / "prov_exp_GR0_svg.svg"
    assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_context_must_be_one_of_itwinais() -> None:
    logger = Prov4MLLogger(create_svg=False)
    with pytest.raises(ValueError, match="context must be one of"):
        logger.log(1.0, "loss", context="train")
    assert CONTEXTS == ("training", "validation", "testing")


def test_importing_the_backend_imports_no_tracker_nor_torch() -> None:
    code = (
        "import sys, fanlog.backends.prov as p; "
        "bad = [m for m in ('torch', 'yprov4ml', 'mlflow', 'torchvision') if m in sys.modules]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


KILLED_CHILD = """
import os, signal, sys
from fanlog.backends.prov import Prov4MLLogger

logger = Prov4MLLogger(experiment_name="exp", provenance_save_dir=sys.argv[1], savedir=sys.argv[2],
                       create_svg=False, job_id="killed")
logger.create_logger_context(rank=0)
logger.log(0.5, "loss", step=0)
logger.log(0.25, "loss", step=1)
assert logger.flush(timeout=240)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_of_the_training_process_still_writes_the_document(tmp_path: Path) -> None:
    """The worker sees its pipe close and writes what it received, marked 'killed'."""
    script = tmp_path / "train.py"
    script.write_text(KILLED_CHILD)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "prov"), str(tmp_path / "journal")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    document = tmp_path / "prov" / "exp_killed" / "prov_exp_GR0_killed.json"
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "run_status" not in found:
        time.sleep(0.2)
        try:
            found = entities(read_document(document))
        except (OSError, ValueError):  # not there yet, or being written
            continue
    assert found["run_status"]["prov:value"] == "killed"
    assert metric_rows(found["loss//exp_GR0_killed"]["dcterms:identifier"]) == [(0, 0.5), (1, 0.25)]
