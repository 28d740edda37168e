"""What the delivery agent costs: its memory (RSS) and CPU, beside the training process's.

Run: ``.venv/bin/python bench/bench_agent_footprint.py`` (starts its own ``mlflow server`` on
127.0.0.1; ``--tracking-uri http://...`` uses an existing one). A loop logs ``--metrics``
scalars every ``--every`` seconds for ``--seconds`` to MLflow and TensorBoard with
``delivery="agent"``; the agent's RSS and CPU time are read from /proc. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the server helper shared with the test suite

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

TICKS = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int | str) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int | str) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def measure(url: str, savedir: str, metrics: int, every: float, seconds: float) -> dict[str, float]:
    from fanlog import LoggersCollection, MLflowLogger, TensorBoardLogger

    logger = LoggersCollection(
        [
            MLflowLogger(
                experiment_name="agent-footprint", tracking_uri=url, savedir=savedir, log_freq="batch"
            ),
            TensorBoardLogger(savedir=savedir + "/tb", log_freq="batch"),
        ],
        delivery="agent",
    )
    logger.create_logger_context()
    agent = logger._run.pipeline.agent  # noqa: SLF001 - a benchmark reads the agent's pid
    assert agent is not None and agent.pid is not None, "the run did not start a delivery agent"
    pid = agent.pid
    logger.log(0.0, "warmup", step=0)
    logger.flush(120)  # the agent has imported the trackers and opened their runs
    idle_rss = rss_mib(pid)
    cpu_start = cpu_seconds(pid)
    peak, step, start = idle_rss, 0, time.monotonic()
    while time.monotonic() - start < seconds:
        for m in range(metrics):
            logger.log(float(step), f"m{m}", step=step)
        step += 1
        peak = max(peak, rss_mib(pid))
        time.sleep(every)
    logger.flush(300)
    records = step * metrics
    agent_cpu = cpu_seconds(pid) - cpu_start
    logger.destroy_logger_context()
    return {
        "records": records,
        "rate": records / seconds,
        "idle_rss": idle_rss,
        "peak_rss": peak,
        "agent_cpu": agent_cpu,
        "us_per_record": 1e6 * agent_cpu / max(records, 1),
        "trainer_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--metrics", type=int, default=20)
    parser.add_argument("--every", type=float, default=0.01, help="seconds between two steps")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        server = None
        url = args.tracking_uri
        if url is None:
            from support.mlflow_server import start_mlflow_server

            server = start_mlflow_server(Path(work) / "server")
            url = server.url
        try:
            result = measure(url, work + "/logs", args.metrics, args.every, args.seconds)
        finally:
            if server is not None:
                server.stop()
    print(
        "| records | records/s | agent RSS idle | agent RSS peak | agent CPU | CPU per record "
        "| trainer max RSS |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {result['records']:.0f} | {result['rate']:.0f} | {result['idle_rss']:.0f} MiB | "
        f"{result['peak_rss']:.0f} MiB | {result['agent_cpu']:.1f} s | "
        f"{result['us_per_record']:.0f} µs | {result['trainer_rss']:.0f} MiB |"
    )


if __name__ == "__main__":
    main()
