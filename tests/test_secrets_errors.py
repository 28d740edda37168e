"""Secrets in what fanlog says, not only in what it logs: the reasons of refused and
set-aside records, `delivery_errors()`, warnings, and run and experiment names. And the
other side: settings whose names only sound secret are kept.

The echo test puts a real HTTP hop in front of a real `mlflow server`; it refuses one
record and quotes the request's headers in its answer, as some servers and proxies do,
Basic credentials included.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest

import fanlog
from fanlog import JournalLogger, read_run
from fanlog.secrets import REDACTED
from support.hanging_server import TrackerProxy
from support.journals import meta, query


def files_containing(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in glob.glob(str(root / "**" / "*"), recursive=True):
        if os.path.isfile(path):
            data = Path(path).read_bytes()
            if any(n in data for n in needles):
                found.append(path)
    return found


@pytest.mark.slow
def test_a_server_that_echoes_credentials_leaks_them_nowhere(mlflow_server: Any, tmp_path: Path) -> None:
    password = "EchoedPw-" + uuid.uuid4().hex[:8]
    basic = base64.b64encode(f"alice:{password}".encode())
    proxy = TrackerProxy(mlflow_server.url, refuse=("poison-metric",))
    proxy.echo_headers = True
    host = proxy.url.split("//", 1)[1]
    try:
        logger = fanlog.MLflowLogger(
            savedir=str(tmp_path / "sd"),
            tracking_uri=f"http://alice:{password}@{host}",
            experiment_name=f"echo-{uuid.uuid4().hex[:6]}",
            log_freq="batch",
            retry_initial=0.05,
            retry_max=0.5,
        )
        logger.create_logger_context(rank=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(20):
                logger.log(float(i), "loss", step=i)
            logger.log(1.0, "poison-metric", step=0)
            for i in range(20, 40):
                logger.log(float(i), "loss", step=i)
            assert logger.flush(timeout=120)
            errors = logger.delivery_errors()
            assert logger.destroy_logger_context() is False  # one record was refused
        journal = str(logger.journal_path)
        ((reason,),) = query(journal, "SELECT reason FROM rejected")
    finally:
        proxy.close()
    assert "request headers" in reason and REDACTED in reason  # the echo is kept, redacted
    said = json.dumps(errors) + "\n".join(str(w.message) for w in caught)
    assert "refuses 'poison-metric'" in said
    for needle in (password, basic.decode()):
        assert needle not in said
        assert needle not in reason
    assert files_containing(tmp_path, [password.encode(), basic]) == []
    assert len(read_run(journal).metric("loss")) == 40


@pytest.mark.parametrize(
    ("run_name", "experiment_name", "secret"),
    [
        ("run-password=NamePw1", "exp", "NamePw1"),
        ("run", "exp-token=NameTok2", "NameTok2"),
        ("postgres://u:NameUrlPw3@db/x", "e", "NameUrlPw3"),
    ],
)
def test_run_and_experiment_names_are_redacted(
    tmp_path: Path, run_name: str, experiment_name: str, secret: str
) -> None:
    logger = JournalLogger(savedir=tmp_path / "sd", run_name=run_name, experiment_name=experiment_name)
    logger.create_logger_context(rank=0)
    logger.log(1.0, "loss", step=0)
    assert logger.destroy_logger_context() is True
    stored = meta(str(logger.journal_path))
    assert REDACTED in stored["run_name"] + str(stored["experiment_name"])
    assert files_containing(tmp_path, [secret.encode()]) == []


HARMLESS = {
    "secret_santa_epochs": 3,
    "image_token_index": 32000,
    "token_budget": 4096,
    "sig_level": 0.05,
    "auth_method": "none",
    "model_signature": "inputs: [float32]",
    "use_auth_token": False,
    "password_min_length": 12,
    "hf_token": None,
    "s3_key": "datasets/train/part-0001.parquet",
}


@pytest.mark.parametrize("key", sorted(HARMLESS))
def test_settings_that_only_sound_secret_are_kept(tmp_path: Path, key: str) -> None:
    logger = JournalLogger(savedir=tmp_path / "sd")
    logger.create_logger_context(rank=0)
    logger.save_hyperparameters({key: HARMLESS[key], "api_key": "RealSecret-1"})
    logger.destroy_logger_context()
    params = read_run(str(logger.journal_path)).params
    assert params[key] == HARMLESS[key]
    assert params["api_key"] == REDACTED
