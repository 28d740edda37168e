"""TensorBoard backend: what fanlog writes, read back with TensorBoard's own EventAccumulator.

No mocks: every test writes real event files and reads them with
``tensorboard.backend.event_processing.event_accumulator``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import api_pb2, metadata

from fanlog.backends.tensorboard import (
    EventWriter,
    FastRecordWriter,
    TensorBoardBackend,
    TensorBoardLogger,
    png_size,
    record_writer,
)
from fanlog.kinds.core import encode_png
from fanlog.record import Record, RunInfo, RunStatus

KEEP_ALL = {ea.SCALARS: 0, ea.IMAGES: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0, ea.COMPRESSED_HISTOGRAMS: 0}


class TinyNet(torch.nn.Module):
    """Defined at module level so torch.save can pickle it for the graph record."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 3)
        self.out = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


def read_events(logdir: str) -> ea.EventAccumulator:
    """TensorBoard's own reader, keeping every event (the default samples)."""
    acc = ea.EventAccumulator(logdir, size_guidance=KEEP_ALL)
    acc.Reload()
    return acc


def run_info(tmp_path: Path, rank: int = 0, world_size: int = 1, name: str = "demo") -> RunInfo:
    return RunInfo(
        run_id="job1",
        run_name=name,
        rank=rank,
        world_size=world_size,
        run_dir=str(tmp_path / "run" / f"rank-{rank}"),
    )


def rec(seq: int, kind: str, key: str, value: Any, step: int = 0, **options: Any) -> Record:
    return Record(seq=seq, kind=kind, key=key, value=value, step=step, time=1.7e9 + seq, options=options)


def hparams_of(acc: ea.EventAccumulator) -> tuple[Any, Any]:
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = content.get(metadata.SESSION_END_INFO_TAG)
    return start, metadata.parse_session_end_info_plugin_data(end) if end else None


def torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_backend_writes_every_kind_at_its_step(tmp_path: Path) -> None:
    """Scalars (also out of order), image, histogram, text, dict, graph and HParams, read back."""
    backend = TensorBoardBackend(savedir=str(tmp_path))
    backend.prepare()
    backend.open(run_info(tmp_path))
    losses = [(step, 1.0 / (step + 1)) for step in range(50)]
    records = [
        rec(1, "param", "lr", 0.01),
        rec(2, "param", "layers", 3),
        rec(3, "param", "optimizer", "adam"),
        rec(4, "param", "nothing", None),
        rec(5, "param", "amp", True),
    ]
    records += [rec(10 + s, "metric", "train/loss", v, step=s) for s, v in losses]
    # validation logged "in the past" (step 7 after step 49): must be kept, not purged
    records += [rec(100, "metric", "val/loss", 0.5, step=30), rec(101, "metric", "val/loss", 0.7, step=7)]
    records += [
        rec(110, "image", "img", encode_png(np.zeros((3, 10, 20), np.float32)), step=2),
        rec(111, "histogram", "weights", np.random.default_rng(0).normal(size=1000), step=3, bins=12),
        rec(112, "text", "notes", "hello *world*", step=4),
        rec(113, "dict", "config", {"a": [1, 2], "b": "x"}, step=4),
        rec(114, "torch", "graph", torch_bytes((TinyNet(), torch.zeros(1, 4)))),
    ]
    backend.write(records)
    backend.close(RunStatus.FINISHED)

    acc = read_events(backend.logdir)
    assert backend.logdir == str(tmp_path / "tensorboard" / "demo")
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
        (s, pytest.approx(v, rel=1e-6)) for s, v in losses
    ]
    assert [(e.step, e.value) for e in acc.Scalars("val/loss")] == [
        (30, pytest.approx(0.5)),
        (7, pytest.approx(0.7)),
    ]
    assert acc.Scalars("train/loss")[3].wall_time == pytest.approx(1.7e9 + 13)
    image = acc.Images("img")[0]
    assert (image.step, image.width, image.height) == (2, 20, 10)
    assert Image.open(io.BytesIO(image.encoded_image_string)).size == (20, 10)
    histogram = acc.Histograms("weights")[0]
    assert histogram.step == 3
    assert len(histogram.histogram_value.bucket) == 12
    assert sum(histogram.histogram_value.bucket) == 1000
    text = acc.Tensors("notes")[0]
    assert (text.step, text.tensor_proto.string_val) == (4, [b"hello *world*"])
    assert b'"a": [' in acc.Tensors("config")[0].tensor_proto.string_val[0]
    graph = acc.Graph()
    assert any("Linear" in node.op or "linear" in node.op for node in graph.node), graph.node
    start, end = hparams_of(acc)
    assert start.hparams["lr"].number_value == pytest.approx(0.01)
    assert start.hparams["layers"].number_value == 3
    assert start.hparams["optimizer"].string_value == "adam"
    assert start.hparams["amp"].bool_value is True
    assert start.hparams["nothing"].string_value == "None"  # non-primitive: stringified
    assert start.group_name == "demo"
    assert end.status == api_pb2.STATUS_SUCCESS


