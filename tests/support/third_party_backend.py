"""A tracker that lives outside fanlog, in one file, as a third party would write it.

It stores each record as one JSON line in ``<folder>/<run id>-rank<r>.jsonl`` and the
run's status as the last line. The tests register it with ``fanlog.register_backend`` and
through a ``fanlog.backends`` entry point, and read back what it stored with
:func:`read_notes`. docs/writing-a-backend.md walks through this file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

from pydantic import Field

from fanlog.backend import Backend
from fanlog.logger import TrackerLogger
from fanlog.options import BackendOptions
from fanlog.record import Record, RunInfo, RunStatus


class NotesOptions(BackendOptions):
    """The options, declared once: the logger's signature, config files and
    ``fanlog sync --to notes -o key=value`` all read them from here."""

    folder: str | None = Field(None, description="where the notes go (default: <savedir>/notes)")
    digits: int = Field(6, description="significant digits kept of a metric")


class NotesBackend(Backend):
    name = "notes"
    Options = NotesOptions
    options: NotesOptions
    writers = {"metric": "_metric", "param": "_value", "text": "_value"}
    """supported_kinds is derived from this table: metric, param and text."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.path: str | None = None
        self._file: TextIO | None = None

    def open(self, run: RunInfo) -> None:
        if self._file is not None:  # retried after a failure: keep the file already open
            return
        folder = self.options.folder or os.path.join(self.context.savedir, "notes")
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, f"{run.run_id}-rank{run.rank}.jsonl")
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _metric(self, record: Record) -> None:
        self._line(record, float(f"{float(record.value):.{self.options.digits}g}"))

    def _value(self, record: Record) -> None:
        self._line(record, record.value)

    def _line(self, record: Record, value: Any) -> None:
        assert self._file is not None, "write() before open()"
        entry = {
            "seq": record.seq,
            "kind": record.kind,
            "key": record.key,
            "step": record.step,
            "value": value,
        }
        self._file.write(json.dumps(entry) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self, status: RunStatus) -> None:
        if self._file is not None:
            self._file.write(json.dumps({"status": status.value}) + "\n")
            self._file.close()
            self._file = None

    def describe(self) -> str:
        return f"notes in {self.path or self.options.folder}"


class NotesLogger(TrackerLogger):
    """Log to JSON-lines notes."""

    backend_class = NotesBackend


def read_notes(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every line the notes backend wrote under `folder`, file by file."""
    lines: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        lines.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return lines
