"""The MLflow backend against the real thing: a live `mlflow server`, and the local SQLite default.

Everything is read back with MLflow's own client. A few tests wrap `log_batch` in a spy that
counts requests and then calls the real method: nothing is mocked.
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
torch = pytest.importorskip("torch")

from mlflow import MlflowClient  # noqa: E402

from fanlog.backends.mlflow import (  # noqa: E402
    MLflowBackend,
    MLflowLogger,
    ParamConflictError,
    default_tracking_uri,
    get_mlflow_logger,
    safe_key,
)
from fanlog.errors import PartialDelivery  # noqa: E402
from fanlog.record import Record, RunInfo, RunStatus  # noqa: E402
from support.mlflow_server import FaultProxy, MlflowServer, free_port  # noqa: E402

pytestmark = pytest.mark.slow


@dataclass
class Store:
    """Where a test's logger writes, and the client that reads it back."""

    tracking_uri: str | None  # None: the logger's out-of-the-box SQLite store
    reader: Any
    savedir: Path

    def logger(self, **options: Any) -> MLflowLogger:
        options.setdefault("experiment_name", f"exp-{uuid.uuid4().hex[:8]}")
        options.setdefault("log_freq", "batch")
        return MLflowLogger(savedir=self.savedir, tracking_uri=self.tracking_uri, **options)


@pytest.fixture(scope="session")
def sqlite_savedir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One save dir for the SQLite-default tests: creating an MLflow database costs seconds."""
    return tmp_path_factory.mktemp("mlflow-default-store")


@pytest.fixture(params=["server", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The same test against a live server and against the logger's out-of-the-box store."""
    if request.param == "server":
        server: MlflowServer = request.getfixturevalue("mlflow_server")
        return Store(server.url, MlflowClient(server.url), tmp_path / "logs")
    savedir = request.getfixturevalue("sqlite_savedir")
    return Store(None, MlflowClient(default_tracking_uri(savedir)), savedir)


@pytest.fixture
def server_store(mlflow_server: MlflowServer, tmp_path: Path) -> Store:
    return Store(mlflow_server.url, MlflowClient(mlflow_server.url), tmp_path / "logs")


def artifact_files(client: Any, run_id: str, path: str | None = None) -> Iterator[str]:
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            yield from artifact_files(client, run_id, info.path)
        else:
            yield info.path


def download(client: Any, run_id: str, path: str, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dst)))