def test_hparams_session_is_complete_when_params_span_batches(tmp_path: Path) -> None:
    """TensorBoard keeps only the first session info, so it is written once all params are in."""
    backend = TensorBoardBackend(savedir=str(tmp_path))
    backend.open(run_info(tmp_path))
    backend.write([rec(1, "param", "a", 1), rec(2, "param", "b", 2.5)])
    backend.write([rec(3, "param", "c", "x"), rec(4, "metric", "loss", 1.0)])
    backend.write([rec(5, "param", "late", 7), rec(6, "metric", "loss", 0.5, step=1)])
    backend.close(RunStatus.FAILED)

    acc = read_events(backend.logdir)
    start, end = hparams_of(acc)
    assert set(start.hparams) == {"a", "b", "c"}
    assert end.status == api_pb2.STATUS_FAILURE
    assert acc.Tensors("hparams/late")[0].tensor_proto.string_val == [b"7"]
    assert [e.step for e in acc.Scalars("loss")] == [0, 1]


def test_params_only_run_still_gets_its_session(tmp_path: Path) -> None:
    backend = TensorBoardBackend(savedir=str(tmp_path))
    backend.open(run_info(tmp_path))
    backend.write([rec(1, "param", "seed", 42)])
    backend.close(RunStatus.KILLED)
    start, end = hparams_of(read_events(backend.logdir))
    assert start.hparams["seed"].number_value == 42
    assert end.status == api_pb2.STATUS_FAILURE


def test_a_record_tensorboard_cannot_show_is_skipped_not_retried(tmp_path: Path) -> None:
    """A broken PNG or an untraceable graph must not block the records after it."""
    backend = TensorBoardBackend(savedir=str(tmp_path))
    backend.open(run_info(tmp_path))
    backend.write(
        [
            rec(1, "metric", "loss", 1.0, step=0),
            rec(2, "image", "broken", b"not a png", step=0),
            rec(3, "torch", "not-a-graph", torch_bytes((TinyNet(), "not a tensor"))),
            rec(4, "metric", "loss", 2.0, step=1),
        ]
    )
    backend.close(RunStatus.FINISHED)
    acc = read_events(backend.logdir)
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(0, 1.0), (1, 2.0)]
    assert acc.Tags()["images"] == []


def test_ranks_write_to_their_own_directory(tmp_path: Path) -> None:
    logdirs = []
    for rank in (0, 1):
        backend = TensorBoardBackend(savedir=str(tmp_path))
        backend.open(run_info(tmp_path, rank=rank, world_size=2))
        backend.write([rec(1, "metric", "loss", float(rank))])
        backend.close(RunStatus.FINISHED)
        logdirs.append(backend.logdir)
    assert logdirs == [str(tmp_path / "tensorboard" / "demo" / f"rank-{r}") for r in (0, 1)]
    assert [read_events(d).Scalars("loss")[0].value for d in logdirs] == [0.0, 1.0]


