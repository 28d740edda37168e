"""The journal writer's own cost (issue 15): CPU per record, wake-ups, GIL holds, idle cost.

Run: .venv/bin/python bench/bench_writer.py [--seconds 10] [--rates 1000,10000,40000]

1. At each offered rate, the main thread logs 20 metrics per step into a JournalLogger (the
   writer alone, no tracker) and sleeps between steps. A *sampler* thread sleeps 0.5 ms at a
   time and notes how late it wakes: while the main thread sleeps, a late wake-up is a GIL
   hold by the writer (or the OS). The same loop without a logger gives the baseline.
   The writer's CPU is read from its thread's own clock (``pthread_getcpuclockid``), its
   wake-ups from ``voluntary_ctxt_switches`` in ``/proc/self/task/<tid>/status``.
2. Idle: a started run that logs nothing, for `--seconds`: CPU and wake-ups of every
   ``fanlog-*`` thread (the writer; a dispatcher per tracker with ``delivery="thread"``).

The code under test is whatever ``import fanlog`` finds, so the same script measures an
older checkout with ``PYTHONPATH=<checkout>/src``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

METRICS_PER_STEP = 20
SAMPLER_SLEEP = 0.0005


def thread_clock(thread: threading.Thread) -> int:
    """The CPU clock of `thread` (readable from any thread)."""
    assert thread.ident is not None
    return time.pthread_getcpuclockid(thread.ident)


def wakeups(thread: threading.Thread) -> int:
    """Voluntary context switches of `thread` so far: how often it slept and woke."""
    with open(f"/proc/self/task/{thread.native_id}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def fanlog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fanlog-")]


class Sampler(threading.Thread):
    """Sleeps SAMPLER_SLEEP at a time and records how late each wake-up is (seconds)."""

    def __init__(self) -> None:
        super().__init__(name="sampler", daemon=True)
        self.late: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        late = self.late
        while not self.stop.is_set():
            start = time.perf_counter()
            time.sleep(SAMPLER_SLEEP)
            late.append(time.perf_counter() - start - SAMPLER_SLEEP)


def offered_load(rate: int, seconds: float, logger: Any | None) -> dict[str, Any]:
    """Log `rate` records/s for `seconds` (or only pace the loop when `logger` is None)."""
    names = [f"train/m{i}" for i in range(METRICS_PER_STEP)]
    period = METRICS_PER_STEP / rate
    sampler = Sampler()
    sampler.start()
    writer = next((t for t in fanlog_threads() if t.name == "fanlog-writer"), None)
    cpu0 = time.clock_gettime(thread_clock(writer)) if writer else 0.0
    woke0 = wakeups(writer) if writer else 0
    log = logger.log if logger is not None else None
    records = step = 0
    start = time.perf_counter()
    next_step = start
    while (now := time.perf_counter()) - start < seconds:
        if log is not None:
            for name in names:
                log(0.5, name, step=step)
            records += METRICS_PER_STEP
        step += 1
        next_step += period
        if next_step > now:
            time.sleep(next_step - now)
    elapsed = time.perf_counter() - start
    if logger is not None:
        logger.flush(timeout=120)
    cpu = time.clock_gettime(thread_clock(writer)) - cpu0 if writer else 0.0
    woke = wakeups(writer) - woke0 if writer else 0
    sampler.stop.set()
    sampler.join()
    late = sorted(sampler.late)
    return {
        "records": records,
        "records_per_s": round(records / elapsed),
        "writer_cpu_us_per_record": round(cpu / records * 1e6, 2) if records else None,
        "writer_cpu_share": round(cpu / elapsed, 4),
        "writer_wakeups_per_s": round(woke / elapsed, 1),
        "sampler_late_p99_ms": round(late[int(len(late) * 0.99)] * 1e3, 3),
        "sampler_late_max_ms": round(late[-1] * 1e3, 3),
    }


def idle_cost(seconds: float, savedir: str, with_tracker: bool) -> dict[str, Any]:
    """CPU and wake-ups of fanlog's threads while a started run logs nothing."""
    from fanlog import JournalLogger, LoggersCollection

    members: list[Any] = [JournalLogger(savedir=savedir, log_freq="batch")]
    if with_tracker:
        from core_backends import NullLogger

        members.append(NullLogger(savedir=savedir, log_freq="batch"))
    logger = LoggersCollection(members, job_id=f"idle-{with_tracker}")
    logger.create_logger_context(rank=0)
    time.sleep(1.0)  # start-up is not idle time
    threads = fanlog_threads()
    cpu0 = [time.clock_gettime(thread_clock(t)) for t in threads]
    woke0 = [wakeups(t) for t in threads]
    process0 = time.process_time()
    time.sleep(seconds)
    cpu = sum(time.clock_gettime(thread_clock(t)) - c for t, c in zip(threads, cpu0, strict=True))
    woke = sum(wakeups(t) - w for t, w in zip(threads, woke0, strict=True))
    process = time.process_time() - process0
    logger.destroy_logger_context()
    return {
        "threads": [t.name for t in threads],
        "seconds": seconds,
        "fanlog_threads_cpu_ms": round(cpu * 1e3, 3),
        "process_cpu_ms": round(process * 1e3, 3),
        "wakeups": woke,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", default="1000,10000,40000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    import fanlog
    from fanlog import JournalLogger

    rates = [int(r) for r in args.rates.split(",")]
    results: dict[str, Any] = {
        "fanlog": os.path.dirname(fanlog.__file__),
        "load": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "rates": {},
    }
    with tempfile.TemporaryDirectory() as savedir:
        for rate in rates:
            rounds: dict[str, list[dict[str, Any]]] = {"baseline": [], "journal": []}
            for n in range(args.rounds):  # interleaved: baseline, journal, baseline, ...
                rounds["baseline"].append(offered_load(rate, args.seconds, None))
                logger = JournalLogger(savedir=savedir, log_freq="batch", job_id=f"w{rate}-{n}")
                logger.create_logger_context(rank=0)
                rounds["journal"].append(offered_load(rate, args.seconds, logger))
                logger.destroy_logger_context()
            results["rates"][rate] = {name: _median(runs) for name, runs in rounds.items()}
        results["idle"] = {
            "journal only": idle_cost(args.seconds, savedir, with_tracker=False),
            "journal + 1 tracker (thread delivery)": idle_cost(args.seconds, savedir, True),
        }
        results["idle_baseline_process_cpu_ms"] = _idle_baseline(args.seconds)
    print(json.dumps(results, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=1)


def _idle_baseline(seconds: float) -> float:
    start = time.process_time()
    time.sleep(seconds)
    return round((time.process_time() - start) * 1e3, 3)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs) if runs[0][k] is not None else None for k in keys}


if __name__ == "__main__":
    main()