def run_script(code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---------------------------------------------------------------- every kind, read back
def test_every_kind_round_trips(store: Store, tmp_path: Path, monkeypatch: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import yaml
    from PIL import Image

    data_file = tmp_path / "data.csv"
    data_file.write_text("a,b\n1,2\n")
    data_dir = tmp_path / "outdir"
    (data_dir / "sub").mkdir(parents=True)
    (data_dir / "a.txt").write_text("alpha")
    (data_dir / "sub" / "b.txt").write_text("beta")
    figure, axes = plt.subplots(figsize=(2, 1), dpi=50)
    axes.plot([0, 1], [1, 0])
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    weights = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    losses = [1.0 / (i + 1) for i in range(50)]

    logger = store.logger(tags={"team": "vision"}, run_description="all kinds")
    with logger.start_logging():
        for step, loss in enumerate(losses):
            logger.log(loss, "train/loss", step=step * 10)
        logger.save_hyperparameters({"lr": 0.01, "optim": {"name": "adam"}, "layers": 3})
        logger.log("v2", "dataset_version", kind="tag")
        logger.log("# notes\nfine", "notes/readme.md", kind="text")
        logger.log({"lr": 0.01, "sizes": [1, 2]}, "config.yaml", kind="dict")
        logger.log({"epochs": 3}, "summary", kind="dict")
        logger.log(figure, "plots/curve", kind="figure")
        logger.log(Image.new("RGB", (5, 4), (255, 0, 0)), "images/pil.png", kind="image")
        logger.log(np.full((6, 7), 200, dtype=np.uint8), "images/gray.png", kind="image")
        logger.log(torch.rand(3, 8, 9), "samples", kind="image", step=3)
        logger.log(str(data_file), "outputs/data.csv", kind="artifact")
        logger.log(str(data_dir), "outdir", kind="artifact")
        logger.log(net, "net", kind="model")
        logger.log(weights, "tensors/w", kind="torch")
        logger.log({"source": "/data/train", "num_rows": 10}, "train-set", kind="dataset", context="training")
        assert logger.flush(timeout=120)
        run_id = logger.mlflow_run_id
    plt.close(figure)
    assert logger.delivery_errors() == {}
    client = store.reader
    run = client.get_run(run_id)

    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(i * 10, v) for i, v in enumerate(losses)]
    assert run.data.params == {"lr": "0.01", "optim/name": "adam", "layers": "3"}
    assert run.data.tags["team"] == "vision"
    assert run.data.tags["dataset_version"] == "v2"
    assert run.data.tags["mlflow.note.content"] == "all kinds"

    files = set(artifact_files(client, run_id))
    expected = {
        "notes/readme.md",
        "config.yaml",
        "summary.json",
        "plots/curve.png",
        "images/pil.png",
        "images/gray.png",
        "outputs/data.csv",
        "outdir/a.txt",
        "outdir/sub/b.txt",
        "tensors/w.pt",
    }
    assert expected <= files
    stepped = [f for f in files if f.startswith("images/samples+step+3+") and f.endswith(".png")]
    assert len(stepped) == 1

    out = tmp_path / "down"
    assert download(client, run_id, "notes/readme.md", out).read_text() == "# notes\nfine"
    config = yaml.safe_load(download(client, run_id, "config.yaml", out).read_text())
    assert config == {"lr": 0.01, "sizes": [1, 2]}
    assert json.loads(download(client, run_id, "summary.json", out).read_text()) == {"epochs": 3}
    assert download(client, run_id, "outputs/data.csv", out).read_text() == "a,b\n1,2\n"
    assert download(client, run_id, "outdir/sub/b.txt", out).read_text() == "beta"
    saved = torch.load(download(client, run_id, "tensors/w.pt", out), weights_only=True)
    assert torch.equal(saved, weights)
    with Image.open(download(client, run_id, "plots/curve.png", out)) as image:
        assert image.size == (100, 50)
    with Image.open(download(client, run_id, "images/pil.png", out)) as image:
        assert image.size == (5, 4) and image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    with Image.open(download(client, run_id, "images/gray.png", out)) as image:
        assert image.size == (7, 6) and image.getpixel((0, 0)) == 200
    with Image.open(download(client, run_id, stepped[0], out)) as image:
        assert image.size == (9, 8)

    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "train-set"
    assert json.loads(dataset_input.dataset.profile)["num_rows"] == 10
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"

    (model_output,) = run.outputs.model_outputs
    model = client.get_logged_model(model_output.model_id)
    assert model.experiment_id == run.info.experiment_id and model.source_run_id == run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri or default_tracking_uri(store.savedir))
    loaded = mlflow.pytorch.load_model(f"models:/{model_output.model_id}")
    sample = torch.randn(4, 3)
    assert torch.allclose(loaded(sample), net(sample))


def test_model_as_state_dict_artifact(server_store: Store, tmp_path: Path) -> None:
    """model_flavour=False stores the weights as `<key>/state_dict.pt`."""
    net = torch.nn.Linear(4, 2)
    logger = server_store.logger(model_flavour=False)
    with logger.start_logging():
        logger.log(net, "checkpoints/best", kind="model")
        assert logger.flush(timeout=60)
        run_id = logger.mlflow_run_id
    path = download(server_store.reader, run_id, "checkpoints/best/state_dict.pt", tmp_path)
    state = torch.load(path, weights_only=True)
    fresh = torch.nn.Linear(4, 2)
    fresh.load_state_dict(state)
    sample = torch.randn(3, 4)
    assert torch.equal(fresh(sample), net(sample))