def test_fast_record_writer_writes_tensorboards_bytes() -> None:
    """The C-CRC framing must be byte for byte what tensorboard's own RecordWriter writes."""
    import google_crc32c
    from tensorboard.summary.writer.record_writer import RecordWriter

    payloads = [b"", b"abc", bytes(range(256)) * 40]
    ours, theirs = io.BytesIO(), io.BytesIO()
    fast = record_writer(ours)
    assert isinstance(fast, FastRecordWriter) == (google_crc32c.implementation == "c")
    reference = RecordWriter(theirs)
    for payload in payloads:
        fast.write(payload)
        reference.write(payload)
    assert ours.getvalue() == theirs.getvalue()


def test_event_writer_keeps_max_queue_and_flush_secs_meaning(tmp_path: Path) -> None:
    """At most `max_queue` events, or `flush_secs` seconds, wait in memory; a batch is
    written out at its end."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    def event(step: int) -> Any:
        value = summary_pb2.Summary.Value(tag="x", simple_value=float(step))
        return event_pb2.Event(step=step, wall_time=1.0, summary=summary_pb2.Summary(value=[value]))

    writer = EventWriter(str(tmp_path / "queue"), max_queue=3, flush_secs=3600)
    empty = os.path.getsize(writer.path)
    writer.add(event(0))
    writer.add(event(1))
    assert os.path.getsize(writer.path) == empty  # two events pending in memory
    writer.add(event(2))
    assert os.path.getsize(writer.path) > empty  # the third forces the write
    writer.close()
    assert [e.step for e in read_events(str(tmp_path / "queue")).Scalars("x")] == [0, 1, 2]

    timed = EventWriter(str(tmp_path / "timed"), max_queue=1000, flush_secs=0)
    empty = os.path.getsize(timed.path)
    timed.add(event(0))
    assert os.path.getsize(timed.path) > empty  # flush_secs already elapsed
    timed.close()

    backend = TensorBoardBackend(logdir=str(tmp_path / "batch"), max_queue=1000, flush_secs=3600)
    backend.open(run_info(tmp_path))
    backend.write([rec(i, "metric", "x", float(i), step=i) for i in range(5)])
    assert len(read_events(backend.logdir).Scalars("x")) == 5  # visible before close
    backend.close(RunStatus.FINISHED)


def test_png_size_reads_the_header() -> None:
    assert png_size(encode_png(np.zeros((7, 9), np.uint8))) == (7, 9, 1)
    assert png_size(encode_png(np.zeros((7, 9, 4), np.uint8))) == (7, 9, 4)
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + b"\0" * 30)


def test_logger_end_to_end_every_kind(tmp_path: Path) -> None:
    """Through TensorBoardLogger: journal → dispatcher → event files → EventAccumulator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logger = TensorBoardLogger(
        savedir=str(tmp_path), log_freq="batch", max_queue=50, flush_secs=5, run_name="e2e"
    )
    assert (logger.max_queue, logger.flush_secs) == (50, 5)
    figure, axes = plt.subplots(figsize=(3, 2), dpi=50)
    axes.plot([0, 1], [1, 0])
    with logger.start_logging():
        logger.save_hyperparameters({"lr": 0.1, "model": {"depth": 4}, "tags": ["a", "b"]})
        for step in range(300):
            logger.log(step * 0.5, "loss", step=step, batch_idx=step)
        logger.log_metrics({"val/acc": 0.9, "val/loss": 0.2}, step=100)
        logger.log(Image.new("RGB", (16, 8)), "pil", kind="image")
        logger.log(np.zeros((6, 5, 3), np.uint8), "hwc", kind="image")
        logger.log(torch.zeros(3, 6, 5), "chw", kind="image")
        logger.log(torch.zeros(4, 1, 6, 5), "batch", kind="image")  # 4 images → 2×2 grid
        logger.log(figure, "fig", kind="figure")
        logger.log(torch.randn(500), "hist", kind="histogram", step=9)
        logger.log(np.arange(20.0), "hist_np", kind="histogram", bins=5)
        logger.log("some text", "txt", kind="text", step=3)
        logger.log((TinyNet(), torch.zeros(2, 4)), "net", kind="torch")
        assert logger.flush(timeout=60)
        logdir = logger.backend.logdir
    plt.close(figure)

    assert logdir == str(tmp_path / "tensorboard" / "e2e")
    assert logger.delivery_errors() == {}
    acc = read_events(logdir)
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(s, s * 0.5) for s in range(300)]
    assert acc.Scalars("val/acc")[0].step == 100
    sizes = {
        tag: (acc.Images(tag)[0].width, acc.Images(tag)[0].height) for tag in ("pil", "hwc", "chw", "batch")
    }
    assert sizes == {"pil": (16, 8), "hwc": (5, 6), "chw": (5, 6), "batch": (10, 12)}
    assert (acc.Images("fig")[0].width, acc.Images("fig")[0].height) == (150, 100)
    assert len(acc.Histograms("hist")[0].histogram_value.bucket) == 64
    assert acc.Histograms("hist")[0].step == 9
    assert len(acc.Histograms("hist_np")[0].histogram_value.bucket) == 5
    assert acc.Tensors("txt")[0].tensor_proto.string_val == [b"some text"]
    assert len(acc.Graph().node) > 0
    start, end = hparams_of(acc)
    assert start.hparams["lr"].number_value == pytest.approx(0.1)
    assert start.hparams["model/depth"].number_value == 4
    assert start.hparams["tags"].string_value == '["a", "b"]'
    assert end.status == api_pb2.STATUS_SUCCESS


