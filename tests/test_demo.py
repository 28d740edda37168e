"""`fanlog demo` end to end, as a user runs it: a subprocess, then its outputs read back."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from PIL import Image

import fanlog

pytestmark = pytest.mark.slow  # the demo runs as a subprocess


def test_demo_trains_logs_and_says_where_to_look(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fanlog.cli",
            "demo",
            "--savedir",
            str(tmp_path / "mllogs"),
            "--epochs",
            "2",
            "--batches",
            "10",
            "--log-freq",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    journal = re.search(r"journal : (\S+)", result.stdout).group(1)
    plot = re.search(r"plot    : (\S+)", result.stdout).group(1)
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stdout
    assert "tensorboard --logdir" in result.stdout
    run = fanlog.read_run(journal)
    # batch metric gated every 5 batches: 2 per epoch of 10; epoch metrics once per epoch
    assert [s for s, _ in run.metric("train/loss")] == [0, 5, 10, 15]
    assert len(run.metric("train/epoch_loss")) == 2
    assert run.params["optimizer/lr"] == 0.1
    assert run.meta[0]["status"] == "finished"
    with Image.open(plot) as image:
        assert image.size[0] > 300 and len(set(image.convert("L").getdata())) > 10
