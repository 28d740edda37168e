"""Secrets never leave the process: redacted before the journal and before every tracker.

One run logs a hyperparameter dict holding a W&B API key and an MLflow token to a real
`mlflow server`, TensorBoard event files, an offline W&B run and the journal at once;
then every byte those trackers stored is searched for the raw values. No mocks.
"""

from __future__ import annotations

import glob
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fanlog import LoggersCollection, read_run
from fanlog.backends.journal import JournalLogger
from fanlog.secrets import REDACTED, _allowed, allow_keys

WANDB_KEY = "wandbkey" + "0123456789abcdef" * 2 + "TESTONLY"
MLFLOW_TOKEN = "dapi" + "f00dfeedc0ffee42" * 2 + "TESTONLY"
PASSWORD = "pw-Hunter2-TESTONLY"
SECRETS = [WANDB_KEY, MLFLOW_TOKEN, PASSWORD]

HYPERPARAMETERS = {
    "lr": 0.01,
    "wandb": {"api_key": WANDB_KEY, "project": "p"},
    "MLFLOW_TRACKING_TOKEN": MLFLOW_TOKEN,
    "db": {"connection": {"Password": PASSWORD}},
}


def files_containing(root: Path, needles: list[str]) -> list[str]:
    """Every file under `root` whose bytes contain one of `needles`."""
    found = []
    encoded = [n.encode() for n in needles]
    for path in glob.glob(str(root / "**" / "*"), recursive=True):
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as handle:
                data = handle.read()
            if any(n in data for n in encoded):
                found.append(path)
    return found


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Offline W&B with every directory under tmp: nothing leaves the machine."""
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR",
                 "WANDB_ARTIFACT_DIR"):  # fmt: skip
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    yield


def wait_for_wandb_exit(savedir: Path, timeout: float = 60) -> str:
    from fanlog.backends.wandb import read_transaction_log

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        paths = glob.glob(str(savedir / "wandb" / "**" / "run-*.wandb"), recursive=True)
        for path in paths:
            try:
                records = read_transaction_log(path)
            except ValueError:
                continue
            if any(r.WhichOneof("record_type") == "exit" for r in records):
                return path
        time.sleep(0.1)
    raise AssertionError("the offline W&B run never finished writing")


@pytest.mark.slow
def test_secret_hyperparameters_reach_no_tracker_and_not_the_journal(
    tmp_path: Path, mlflow_server: Any, offline_wandb: None
) -> None:
    from fanlog.backends.mlflow import MLflowLogger
    from fanlog.backends.tensorboard import TensorBoardLogger
    from fanlog.backends.wandb import WandBLogger

    savedir = tmp_path / "sd"
    logger = LoggersCollection([
        JournalLogger(savedir=str(savedir)),
        MLflowLogger(savedir=str(savedir), tracking_uri=mlflow_server.url, experiment_name="secrets"),
        TensorBoardLogger(savedir=str(savedir)),
        WandBLogger(savedir=str(savedir), mode="offline",
                    settings={"x_disable_stats": True, "console": "off"}),
    ], savedir=str(savedir))  # fmt: skip
    logger.create_logger_context(rank=0)
    logger.save_hyperparameters(HYPERPARAMETERS)
    logger.log(HYPERPARAMETERS, "config.json", kind="dict")  # the whole config, as a document
    logger.log(0.5, "loss", step=0)
    assert logger.flush(timeout=120)
    mlflow_member = logger.loggers[1]
    assert isinstance(mlflow_member, MLflowLogger)
    run_id = mlflow_member.mlflow_run_id
    journal_path = logger.journal_path
    assert logger.destroy_logger_context()
    wait_for_wandb_exit(savedir)

    # The records did arrive (so the search below is not vacuous), redacted.
    assert journal_path is not None
    params = read_run(journal_path).params
    assert params["wandb/api_key"] == REDACTED and params["MLFLOW_TRACKING_TOKEN"] == REDACTED
    assert params["db/connection/Password"] == REDACTED and params["lr"] == 0.01
    import mlflow

    stored = mlflow.MlflowClient(tracking_uri=mlflow_server.url).get_run(run_id).data.params
    assert stored["wandb/api_key"] == REDACTED and stored["wandb/project"] == "p"

    # ... and no raw secret anywhere: journal, TensorBoard, W&B offline files, MLflow's store.
    assert glob.glob(str(savedir / "tensorboard" / "**" / "events.out.*"), recursive=True)
    assert glob.glob(str(savedir / "wandb" / "**" / "*.wandb"), recursive=True)
    assert files_containing(tmp_path, SECRETS) == []
    assert files_containing(Path(mlflow_server.workdir), SECRETS) == []


def test_allow_list_lets_a_named_key_through(tmp_path: Path) -> None:
    logger = JournalLogger(savedir=str(tmp_path / "sd"))
    allow_keys(["max_token_count"])
    try:
        logger.create_logger_context(rank=0)
        logger.save_hyperparameters({"max_token_count": 512, "hf_token": "hf_TESTONLY"})
        logger.destroy_logger_context()
    finally:
        _allowed.discard("max_token_count")
    assert logger.journal_path is not None
    params = read_run(logger.journal_path).params
    assert params == {"max_token_count": 512, "hf_token": REDACTED}
    assert files_containing(tmp_path, ["hf_TESTONLY"]) == []


def test_journal_and_save_dir_are_owner_only(tmp_path: Path) -> None:
    savedir = tmp_path / "new" / "sd"
    old = os.umask(0o022)  # a typical umask: group/other would get read access by default
    try:
        logger = JournalLogger(savedir=str(savedir), job_id="perm")
        logger.create_logger_context(rank=0)
        logger.log(1.0, "x")
        logger.destroy_logger_context()
    finally:
        os.umask(old)
    journal = Path(logger.journal_path or "")
    private = [savedir, savedir / "runs", savedir / "runs" / "perm", journal.parent, journal]
    for path in private:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
