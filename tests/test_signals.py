"""Signals and exit statuses with real processes (tests/support/exit_scenarios.py).

- SIGTERM closes a run whose logger started on another thread than the main one;
- a SIGTERM handler of the user's, installed before or after fanlog's, is called first and
  decides: the graceful "finish the step, log the last metric" pattern loses nothing;
- SIGHUP closes runs as killed, SIGUSR1 only makes the journal durable, and a SIGHUP that
  ``nohup`` ignores stays ignored;
- a second Ctrl-C that lands anywhere in destroy loses nothing;
- the status follows how the program ends (``sys.exit(n)``, a replaced ``sys.excepthook``).

Every case counts the records in the journal (plain SQLite) and reads its status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support.journals import count, journals_of, meta

pytestmark = pytest.mark.slow
SCENARIOS = str(Path(__file__).parent / "support" / "exit_scenarios.py")
RECORDS = 20_000


class Child:
    """One scenario in its own interpreter."""

    def __init__(self, scenario: str, savedir: Path, **env: str) -> None:
        self.savedir = savedir
        self.process = subprocess.Popen(
            [sys.executable, SCENARIOS, scenario, str(savedir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "FANLOG_SIGTERM_GRACE": "5", **env},
        )
        self.lines: list[str] = []

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())
            if line.strip() == "ready":
                return
        raise AssertionError("the scenario ended early:\n" + self.finish()[1])

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self) -> tuple[int, str]:
        stdout, stderr = self.process.communicate(timeout=120)
        self.lines += stdout.splitlines()
        return self.process.returncode, stderr

    def said(self, word: str) -> list[str]:
        return [line.split(" ", 2)[2] for line in self.lines if line.startswith(f"said {word} ")]

    def journal(self, run_id: str) -> str:
        (journal,) = journals_of(self.savedir / "runs" / run_id / "rank-0")
        return journal


# ---------------------------------------------------------------------------- A3: any thread
@pytest.mark.parametrize("scenario", ["import-on-main", "later-main-logger", "import-in-thread"])
def test_sigterm_closes_runs_whatever_thread_started_the_first_logger(tmp_path: Path, scenario: str) -> None:
    child = Child(scenario, tmp_path / "sd")
    child.wait_ready()
    child.signal(signal.SIGTERM)
    code, stderr = child.finish()
    assert code == -signal.SIGTERM, stderr
    journal = child.journal(scenario)
    assert count(journal, "loss") == RECORDS
    assert meta(journal)["status"] == "killed"
    if scenario == "later-main-logger":
        main = child.journal(scenario + "-main")
        assert count(main, "eval") == 10 and meta(main)["status"] == "killed"


# ---------------------------------------------------------------------------- A4: the user's handler
@pytest.mark.parametrize("order", ["first", "before", "after"])
def test_a_users_sigterm_handler_runs_first_and_the_graceful_pattern_loses_nothing(
    tmp_path: Path, order: str
) -> None:
    """first: installed before fanlog is imported; before: before the run starts; after:
    while it runs. The handler only sets a flag: the loop logs its last metric, the run ends
    as the program does (finished), with every record."""
    scenario = f"{order}-flag"
    child = Child(scenario, tmp_path / "sd")
    child.wait_ready()
    child.signal(signal.SIGTERM)
    code, stderr = child.finish()
    assert code == 0, stderr
    assert "Error" not in stderr, stderr
    (steps,) = child.said("steps")
    journal = child.journal(scenario)
    assert count(journal, "loss") == int(steps)  # every step, those after the signal too
    assert count(journal, "final/val_loss") == 1
    assert meta(journal)["status"] == "finished"


@pytest.mark.parametrize("order", ["first", "before"])
def test_a_users_handler_that_exits_closes_the_runs_as_killed(tmp_path: Path, order: str) -> None:
    scenario = f"{order}-exit"
    child = Child(scenario, tmp_path / "sd")
    child.wait_ready()
    child.signal(signal.SIGTERM)
    code, stderr = child.finish()
    assert code == 3, stderr
    journal = child.journal(scenario)
    assert count(journal, "loss") >= RECORDS
    assert meta(journal)["status"] == "killed"


def test_a_handler_installed_after_fanlog_that_chains_to_it_closes_as_killed(tmp_path: Path) -> None:
    child = Child("after-chain", tmp_path / "sd")
    child.wait_ready()
    child.signal(signal.SIGTERM)
    code, stderr = child.finish()
    assert code == -signal.SIGTERM, stderr
    journal = child.journal("after-chain")
    assert count(journal, "loss") >= RECORDS
    assert meta(journal)["status"] == "killed"


# ---------------------------------------------------------------------------- A7: SIGHUP, SIGUSR1
def test_sighup_closes_runs_as_killed(tmp_path: Path) -> None:
    child = Child("hup", tmp_path / "sd")
    child.wait_ready()
    child.signal(signal.SIGHUP)
    code, stderr = child.finish()
    assert code == -signal.SIGHUP, stderr
    journal = child.journal("hup")
    assert count(journal, "loss") == RECORDS
    assert meta(journal)["status"] == "killed"


def test_a_sighup_that_nohup_ignores_stays_ignored(tmp_path: Path) -> None:
    child = Child("nohup", tmp_path / "sd")
    child.wait_ready()
    child.signal(signal.SIGHUP)
    time.sleep(1.0)
    assert child.process.poll() is None  # still running
    child.signal(signal.SIGTERM)
    code, stderr = child.finish()
    assert code == -signal.SIGTERM, stderr
    journal = child.journal("nohup")
    assert count(journal, "loss") == RECORDS and meta(journal)["status"] == "killed"


def test_sigusr1_makes_the_journal_durable_and_does_not_end_the_process(tmp_path: Path) -> None:
    """SLURM's --signal=USR1@... is a warning: the process goes on, its backlog committed."""
    child = Child("usr1", tmp_path / "sd")
    child.wait_ready()
    for _ in range(3):
        child.signal(signal.SIGUSR1)
        time.sleep(0.3)
    assert child.process.poll() is None  # the default action would have ended it
    journal = child.journal("usr1")
    assert count(journal, "loss") == RECORDS  # durable while the process lives
    assert meta(journal)["status"] == "running"
    child.signal(signal.SIGTERM)
    code, stderr = child.finish()
    assert code == -signal.SIGTERM, stderr
    assert meta(journal)["status"] == "killed"