def test_exception_marks_session_failed(tmp_path: Path) -> None:
    logger = TensorBoardLogger(savedir=str(tmp_path), run_name="boom")
    with pytest.raises(RuntimeError), logger.start_logging():
        logger.save_hyperparameters({"x": 1})
        logger.log(1.0, "loss")
        raise RuntimeError("training crashed")
    acc = read_events(str(tmp_path / "tensorboard" / "boom"))
    assert hparams_of(acc)[1].status == api_pb2.STATUS_FAILURE
    assert acc.Scalars("loss")[0].value == 1.0


@pytest.mark.slow
def test_works_without_torch_and_never_imports_tensorflow(tmp_path: Path) -> None:
    """In a fresh interpreter where torch cannot be imported: tensorboard's own writer only."""
    script = f"""
import sys, time
sys.modules["torch"] = None  # torch absent
sys.modules["google_crc32c"] = None  # and tensorboard's own (pure Python) CRC in use
from fanlog.backends.tensorboard import TensorBoardBackend
from fanlog.record import Record, RunInfo, RunStatus
b = TensorBoardBackend(logdir={str(tmp_path / "notorch")!r})
b.prepare()
b.open(RunInfo("r", "r", 0, 1, {str(tmp_path)!r}))
b.write([Record(1, "metric", "x", 2.0, 5, time.time()), Record(2, "text", "t", "hi", 0, time.time())])
b.close(RunStatus.FINISHED)
assert "tensorflow" not in sys.modules, "tensorflow was imported"
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator({str(tmp_path / "notorch")!r}); acc.Reload()
print([(e.step, e.value) for e in acc.Scalars("x")])
"""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[(5, 2.0)]"


@pytest.mark.slow
def test_import_fanlog_imports_no_tracker() -> None:
    script = (
        "import sys, fanlog\n"
        "from fanlog.backends import tensorboard, wandb\n"
        "bad = [m for m in ('tensorboard', 'wandb', 'torch', 'tensorflow') if m in sys.modules]\n"
        "print(bad)\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert time.monotonic() - started < 60
