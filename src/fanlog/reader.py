"""Reading runs back from their journals: `fanlog.read_run(path)` and `fanlog.find_runs(savedir)`.

A journal from a newer fanlog is refused with a
:class:`~fanlog.journal.schema.NewerJournalError` that says so.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fanlog.journal import Journal, unreadable
from fanlog.journal.layout import journal_paths, run_dir_of
from fanlog.record import Record

__all__ = ["MetricRow", "RejectedRecord", "RunData", "find_runs", "journal_paths", "read_run"]


class MetricRow(NamedTuple):
    key: str
    step: int
    value: float
    time: float
    rank: int
    epoch: int | None
    batch_idx: int | None


class RejectedRecord(NamedTuple):
    """A record a tracker refused for good (kept in the journal, skipped by delivery)."""

    tracker: str
    """The delivery entry: the tracker's name in the run (``mlflow``), or ``sync:<tracker>``."""
    seq: int
    kind: str
    key: str
    reason: str
    time: float
    rank: int


@dataclass
class RunData:
    """Everything one run (one or all of its ranks) stored in its journals."""

    paths: list[str]
    meta: dict[int, dict[str, Any]]
    """Per rank: run_id, run_name, status, started, ended, backends, ... (of its first journal)."""
    records: list[Record] = field(default_factory=list)
    rejected: list[RejectedRecord] = field(default_factory=list)
    """Records a tracker refused for good, per rank and tracker (``fanlog show`` lists them)."""
    journals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per journal file: its metadata (a rank with several writers has several journals)."""

    @property
    def metrics(self) -> list[MetricRow]:
        """Metrics as (key, step, value, time, rank, epoch, batch_idx), in logging order per rank."""
        return [
            MetricRow(r.key, r.step, r.value, r.time, r.rank, r.epoch, r.batch_idx)
            for r in self.records
            if r.kind == "metric"
        ]

    @property
    def params(self) -> dict[str, Any]:
        """The last value of every param (rank 0's first, then other ranks' new keys)."""
        found: dict[str, Any] = {}
        for record in sorted(self.of_kind("param"), key=lambda r: r.rank != 0):
            found.setdefault(record.key, record.value)
        return found

    def of_kind(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind == kind]

    def metric(self, key: str, rank: int | None = None) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric."""
        return [(m.step, m.value) for m in self.metrics if m.key == key and (rank is None or m.rank == rank)]

    def to_dataframe(self) -> Any:
        """The metrics as a pandas DataFrame (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_dataframe() needs pandas: pip install 'fanlog[pandas]'") from exc
        return pd.DataFrame(self.metrics, columns=list(MetricRow._fields))


def find_runs(savedir: str | os.PathLike[str] = "mllogs") -> list[str]:
    """Run directories under a savedir, oldest first."""
    runs = {run_dir_of(p) for p in journal_paths(savedir)}
    return sorted(runs, key=os.path.getmtime)


def iter_journals(path: str | os.PathLike[str]) -> Iterator[tuple[str, Journal, dict[str, Any]]]:
    for journal_path in journal_paths(path):
        journal = Journal(journal_path, readonly=True)
        try:
            yield journal_path, journal, journal.meta()
        finally:
            journal.close()


def read_run(path: str | os.PathLike[str], kinds: list[str] | None = None) -> RunData:
    """Read one run (or one rank of it) back: records, metrics, params and metadata.

    `path` may be a journal file, a ``rank-N`` directory, a run directory (every rank),
    or a savedir (its most recent run).
    """
    paths = journal_paths(path)
    run_dirs = {run_dir_of(p) for p in paths}
    if len(run_dirs) > 1:
        path = max(run_dirs, key=os.path.getmtime)
        paths = journal_paths(path)
    data = RunData(paths=paths, meta={})
    by_rank: dict[int, list[list[Record]]] = {}
    for journal_path, journal, meta in iter_journals(path):
        rank = int(meta.get("rank", 0))
        data.meta.setdefault(rank, meta)  # the first journal of the rank: its first writer's
        data.journals[journal_path] = meta
        try:
            by_rank.setdefault(rank, []).append(list(journal.iter_records(kinds, rank=rank)))
            data.rejected.extend(RejectedRecord(*row, rank) for row in journal.rejected())
        except (sqlite3.Error, json.JSONDecodeError) as exc:  # damaged after a readable start
            raise unreadable(journal_path, exc) from exc
    for parts in by_rank.values():
        if len(parts) == 1:
            data.records.extend(parts[0])
        else:  # several writers of one rank: their records interleaved in time
            data.records.extend(sorted((r for part in parts for r in part), key=lambda r: r.time))
    return data