# ---------------------------------------------------------------------------- C2: statuses
@pytest.mark.parametrize(
    ("scenario", "code", "status"),
    [
        ("with:exit-0", 0, "finished"),
        ("with:exit-none", 0, "finished"),
        ("with:exit-3", 3, "failed"),
        ("with:exit-text", 1, "failed"),
        ("with:crash", 1, "failed"),
        ("nowith:exit-3", 3, "failed"),
        ("nowith:exit-text", 1, "failed"),
        ("nowith:exit-0", 0, "finished"),
        ("nowith:normal", 0, "finished"),
        ("nowith:rich-traceback", 1, "failed"),
        ("nowith:own-excepthook", 1, "failed"),
        ("nowith:own-excepthook-ctrl-c", -signal.SIGINT, "killed"),
    ],
)
def test_the_status_follows_how_the_program_ends(
    tmp_path: Path, scenario: str, code: int, status: str
) -> None:
    child = Child(scenario, tmp_path / "sd")
    returncode, stderr = child.finish()
    assert returncode == code, stderr
    journal = child.journal(scenario.replace(":", "-"))
    assert count(journal, "loss") == RECORDS
    assert meta(journal)["status"] == status


def test_ctrl_c_during_a_plain_destroy_closes_as_killed_with_every_record(tmp_path: Path) -> None:
    child = Child("nowith:ctrl-c-in-destroy", tmp_path / "sd")
    """The close waits for a tracker that is down; Ctrl-C cuts that wait short, never the
    journal, and the run ends as killed (it was interrupted), not finished."""
    child.wait_ready()
    time.sleep(1.0)  # destroy is waiting for the dead tracker now
    child.signal(signal.SIGINT)
    code, stderr = child.finish()
    assert "KeyboardInterrupt" in stderr and not child.said("destroy"), stderr
    journal = child.journal("nowith-ctrl-c-in-destroy")
    assert count(journal, "loss") == RECORDS
    assert meta(journal)["status"] == "killed"


# ---------------------------------------------------------------------------- A5: the second Ctrl-C
SECOND_CTRL_C = textwrap.dedent(
    """
    import os, signal, sys, time
    from fanlog import JournalLogger, lifecycle, aggregation
    where, savedir = sys.argv[1], sys.argv[2]

    def ctrl_c():  # the user's second Ctrl-C, at an exact point of destroy
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)

    if where == "after-unregister":
        unregister = lifecycle.unregister
        lifecycle.unregister = lambda run: (unregister(run), ctrl_c())
    elif where == "last-epoch":  # while destroy logs what on_epoch=True accumulated
        end_epoch = aggregation.end_epoch
        aggregation.end_epoch = lambda run, log: (ctrl_c(), end_epoch(run, log))
    logger = JournalLogger(savedir=savedir, log_freq="batch", job_id=where, max_pending=1_000_000)
    with logger.start_logging(rank=0):
        for i in range(200_000):
            logger.log(float(i), "m", step=i)
        if where == "last-epoch":
            logger.log(1.0, "acc", on_epoch=True)
            logger.destroy_logger_context()  # the user's own destroy, then the with's
        raise KeyboardInterrupt  # the first Ctrl-C
    """
)


@pytest.mark.parametrize("where", ["after-unregister", "last-epoch"])
def test_a_second_ctrl_c_anywhere_in_destroy_loses_nothing(tmp_path: Path, where: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SECOND_CTRL_C, where, str(tmp_path / "sd")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "KeyboardInterrupt" in done.stderr, done.stderr
    (journal,) = journals_of(tmp_path / "sd" / "runs" / where / "rank-0")
    assert count(journal, "m") == 200_000
    assert meta(journal)["status"] == "killed"