def _model_requirements(store: Store, run_id: str, dst: Path) -> set[str]:
    """The pip requirements MLflow stored with the run's one logged model, read back."""
    (output,) = store.reader.get_run(run_id).outputs.model_outputs
    location = store.reader.get_logged_model(output.model_id).artifact_location
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location}/requirements.txt",
        dst_path=str(dst),
        tracking_uri=store.tracking_uri,
    )
    return {line.strip() for line in Path(local).read_text().splitlines() if line.strip()}


@pytest.mark.parametrize("net", [torch.nn.Linear(3, 2), torch.nn.Sequential(torch.nn.ReLU())])
def test_a_model_is_logged_with_the_known_requirements_without_inference(
    server_store: Store, tmp_path: Path, net: Any
) -> None:
    logger = server_store.logger()
    with logger.start_logging():
        logger.log(net, "net", kind="model")
        assert logger.flush(timeout=120)
        run_id = logger.mlflow_run_id
    assert logger.delivery_errors() == {}
    requirements = _model_requirements(server_store, run_id, tmp_path)
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    assert {r for r in requirements if not r.startswith("mlflow")} == {torch_pin}


def test_a_model_requirements_are_inferred_when_asked(server_store: Store, tmp_path: Path) -> None:
    # inference runs MLflow's subprocess for seconds: a call with no CPU here for down_after
    logger = server_store.logger(infer_pip_requirements=True, down_after=300)
    with logger.start_logging():
        logger.log(torch.nn.Linear(3, 2), "net", kind="model")
        assert logger.flush(timeout=240)
        run_id = logger.mlflow_run_id
    assert logger.delivery_errors() == {}
    names = {r.split("==")[0] for r in _model_requirements(server_store, run_id, tmp_path)}
    assert {"torch", "cloudpickle"} <= names  # MLflow's own inference (or its flavour default)


