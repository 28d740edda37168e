"""Fork scenarios, run as `python fork_scenarios.py SCENARIO SAVEDIR ROUNDS` by the tests.

The parent starts a logger and logs from a thread the whole time (so forks happen while the
journal writer holds its locks); each round starts children that log CHILD_RECORDS records
through the inherited logger. At the end it prints one JSON line: what it logged, and the
status its journal had after the children were gone (before it closed the run).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
from typing import Any

from fanlog import JournalLogger

CHILD_RECORDS = 5
logger: Any = None


def child_logs(tag: str) -> str:
    for i in range(CHILD_RECORDS):
        logger.log(float(i), f"child/{tag}")
    return tag


def log_then_sleep(logged: Any) -> None:
    child_logs("terminated")
    logged.set()
    time.sleep(600)


def spawned_child(handed: Any) -> None:
    """A spawned child has no inherited logger: it starts the one it was handed."""
    handed.create_logger_context(rank=0)
    for i in range(CHILD_RECORDS):
        handed.log(float(i), "child/spawned")
    handed.destroy_logger_context()


class LoggingDataset:
    """A map-style dataset whose __getitem__ logs (as a DataLoader worker would)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        logger.log(float(index), "child/dataloader")
        return index


def run_round(scenario: str) -> int:
    """One round; returns how many child records it produced."""
    if scenario == "os-fork-exit":  # a child that ends with os._exit, like most workers
        pid = os.fork()
        if pid == 0:
            child_logs("os-fork")
            os._exit(0)
        os.waitpid(pid, 0)
        return CHILD_RECORDS
    if scenario == "os-fork-return":  # a child that ends normally: atexit runs in it
        pid = os.fork()
        if pid == 0:
            child_logs("os-fork")
            sys.exit(0)
        os.waitpid(pid, 0)
        return CHILD_RECORDS
    if scenario in ("process-fork", "process-spawn"):
        context = multiprocessing.get_context(scenario.removeprefix("process-"))
        if scenario == "process-fork":
            process = context.Process(target=child_logs, args=(scenario,))
        else:
            process = context.Process(target=spawned_child, args=(logger,))
        process.start()
        process.join(60)
        assert process.exitcode == 0, process.exitcode
        return CHILD_RECORDS
    if scenario == "pool":
        with multiprocessing.get_context("fork").Pool(2) as pool:
            assert pool.map(child_logs, ["pool"] * 4) == ["pool"] * 4
        return 4 * CHILD_RECORDS  # leaving the block terminates the workers
    if scenario == "terminate":
        context = multiprocessing.get_context("fork")
        logged = context.Event()
        process = context.Process(target=log_then_sleep, args=(logged,))
        process.start()
        assert logged.wait(60)
        process.terminate()
        process.join(60)
        assert process.exitcode == -15, process.exitcode
        return CHILD_RECORDS
    if scenario == "dataloader":
        import torch.utils.data

        loader = torch.utils.data.DataLoader(
            LoggingDataset(), batch_size=2, num_workers=2, multiprocessing_context="fork"
        )
        assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]
        return 4
    raise ValueError(scenario)


def main() -> None:
    global logger
    scenario, savedir, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    logger = JournalLogger(savedir=savedir, log_freq="batch", job_id=scenario, flush_interval=0.01)
    logger.create_logger_context(rank=0)
    stop = threading.Event()
    logged = [0]

    def parent_loop() -> None:
        while not stop.is_set():
            logger.log(float(logged[0]), "parent/loss")
            logged[0] += 1
            if logged[0] % 20 == 0:
                time.sleep(0.001)  # the writer commits often (flush_interval): forks meet its lock

    thread = threading.Thread(target=parent_loop)
    thread.start()
    children = sum(run_round(scenario) for _ in range(rounds))
    stop.set()
    thread.join()
    assert logger.flush(timeout=60)
    status = logger._pipeline.journal.meta()["status"]  # after every child has gone
    path = logger.journal_path
    logger.destroy_logger_context()
    print(json.dumps({"parent": logged[0], "children": children, "status": status, "journal": path}))


if __name__ == "__main__":
    main()
