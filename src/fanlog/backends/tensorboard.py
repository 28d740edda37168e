"""TensorBoard: event files in TensorBoard's own format, no TensorFlow needed.

Every record becomes one ``Event`` carrying the record's own step and wall time,
framed as TFRecords into an ``events.out.tfevents.*`` file (tensorboard's own
``RecordWriter``, or the same bytes with the C ``google_crc32c`` checksum when that
package is installed: the pure-Python CRC costs ~70 µs per event). The writing
happens on fanlog's dispatcher thread, which is already off the
training loop, so TensorBoard's extra writer thread (``EventFileWriter``) is not
used: handing it events one by one through its bounded queue cost hundreds of
microseconds per event in thread switches. ``max_queue`` and ``flush_secs`` keep
their meaning (at most that many events, or that many seconds, wait in memory),
and each delivered batch is written out at its end.
Summaries are built from tensorboard's protobufs, so images and figures keep the
PNG bytes the journal already holds instead of being decoded and re-encoded.
torch is used only for the model graph (``kind="torch"`` with a
``(module, example_input)`` pair), through ``SummaryWriter.add_graph``.

No ``SessionLog.START`` is ever written: TensorBoard would then purge every
event with a larger step, which is how a resumed run silently loses data.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from fanlog.backend import Backend, finite_histogram, import_tracker, require_tracker
from fanlog.errors import PartialDelivery, reason_of
from fanlog.logger import TrackerLogger
from fanlog.options import BackendOptions
from fanlog.record import Record, RunInfo, RunStatus

log = logging.getLogger("fanlog")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type → TensorBoard colorspace (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).
_PNG_COLORSPACE = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def png_size(png: bytes) -> tuple[int, int, int]:
    """(height, width, colorspace) read from the PNG header: no decoding needed."""
    if png[:8] != PNG_SIGNATURE or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return height, width, _PNG_COLORSPACE.get(png[25], 3)


def hparam_value(key: str, value: Any) -> bool | float | int | str:
    """A value the HParams plugin accepts (bool, number, str); anything else becomes its str."""
    if isinstance(value, (bool, int, float, str)):
        return value
    log.debug("fanlog tensorboard: hyperparameter %r = %r stored as a string", key, value)
    return str(value)


def masked_crc32c(data: bytes, crc32c: Any) -> int:
    """TFRecord's masked CRC-32C (rotate right by 15, add a constant)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class FastRecordWriter:
    """TFRecord framing with the C ``google_crc32c`` checksum (about 25x faster than the
    pure-Python CRC tensorboard falls back to without TensorFlow); same bytes on disk."""

    def __init__(self, handle: Any, crc32c: Any) -> None:
        self._handle = handle
        self._crc32c = crc32c

    def write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._handle.write(
            header
            + struct.pack("<I", masked_crc32c(header, self._crc32c))
            + data
            + struct.pack("<I", masked_crc32c(data, self._crc32c))
        )


def record_writer(handle: Any) -> Any:
    """The fastest TFRecord writer available: google_crc32c's C checksum, else tensorboard's."""
    try:
        import google_crc32c
    except ImportError:
        google_crc32c = None  # type: ignore[assignment]
    if google_crc32c is not None and google_crc32c.implementation == "c":
        return FastRecordWriter(handle, google_crc32c.value)
    from tensorboard.summary.writer.record_writer import RecordWriter

    return RecordWriter(handle)


class EventWriter:
    """One event file, written on the calling thread in TensorBoard's record format."""

    _serial = itertools.count()

    def __init__(self, logdir: str, max_queue: int = 10, flush_secs: float = 120) -> None:
        from tensorboard.compat.proto import event_pb2

        os.makedirs(logdir, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
            f"{os.getpid()}.{next(self._serial)}.fanlog"
        )
        self.path = os.path.join(logdir, name)
        self.max_queue = max(1, int(max_queue))
        self.flush_secs = float(flush_secs)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self._records = record_writer(self._file)
        self._pending = 0
        self._last_flush = time.monotonic()
        # file_version 2 tells readers that only SessionLog.START purges events; without
        # it TensorBoard drops every event whose step is lower than an earlier one.
        self.add(
            event_pb2.Event(
                wall_time=time.time(),
                file_version="brain.Event:2",
                source_metadata=event_pb2.SourceMetadata(writer="fanlog"),
            )
        )
        self.flush()

    def add(self, event: Any) -> None:
        self._records.write(event.SerializeToString())
        self._pending += 1
        if self._pending >= self.max_queue or (time.monotonic() - self._last_flush >= self.flush_secs):
            self.flush()

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()
        self._pending = 0
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._file.close()


