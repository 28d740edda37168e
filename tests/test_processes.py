"""Forked and spawned children while the parent logs from a thread: os.fork (ending with
os._exit or normally), multiprocessing with fork and spawn, Pool, terminate(), and a torch
DataLoader with two workers whose dataset logs.

Each scenario runs many rounds in a subprocess with a timeout (a hang fails the test instead
of hanging the suite; see tests/support/fork_scenarios.py). Then: the parent's run was still
`running` after its children were gone, it ends `finished`, every parent record is in the
parent's journal, and every child record is in a child journal beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.journals import count, journals_of, meta, query

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parent / "support" / "fork_scenarios.py"
ROUNDS = {
    "os-fork-exit": 40,
    "os-fork-return": 30,
    "process-fork": 20,
    "process-spawn": 3,
    "pool": 8,
    "terminate": 15,
    "dataloader": 8,
}


@pytest.mark.parametrize("scenario", list(ROUNDS))
def test_children_never_touch_the_parents_run_and_lose_nothing(tmp_path: Path, scenario: str) -> None:
    savedir = tmp_path / "sd"
    try:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), scenario, str(savedir), str(ROUNDS[scenario])],
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"{scenario} hung:\n{hung.stderr!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "running"  # no child closed the parent's run
    parent = result["journal"]
    assert meta(parent)["status"] == "finished"
    assert count(parent, "parent/loss") == result["parent"] == count(parent)  # only the parent's
    children = [p for p in journals_of(Path(parent).parent) if p != parent]
    assert children, "the children wrote journals of their own"
    stored = sum(count(p) for p in children)
    assert stored == result["children"] > 0
    keys = {k for p in children for (k,) in query(p, "SELECT DISTINCT key FROM records")}
    assert all(k.startswith("child/") for k in keys), keys
    for path in children:  # each child journal keeps the parent's backend slots, for sync
        assert query(path, "SELECT name, slot FROM backends") == [("journal", 0)]
        assert meta(path)["run_id"] == scenario
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_sync_delivers_a_forked_childs_journal_to_the_parents_tracker_run(
    tmp_path: Path, mlflow_server: Any
) -> None:
    from mlflow import MlflowClient

    from fanlog.backends.mlflow import MLflowLogger
    from fanlog.delivery.sync import sync

    savedir = tmp_path / "sd"
    logger = MLflowLogger(
        savedir=str(savedir),
        tracking_uri=mlflow_server.url,
        experiment_name="forked-children",
        log_freq="batch",
        job_id="forked",
    )
    logger.create_logger_context(rank=0)
    for step in range(50):
        logger.log(float(step), "parent/loss", step=step)
    for child in range(3):
        pid = os.fork()
        if pid == 0:  # the child: journal only, committed per call, then os._exit
            for step in range(20):
                logger.log(float(step), f"child/{child}", step=step)
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
    assert logger.flush(timeout=60)
    run_id = logger.backend.run_id
    logger.destroy_logger_context()
    client = MlflowClient(tracking_uri=mlflow_server.url)
    assert client.get_metric_history(run_id, "child/0") == []  # nothing live from a child

    report = sync(savedir, to="mlflow", tracking_uri=mlflow_server.url, progress=False)
    assert report.ok, report.summary()
    assert report.sent == 60
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"  # the parent's status, not a child's
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert len(client.get_metric_history(run_id, "parent/loss")) == 50
    for child in range(3):
        assert [m.step for m in client.get_metric_history(run_id, f"child/{child}")] == list(range(20))
    again = sync(savedir, to="mlflow", tracking_uri=mlflow_server.url, progress=False)
    assert again.sent == 0  # nothing twice
