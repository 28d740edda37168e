"""Start `hf_job.py` (Trainer or Accelerate) as a real process, plain or under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support.hf_tiny import OFFLINE_ENV

JOB = Path(__file__).with_name("hf_job.py")
TESTS = JOB.parent.parent
LAUNCHER_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "FANLOG_RUN_ID",
    "FANLOG_CONFIG",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_NAME",
)


def job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env.update(OFFLINE_ENV, PYTHONUNBUFFERED="1", PYTHONPATH=str(TESTS), **extra)
    return env


def job_command(framework: str, config: Any, *flags: str, nproc: int = 1) -> list[str]:
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, str(JOB), framework, "--config", json.dumps(config), *flags]


def run_job(
    cwd: Path, framework: str, config: Any, *flags: str, nproc: int = 1, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the job to its end; a job still running after `timeout` is killed and fails the test."""
    return subprocess.run(
        job_command(framework, config, *flags, nproc=nproc),
        cwd=cwd,
        env=job_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def interrupt_job(cwd: Path, framework: str, config: Any, signum: int, timeout: float = 120) -> int:
    """Start a slow job, send `signum` once it trained two steps, return its exit status."""
    ready = cwd / "ready"
    ready.unlink(missing_ok=True)
    command = job_command(framework, config, "--steps", "200", "--slow", "0.3", "--ready", str(ready))
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise AssertionError(f"job ended or hung before step 2 ({proc.poll()}):\n{out[-3000:]}")
            time.sleep(0.1)
        proc.send_signal(signum)
        proc.communicate(timeout=timeout)
        return proc.returncode
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
