"""Hanging tracker benchmark: how long flush() and destroy take when MLflow does not answer.

Scenarios, each with the default settings (down_after 5 s, close_timeout 30 s, fanlog's
MLflow request timeout of 30 s) unless given:

1. `hung`: a TCP server on 127.0.0.1 that accepts connections and never answers;
2. `slow-N`: a real `mlflow server` behind an HTTP hop that answers every request after
   N seconds (`--delays`, default 2 and 8: within and beyond down_after).

Each logs `--records` metrics, then times `flush()` (no timeout) and
`destroy_logger_context()`, counts what the journal holds, and (unless `--no-sync`) runs
`fanlog sync` to a healthy server and counts the metrics MLflow stored.

Usage: .venv/bin/python bench/bench_hang.py [--records 1000] [--delays 2 8] [--down-after 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import fanlog  # noqa: E402
from fanlog.backends.mlflow import MLflowLogger  # noqa: E402
from support.hanging_server import HangingServer, TrackerProxy  # noqa: E402
from support.mlflow_server import MlflowServer, start_mlflow_server  # noqa: E402


def scenario(
    name: str, url: str, workdir: Path, records: int, options: dict[str, Any], server: MlflowServer | None
) -> dict[str, Any]:
    logger = MLflowLogger(
        savedir=str(workdir / name), tracking_uri=url, experiment_name=name, log_freq="batch", **options
    )
    logger.create_logger_context(rank=0)
    for step in range(records):
        logger.log(float(step), "loss", step=step)
    started = time.perf_counter()
    flushed = logger.flush()
    flush_s = time.perf_counter() - started
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        closed = logger.destroy_logger_context()
    destroy_s = time.perf_counter() - started
    journal = logger.journal_path
    assert journal is not None
    result = {
        "flush_returned": flushed,
        "flush_s": round(flush_s, 2),
        "destroy_returned": closed,
        "destroy_s": round(destroy_s, 2),
        "in_journal": len(fanlog.read_run(journal).metrics),
        "reported_hung": any("has not answered" in str(w.message) for w in caught),
    }
    if server is not None and not closed:
        report = fanlog.sync(journal, to="mlflow", tracking_uri=server.url, progress=False)
        import mlflow

        client = mlflow.MlflowClient(server.url)
        (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        result["sync_ok"] = report.ok
        result["in_mlflow_after_sync"] = len(client.get_metric_history(run.info.run_id, "loss"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--delays", type=float, nargs="*", default=[2.0, 8.0])
    parser.add_argument("--down-after", type=float, default=None)
    parser.add_argument("--no-sync", action="store_true", help="do not start a server to sync to")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    args = parser.parse_args()
    options = {} if args.down_after is None else {"down_after": args.down_after}
    result: dict[str, Any] = {"records": args.records, "options": options}
    with tempfile.TemporaryDirectory(prefix="fanlog-bench-hang-") as tmp:
        workdir = Path(tmp)
        server = None if args.no_sync else start_mlflow_server(workdir / "server")
        try:
            hanging = HangingServer()
            try:
                result["hung"] = scenario("hung", hanging.url, workdir, args.records, options, server)
            finally:
                hanging.close()
            for delay in args.delays if server is not None else []:
                proxy = TrackerProxy(server.url, delay=delay)
                try:
                    name = f"slow-{delay:g}"
                    result[name] = scenario(name, proxy.url, workdir, args.records, options, None)
                    proxy.wait_idle()
                    if not result[name]["destroy_returned"]:
                        report = fanlog.sync(
                            workdir / name, to="mlflow", tracking_uri=server.url, progress=False
                        )
                        result[name]["sync_ok"] = report.ok
                finally:
                    proxy.close()
        finally:
            if server is not None:
                server.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