class TensorBoardOptions(BackendOptions):
    """Options of the TensorBoard event files."""

    logdir: str | None = Field(
        None,
        description="write the event files exactly here (default: "
        "`<savedir>/tensorboard/<run name>[/rank-<r>]`)",
    )
    max_queue: int = Field(10, description="events kept in memory before they are written")
    flush_secs: float = Field(120, description="longest time an event waits in memory, in seconds")
    histogram_bins: int = Field(
        64, description="bins of a histogram (a record's `bins=` option overrides it)"
    )


class TensorBoardBackend(Backend):
    """Writes records as TensorBoard events into one log directory per run (and rank)."""

    name = "tensorboard"
    Options = TensorBoardOptions
    options: TensorBoardOptions
    writers = {
        "metric": "_scalar",
        "image": "_image",
        "figure": "_image",
        "text": "_text_record",
        "dict": "_dict_record",
        "histogram": "_histogram_record",
        "torch": "_graph",
        "param": "_hparam",
    }
    """kind → method returning the record's Summary (None when it wrote nothing itself)."""
    max_batch = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.savedir = self.context.savedir
        self.logdir = self.options.logdir
        self._writer: EventWriter | None = None
        self._run: RunInfo | None = None
        self._hparams: dict[str, bool | float | int | str] = {}
        self._hparams_time: float | None = None
        self._session_started = False

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> None:
        """Check that tensorboard is installed (a missing extra fails early), without
        importing it on the caller's thread."""
        require_tracker("tensorboard", "tensorboard")

    def run_logdir(self, run: RunInfo) -> str:
        """``<savedir>/tensorboard/<run name>[/rank-<r>]`` unless `logdir` was given."""
        base = self.options.logdir or os.path.join(self.savedir, "tensorboard", run.run_name)
        if run.world_size > 1 or run.rank != 0:
            base = os.path.join(base, f"rank-{run.rank}")
        return os.path.abspath(base)

    def open(self, run: RunInfo) -> None:
        import_tracker("tensorboard.summary.writer.record_writer", "tensorboard")
        self._run = run
        self.logdir = self.run_logdir(run)
        self._writer = EventWriter(self.logdir, self.options.max_queue, self.options.flush_secs)

    def write(self, records: Sequence[Record]) -> None:
        from tensorboard.compat.proto import event_pb2

        writer = self._writer
        assert writer is not None, "write() before open()"
        done = 0
        try:
            for record in records:
                self._write_one(record, writer, event_pb2)
                done += 1
            writer.flush()  # each delivered batch is visible to TensorBoard at its end
        except Exception as exc:  # the file: disk full, directory gone, ...
            if done:
                raise PartialDelivery(done, exc) from exc
            raise

    def _write_one(self, record: Record, writer: EventWriter, event_pb2: Any) -> None:
        """One record; one TensorBoard cannot show is rejected (a retry would fail the same):
        the dispatcher marks it in the journal and the batch goes on. Writing the event file
        is outside that: a full disk is retried."""
        if record.kind != "param" and self._hparams and not self._session_started:
            self._start_session()
        try:
            summary = self.write_record(record)
        except Exception as exc:  # noqa: BLE001 - the same record would fail on every retry
            self.reject(record, reason_of(exc))
            return
        if summary is not None:
            writer.add(event_pb2.Event(wall_time=record.time, step=record.step, summary=summary))

    def flush(self) -> None:
        if self._hparams and not self._session_started:
            self._start_session()
        if self._writer is not None:
            self._writer.flush()

    def close(self, status: RunStatus) -> None:
        if self._writer is None:
            return
        if self._hparams and not self._session_started:
            self._start_session()
        if self._session_started:
            self._end_session(status)
        self._writer.close()
        self._writer = None

    def describe(self) -> str:
        return f"tensorboard --logdir {self.logdir or os.path.join(self.savedir, 'tensorboard')}"

    # ------------------------------------------------------------------ summaries
    def _scalar(self, record: Record) -> Any:
        from tensorboard.compat.proto import summary_pb2

        value = summary_pb2.Summary.Value(tag=record.key, simple_value=float(record.value))
        return summary_pb2.Summary(value=[value])

    def _image(self, record: Record) -> Any:
        from tensorboard.compat.proto import summary_pb2

        height, width, colorspace = png_size(record.value)
        image = summary_pb2.Summary.Image(
            height=height, width=width, colorspace=colorspace, encoded_image_string=record.value
        )
        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=record.key, image=image)])

    def _text_record(self, record: Record) -> Any:
        return self._text(record.key, record.value)

    def _dict_record(self, record: Record) -> Any:
        body = json.dumps(record.value, indent=2, sort_keys=True, default=str)
        return self._text(record.key, "\n".join("    " + line for line in body.splitlines()))

    def _histogram_record(self, record: Record) -> Any:
        from tensorboard.compat.proto import summary_pb2

        bins = int(record.options.get("bins", self.options.histogram_bins))
        histogram = self._histogram(record.key, np.asarray(record.value, dtype=np.float64), bins)
        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=record.key, histo=histogram)])

    def _hparam(self, record: Record) -> Any:
        """Kept for the HParams session, written before the first other event; one that
        arrives after it becomes text under ``hparams/<key>``."""
        self._hparams[record.key] = hparam_value(record.key, record.value)
        self._hparams_time = self._hparams_time or record.time
        if not self._session_started:  # the plugin keeps only the first session info
            return None
        log.debug(
            "fanlog tensorboard: hyperparameter %r arrived after the HParams session was "
            "written; it is stored as text under 'hparams/%s'",
            record.key,
            record.key,
        )
        return self._text(f"hparams/{record.key}", str(record.value))

    @staticmethod
    def _text(tag: str, text: str) -> Any:
        from tensorboard.plugins.text.summary_v2 import text_pb

        return text_pb(tag, text)

    @staticmethod
    def _histogram(key: str, values: np.ndarray, bins: int) -> Any:
        """TensorBoard's classic HistogramProto: right bucket edges and counts."""
        from tensorboard.compat.proto import summary_pb2

        values = values.reshape(-1)
        finite = values[np.isfinite(values)]
        if finite.size < values.size:
            log.debug(
                "fanlog tensorboard: %d non-finite values left out of histogram %r",
                values.size - finite.size,
                key,
            )
        if finite.size == 0:
            raise ValueError(f"histogram {key!r} has no finite value")
        counts, edges = finite_histogram(finite, max(1, bins))
        return summary_pb2.HistogramProto(
            min=float(finite.min()),
            max=float(finite.max()),
            num=float(finite.size),
            sum=float(finite.sum()),
            sum_squares=float(np.dot(finite, finite)),
            bucket_limit=[float(edge) for edge in edges[1:]],
            bucket=[float(count) for count in counts],
        )

    def _graph(self, record: Record) -> None:
        """Draw the graph of a ``(module, example_input)`` pair; other torch objects are skipped."""
        torch = import_tracker("torch", "torch")
        obj = torch.load(io.BytesIO(record.value), weights_only=False)
        if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], torch.nn.Module)):
            log.debug(
                "fanlog tensorboard: torch record %r is not a (module, example input) pair;"
                " TensorBoard has no view for it",
                record.key,
            )
            return
        from torch.utils.tensorboard import SummaryWriter

        model, example = obj
        graph_writer = SummaryWriter(log_dir=self.logdir, filename_suffix=".graph")
        try:
            graph_writer.add_graph(model.eval(), example)
        finally:
            graph_writer.close()

    # ------------------------------------------------------------------ HParams plugin
    def _start_session(self) -> None:
        """One session start info per run: TensorBoard keeps only the first one it reads."""
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb

        assert self._run is not None
        start = self._hparams_time or time.time()
        summary = hparams_pb(dict(self._hparams), trial_id=self._run.run_name, start_time_secs=start)
        assert self._writer is not None
        self._writer.add(event_pb2.Event(wall_time=start, step=0, summary=summary))
        self._session_started = True

    def _end_session(self, status: RunStatus) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        codes = {
            RunStatus.FINISHED: api_pb2.STATUS_SUCCESS,
            RunStatus.FAILED: api_pb2.STATUS_FAILURE,
            RunStatus.KILLED: api_pb2.STATUS_FAILURE,  # the plugin has no "aborted" status
        }
        end = plugin_data_pb2.SessionEndInfo(
            status=codes.get(status, api_pb2.STATUS_UNKNOWN), end_time_secs=time.time()
        )
        content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=end))
        summary = summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(
                    tag=metadata.SESSION_END_INFO_TAG,
                    metadata=content,
                    tensor=metadata.NULL_TENSOR,
                )
            ]
        )
        assert self._writer is not None
        self._writer.add(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))


class TensorBoardLogger(TrackerLogger):
    """Log to TensorBoard event files under ``<savedir>/tensorboard/<run name>``.

    ``max_queue`` and ``flush_secs`` mean what they mean in TensorBoard: events wait
    in memory until ``max_queue`` are pending or ``flush_secs`` have passed (and each
    delivered batch is written at its end). ``logdir`` puts the event files in
    exactly that directory instead.
    """

    backend_class = TensorBoardBackend
