"""ConsoleLogger: a live display of the latest metrics (rich), or plain periodic lines.

In a terminal it redraws one panel in place; in a non-TTY (CI, SLURM logs) it prints a
plain line at most every `interval` seconds, and a final summary at close.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from pydantic import Field

from fanlog.backend import Backend
from fanlog.logger import TrackerLogger
from fanlog.options import BackendOptions
from fanlog.record import Record, RunInfo, RunStatus


class ConsoleOptions(BackendOptions):
    """Options of the console display."""

    interval: float = Field(5.0, description="seconds between plain lines when not in a terminal")
    live: bool | None = Field(
        None, description="force the live display on or off (default: on in a terminal)"
    )
    total_epochs: int | None = Field(None, description="show an epoch progress bar")
    stream: Any = Field(None, description="the text stream to write to (default: stdout)")


class ConsoleBackend(Backend):
    name = "console"
    runs_in_agent = False  # it draws in the training process's terminal, beside its prints
    Options = ConsoleOptions
    options: ConsoleOptions
    writers = {
        "metric": "_show_value",
        "execution_time": "_show_value",
        "param": "_keep_param",
        "tag": "_keep_param",
        "text": "_print_text",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream: TextIO | None = self.options.stream
        self.latest: dict[str, tuple[float, int, int | None]] = {}
        self.params: dict[str, Any] = {}
        self.records = 0
        self.epoch: int | None = None
        self._live: Any = None
        self._last_line = 0.0

    def open(self, run: RunInfo) -> None:
        self.run = run
        stream = self.stream or sys.stdout
        self.stream = stream
        live = stream.isatty() if self.options.live is None else self.options.live
        if live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self._render(),
                console=Console(file=stream),
                refresh_per_second=4,
                transient=False,
            )
            self._live.start()

    def write(self, records: Sequence[Record]) -> None:
        for record in records:
            self.records += 1
            if record.epoch is not None:
                self.epoch = record.epoch
            self.write_record(record)
        if self._live is not None:
            self._live.update(self._render())
        elif time.monotonic() - self._last_line >= self.options.interval:
            self._print_line()

    def _show_value(self, record: Record) -> None:
        self.latest[record.key] = (float(record.value), record.step, record.epoch)

    def _keep_param(self, record: Record) -> None:
        self.params[record.key] = record.value

    def _print_text(self, record: Record) -> None:
        if self._live is None:
            print(f"[fanlog] {record.key}: {str(record.value)[:200]}", file=self.stream)

    def _summary(self) -> str:
        values = " ".join(f"{k}={v:.5g}" for k, (v, _, _) in sorted(self.latest.items()))
        epoch = "" if self.epoch is None else f"epoch {self.epoch} "
        return f"{epoch}| {values}" if values else f"{epoch}| {self.records} records"

    def _print_line(self) -> None:
        self._last_line = time.monotonic()
        print(f"[fanlog {self.run.run_name}] {self._summary()}", file=self.stream, flush=True)

    def _render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        table = Table(title=f"fanlog · {getattr(self, 'run', None) and self.run.run_name}", expand=False)
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("step", justify="right")
        table.add_column("epoch", justify="right")
        for key, (value, step, epoch) in sorted(self.latest.items()):
            table.add_row(key, f"{value:.5g}", str(step), "" if epoch is None else str(epoch))
        if self.options.total_epochs:
            done = min(self.epoch or 0, self.options.total_epochs)
            table.caption = f"epoch {done}/{self.options.total_epochs}"
            grid = Table.grid()
            grid.add_row(table)
            grid.add_row(ProgressBar(total=self.options.total_epochs, completed=done, width=40))
            return grid
        return table

    def close(self, status: RunStatus) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None
        print(
            f"[fanlog {self.run.run_name}] {status.value}: {self.records} records {self._summary()}",
            file=self.stream,
            flush=True,
        )


class ConsoleLogger(TrackerLogger):
    """Show the latest metrics in the terminal (rich), or as plain lines in logs."""

    backend_class = ConsoleBackend