# ---------------------------------------------------------------- batching
def test_ten_thousand_metrics_come_back_exactly(store: Store, monkeypatch: Any) -> None:
    """10k metrics at distinct steps; a spy counts `log_batch` requests (it calls the real one)."""
    rng = random.Random(7)
    values = [rng.uniform(-1e6, 1e6) for _ in range(10_000)]
    steps = sorted(rng.sample(range(1_000_000), 10_000))
    requests: list[int] = []
    real_log_batch = MlflowClient.log_batch

    def counting_log_batch(self: Any, run_id: str, metrics: Any = (), **kw: Any) -> Any:
        requests.append(len(metrics))
        return real_log_batch(self, run_id, metrics=metrics, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", counting_log_batch)
    logger = store.logger()
    logger.create_logger_context()
    for step, value in zip(steps, values, strict=True):
        logger.log(value, "score", step=step)
    assert logger.flush(timeout=120)
    run_id = logger.mlflow_run_id
    logger.destroy_logger_context()

    history = store.reader.get_metric_history(run_id, "score")
    assert len(history) == 10_000
    assert sorted((m.step, m.value) for m in history) == list(zip(steps, values, strict=True))
    assert sum(requests) == 10_000
    assert max(requests) <= 1000
    assert len(requests) <= 20, f"{len(requests)} requests for 10k metrics"


def test_write_respects_request_limits(server_store: Store, tmp_path: Path) -> None:
    """One `write` of mixed kinds: every request within 1000 metrics/100 params/100 tags."""
    backend = MLflowBackend(tracking_uri=server_store.tracking_uri, experiment_name="limits")
    backend.prepare()
    backend.open(RunInfo("limits-run", "limits-run", 0, 1, str(tmp_path)))
    sizes: list[tuple[int, int, int]] = []
    real_log_batch = backend._client.log_batch

    def counting_log_batch(
        run_id: str, metrics: Any = (), params: Any = (), tags: Any = (), **kw: Any
    ) -> Any:
        sizes.append((len(metrics), len(params), len(tags)))
        return real_log_batch(run_id, metrics=metrics, params=params, tags=tags, **kw)

    backend._client.log_batch = counting_log_batch
    now = time.time()
    records = []
    for i in range(2500):
        records.append(Record(len(records) + 1, "metric", f"m{i % 3}", float(i), i, now))
        if i % 10 == 0:
            records.append(Record(len(records) + 1, "param", f"p{i}", i, 0, now))
        if i % 20 == 0:
            records.append(Record(len(records) + 1, "tag", f"t{i}", str(i), 0, now))
    records.append(Record(len(records) + 1, "tag", "stage", "a", 0, now))
    records.append(Record(len(records) + 1, "tag", "stage", "b", 0, now))  # same request
    backend.write(records)
    backend.close(RunStatus.FINISHED)

    assert all(m <= 1000 and p <= 100 and t <= 100 and m + p + t <= 1000 for m, p, t in sizes)
    assert len(sizes) <= 5
    run = server_store.reader.get_run(backend.run_id)
    assert len(run.data.params) == 250 and run.data.params["p2490"] == "2490"
    assert len([k for k in run.data.tags if k.startswith("t")]) == 125
    assert run.data.tags["stage"] == "b"
    history = server_store.reader.get_metric_history(backend.run_id, "m1")
    assert sorted(m.step for m in history) == list(range(1, 2500, 3))


# ---------------------------------------------------------------- params and keys
def test_long_param_is_truncated_with_a_warning(server_store: Store, tmp_path: Path) -> None:
    backend = MLflowBackend(tracking_uri=server_store.tracking_uri, experiment_name="params")
    backend.prepare()
    backend.open(RunInfo("params-run", "params-run", 0, 1, str(tmp_path)))
    with pytest.warns(UserWarning, match="'prompt' is 7000 characters"):
        backend.write([Record(1, "param", "prompt", "x" * 7000, 0, time.time())])
    backend.close(RunStatus.FINISHED)
    assert server_store.reader.get_run(backend.run_id).data.params["prompt"] == "x" * 6000


def test_param_conflict_is_a_clear_error(server_store: Store, tmp_path: Path) -> None:
    backend = MLflowBackend(tracking_uri=server_store.tracking_uri, experiment_name="params")
    backend.prepare()
    backend.open(RunInfo("conflict-run", "conflict-run", 0, 1, str(tmp_path)))
    now = time.time()
    backend.write([Record(1, "param", "lr", 0.1, 0, now), Record(2, "param", "lr", 0.1, 0, now)])
    with pytest.raises(PartialDelivery) as caught:
        backend.write(
            [
                Record(3, "metric", "x", 1.0, 0, now),
                Record(4, "param", "lr", 0.2, 0, now),
                Record(5, "metric", "x", 2.0, 1, now),
            ]
        )
    assert caught.value.done == 2  # the metric before, and the refused param itself
    assert isinstance(caught.value.cause, ParamConflictError)
    assert "'lr'" in str(caught.value.cause) and "'0.1'" in str(caught.value.cause)
    backend.write([Record(5, "metric", "x", 2.0, 1, now)])  # what the dispatcher retries
    backend.close(RunStatus.FINISHED)
    run = server_store.reader.get_run(backend.run_id)
    assert run.data.params == {"lr": "0.1"}
    history = server_store.reader.get_metric_history(backend.run_id, "x")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 2.0)]


def test_param_conflict_through_the_logger_keeps_delivering(server_store: Store) -> None:
    logger = server_store.logger()
    with logger.start_logging():
        logger.log(16, "batch_size", kind="param")
        logger.log(32, "batch_size", kind="param")
        logger.log(0.5, "loss")
        assert logger.flush(timeout=60)
        run_id = logger.mlflow_run_id
    errors = logger.delivery_errors()["mlflow"]
    assert any("ParamConflictError" in e and "batch_size" in e for e in errors)
    run = server_store.reader.get_run(run_id)
    assert run.data.params == {"batch_size": "16"}
    assert [m.value for m in server_store.reader.get_metric_history(run_id, "loss")] == [0.5]


def test_invalid_keys_are_made_valid() -> None:
    assert safe_key("train/loss") == "train/loss"
    assert safe_key("acc@top1") == "acc_top1"
    assert safe_key("a//b/") == "a/b"
    assert safe_key("../x") == "_x"
    assert len(safe_key("k" * 400)) == 250


# ---------------------------------------------------------------- status
def test_failed_status_after_exception(store: Store) -> None:
    logger = store.logger()
    with pytest.raises(RuntimeError, match="boom"), logger.start_logging():
        logger.log(1.0, "loss")
        assert logger.flush(timeout=60)
        raise RuntimeError("boom")
    run = store.reader.get_run(logger.mlflow_run_id)
    assert run.info.status == "FAILED"
    assert [m.value for m in store.reader.get_metric_history(run.info.run_id, "loss")] == [1.0]


def test_killed_status_after_sigterm(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from fanlog.backends.mlflow import MLflowLogger
            logger = MLflowLogger(savedir={str(tmp_path / "logs")!r}, log_freq="batch",
                                  tracking_uri={mlflow_server.url!r}, experiment_name="sigterm")
            logger.create_logger_context()
            for step in range(100):
                logger.log(float(step), "loss", step=step)
            logger.flush(timeout=60)
            open({str(ready)!r}, "w").write(logger.mlflow_run_id)
            for step in range(100, 200):
                logger.log(float(step), "loss", step=step)
            time.sleep(120)
        """),
        ],
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 90
        while not (ready.exists() and ready.read_text()) and process.poll() is None:
            assert time.monotonic() < deadline, "the child never got ready"
            time.sleep(0.1)
        assert process.poll() is None, "the child died before SIGTERM"
        run_id = ready.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (-signal.SIGTERM, 128 + signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    client = MlflowClient(mlflow_server.url)
    assert client.get_run(run_id).info.status == "KILLED"
    assert len(client.get_metric_history(run_id, "loss")) == 200


# ---------------------------------------------------------------- runs: resume, reuse, ranks
def test_resume_from_a_second_process_with_run_id(store: Store, tmp_path: Path, monkeypatch: Any) -> None:
    uri = store.tracking_uri
    first = run_script(
        f"""
        from fanlog.backends.mlflow import MLflowLogger
        logger = MLflowLogger(savedir={str(store.savedir)!r}, tracking_uri={uri!r},
                              experiment_name="resume", log_freq="batch")
        with logger.start_logging():
            for step in range(5):
                logger.log(float(step), "loss", step=step)
            logger.log(0.1, "lr", kind="param")
            logger.flush(timeout=60)
            print("RUN_ID=" + logger.mlflow_run_id)
    """,
        tmp_path,
    )
    assert first.returncode == 0, first.stderr
    (run_id,) = [line[7:] for line in first.stdout.splitlines() if line.startswith("RUN_ID=")]
    assert store.reader.get_run(run_id).info.status == "FINISHED"

    if store.tracking_uri is None:  # the other way to say it: the variable MLflow itself sets
        monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
        logger = store.logger(experiment_name="resume")
    else:
        logger = store.logger(run_id=run_id, experiment_name="resume")
    with logger.start_logging():
        for step in range(5, 10):
            logger.log(float(step), "loss", step=step)
        logger.log(0.1, "lr", kind="param")  # the same value again is fine
        assert logger.flush(timeout=60)
        assert logger.mlflow_run_id == run_id
    assert logger.delivery_errors() == {}
    run = store.reader.get_run(run_id)
    assert run.info.status == "FINISHED"
    history = store.reader.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(10)]


def test_resumed_fanlog_run_continues_its_mlflow_run(store: Store) -> None:
    """The same job_id and save dir again (a restarted job): one MLflow run, not two."""
    job = f"job-{uuid.uuid4().hex[:6]}"
    experiment = f"resumed-{job}"
    run_ids = []
    for attempt in range(2):
        logger = store.logger(job_id=job, experiment_name=experiment)
        with logger.start_logging():
            logger.log(float(attempt), "loss", step=attempt)
            assert logger.flush(timeout=60)
            run_ids.append(logger.mlflow_run_id)
        assert logger.run_info is not None and logger.run_info.resumed == (attempt == 1)
    assert run_ids[0] == run_ids[1]
    exp_id = store.reader.get_experiment_by_name(experiment).experiment_id
    assert len(store.reader.search_runs([exp_id])) == 1
    history = store.reader.get_metric_history(run_ids[0], "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.0), (1, 1.0)]


def test_active_run_is_reused_not_duplicated(tmp_path: Path, monkeypatch: Any) -> None:
    uri = default_tracking_uri(tmp_path / "store")
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the user's global MLflow settings
    experiment_id = MlflowClient(uri).create_experiment("outer")
    with mlflow.start_run(experiment_id=experiment_id) as active:
        logger = MLflowLogger(savedir=tmp_path / "logs", log_freq="batch")
        with logger.start_logging():
            logger.log(2.0, "loss")
            assert logger.flush(timeout=60)
        assert logger.mlflow_run_id == active.info.run_id
        client = MlflowClient(uri)
        assert client.get_run(active.info.run_id).info.status == "RUNNING"  # not ours to end
    runs = client.search_runs([experiment_id])
    assert [r.info.run_id for r in runs] == [active.info.run_id]
    assert [m.value for m in client.get_metric_history(active.info.run_id, "loss")] == [2.0]


def test_per_rank_runs_hang_below_one_parent(server_store: Store) -> None:
    job = f"job-{uuid.uuid4().hex[:6]}"
    experiment = f"ranks-{job}"
    loggers = [
        server_store.logger(
            per_rank_runs=True,
            log_on_workers=-1,
            job_id=job,
            experiment_name=experiment,
            retry_initial=0.1,
            retry_max=0.5,
        )
        for _ in range(3)
    ]
    for rank in (2, 1, 0):  # the children start before the parent exists
        loggers[rank].create_logger_context(rank=rank)
    for rank, logger in enumerate(loggers):
        logger.log(float(rank), "loss")
    for logger in loggers:
        assert logger.flush(timeout=60)
    run_ids = [logger.mlflow_run_id for logger in loggers]
    for logger in loggers:
        logger.destroy_logger_context()

    client = server_store.reader
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([exp_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [run_ids[0]]
    assert len(runs) == 3
    for rank in (1, 2):
        child = client.get_run(run_ids[rank])
        assert child.data.tags["mlflow.parentRunId"] == run_ids[0]
        assert child.data.tags["fanlog.rank"] == str(rank)
        assert [m.value for m in client.get_metric_history(run_ids[rank], "loss")] == [rank]


# ---------------------------------------------------------------- failures
def test_server_outage_loses_nothing_and_never_blocks(start_server: Any, tmp_path: Path) -> None:
    server = start_server("outage")
    client = MlflowClient(server.url)
    logger = MLflowLogger(
        savedir=tmp_path / "logs",
        tracking_uri=server.url,
        log_freq="batch",
        experiment_name="outage",
        retry_initial=0.2,
        retry_max=1.0,
    )
    logger.create_logger_context()
    for step in range(200):
        logger.log(float(step), "loss", step=step)
    assert logger.flush(timeout=60)
    run_id = logger.mlflow_run_id

    server.stop()
    slowest = 0.0
    for step in range(200, 600):
        started = time.perf_counter()
        logger.log(float(step), "loss", step=step)
        slowest = max(slowest, time.perf_counter() - started)
        if step % 100 == 0:
            time.sleep(0.3)  # the training loop goes on while the dispatcher fails
    assert slowest < 0.25, f"a log() call waited {slowest:.3f}s during the outage"
    assert logger.delivery_errors().get("mlflow"), "the outage went unnoticed"

    server.restart(timeout=300)  # a loaded machine can take minutes to start it
    deadline = time.monotonic() + 90
    while len(client.get_metric_history(run_id, "loss")) < 600:
        assert time.monotonic() < deadline, "records did not arrive after the restart"
        time.sleep(0.5)
    assert logger.flush(timeout=60)
    logger.destroy_logger_context()
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(600)]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_5xx_and_429_answers_are_retried(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """The real server behind a real HTTP hop that answers some `log-batch` calls with errors."""
    proxy = FaultProxy(mlflow_server.url, failures=[503, 500, 429, 502])
    try:
        logger = MLflowLogger(
            savedir=tmp_path / "logs",
            tracking_uri=proxy.url,
            log_freq="batch",
            experiment_name="faults",
            retry_initial=0.1,
            retry_max=0.5,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            logger.create_logger_context()
            for step in range(300):
                logger.log(float(step), "loss", step=step)
            client = MlflowClient(mlflow_server.url)
            deadline = time.monotonic() + 60
            while (
                logger.mlflow_run_id is None
                or len(client.get_metric_history(logger.mlflow_run_id, "loss")) < 300
            ):
                assert time.monotonic() < deadline, f"not delivered: {logger.delivery_errors()}"
                time.sleep(0.2)
            run_id = logger.mlflow_run_id
            assert logger.flush(timeout=30)
            logger.destroy_logger_context()
    finally:
        proxy.close()
    assert proxy.injected == [503, 500, 429, 502]
    errors = logger.delivery_errors()["mlflow"]
    assert len(errors) == 4  # each answer is one failed attempt, each named by its status
    assert all(f"{status} error" in error for status, error in zip(proxy.injected, errors, strict=True))
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(300)]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_unreachable_server_keeps_records_in_the_journal(tmp_path: Path) -> None:
    from fanlog import read_run

    url = f"http://127.0.0.1:{free_port()}"
    logger = MLflowLogger(
        savedir=tmp_path / "logs", tracking_uri=url, log_freq="batch", close_timeout=2.0, retry_initial=0.1
    )
    logger.create_logger_context()
    started = time.perf_counter()
    for step in range(1000):
        logger.log(float(step), "loss", step=step)
    caller = time.perf_counter() - started
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        logger.flush(timeout=5)
        started = time.perf_counter()
        complete = logger.destroy_logger_context()
        closing = time.perf_counter() - started
    assert caller < 0.5
    assert not complete
    assert closing < 10
    assert "mlflow" in logger.delivery_errors()
    records = [r for r in read_run(logger.journal_path).records if r.key == "loss"]
    assert [r.value for r in records] == [float(s) for s in range(1000)]


# ---------------------------------------------------------------- packaging
def test_import_does_not_import_mlflow_or_torch(tmp_path: Path) -> None:
    result = run_script(
        """
        import sys
        import fanlog.backends.mlflow
        import fanlog
        assert fanlog.MLflowLogger is fanlog.backends.mlflow.MLflowLogger
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("mlflow", "torch")))
    """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_default_store_is_sqlite_under_savedir(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    logger = MLflowLogger(savedir=tmp_path / "mllogs")
    backend = logger.make_backend()
    backend.prepare()
    assert backend.tracking_uri == f"sqlite:///{tmp_path / 'mllogs' / 'mlflow.db'}"
    assert backend.ui_command().startswith("mlflow ui --backend-store-uri sqlite:///")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    other = MLflowLogger(savedir=tmp_path / "mllogs").make_backend()
    other.prepare()
    assert other.tracking_uri == "http://127.0.0.1:1"
    assert get_mlflow_logger(logger) is logger
    assert get_mlflow_logger(object()) is None


def test_nan_and_inf_metrics_round_trip(store: Store) -> None:
    logger = store.logger()
    with logger.start_logging():
        for step, value in enumerate([1.5, math.nan, math.inf, -math.inf]):
            logger.log(value, "weird", step=step)
        assert logger.flush(timeout=60)
        run_id = logger.mlflow_run_id
    values = [m.value for m in sorted(store.reader.get_metric_history(run_id, "weird"), key=lambda m: m.step)]
    assert values[0] == 1.5 and math.isnan(values[1])
    # MLflow's SQL store keeps ±inf as ±(largest float), documented MLflow behaviour.
    assert values[2] >= sys.float_info.max and values[3] <= -sys.float_info.max
