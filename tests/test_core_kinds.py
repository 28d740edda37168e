"""Kind normalizers: what each kind accepts, what it stores, and the errors it raises."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import fanlog
from fanlog import JournalLogger, LoggersCollection
from fanlog.kinds import get_kind, known_kinds


@pytest.fixture
def journal(tmp_path):
    logger = JournalLogger(savedir=tmp_path, log_freq="batch")
    logger.create_logger_context()
    yield logger
    if logger.is_active:
        logger.destroy_logger_context()


def read_back(logger, kind):
    logger.destroy_logger_context()
    return fanlog.read_run(logger.savedir).of_kind(kind)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (1, 1.0),
        (2.5, 2.5),
        (True, 1.0),
        (np.float32(1.5), 1.5),
        (np.int64(7), 7.0),
        (np.array([3.0]), 3.0),
        (torch.tensor(4.0), 4.0),
        (torch.tensor([5.0]), 5.0),
        (torch.tensor(2.0, dtype=torch.bfloat16), 2.0),
    ],
)
def test_metric_accepts_scalars(journal, item, expected):
    journal.log(item, "m")
    (record,) = read_back(journal, "metric")
    assert record.value == expected


@pytest.mark.parametrize(
    ("item", "error", "expected"),
    [
        ("0.5", TypeError, "a real number"),
        (torch.tensor([1.0, 2.0, 3.0]), ValueError, "scalar"),
        (None, TypeError, "a real number"),
        (1 + 2j, TypeError, "a real number"),
        (np.array([1.0, 2.0]), ValueError, "scalar"),
        ([1.0], TypeError, "a real number"),
    ],
)
def test_metric_errors_name_kind_identifier_and_expectation(journal, item, error, expected):
    with pytest.raises(error) as info:
        journal.log(item, "train/loss")
    message = str(info.value)
    assert "kind='metric'" in message and "'train/loss'" in message and expected in message


def test_tensor_snapshot_is_value_at_call_time(journal):
    running = torch.tensor(1.0)
    journal.log(running, "running")
    running += 41.0  # in place, after the call
    journal.log(running, "running")
    assert [r.value for r in read_back(journal, "metric")] == [1.0, 42.0]


def test_nan_and_inf_are_kept(journal):
    for value in (float("nan"), float("inf"), float("-inf")):
        journal.log(value, "m")
    values = [r.value for r in read_back(journal, "metric")]
    assert np.isnan(values[0]) and values[1:] == [float("inf"), float("-inf")]


def test_param_text_dict(journal):
    journal.save_hyperparameters({"lr": 0.1, "net": {"depth": 3, "act": "relu"}, "tags": [1, 2]})
    journal.log("hello\nworld", "notes.txt", kind="text")
    journal.log({"a": 1, "b": {"c": [1, 2]}, "path": object()}, "cfg.json", kind="dict")
    journal.destroy_logger_context()
    run = fanlog.read_run(journal.savedir)
    assert run.params == {"lr": 0.1, "net/depth": 3, "net/act": "relu", "tags": "[1, 2]"}
    assert run.of_kind("text")[0].value == "hello\nworld"
    stored = run.of_kind("dict")[0].value
    assert stored["b"] == {"c": [1, 2]} and stored["path"].startswith("<object object")


def test_dict_is_a_snapshot(journal):
    config = {"lr": 0.1}
    journal.log(config, "cfg.json", kind="dict")
    config["lr"] = 99
    assert read_back(journal, "dict")[0].value == {"lr": 0.1}


@pytest.mark.parametrize(
    ("array", "size"),
    [
        (np.zeros((8, 6), dtype=np.uint8), (6, 8)),
        (np.ones((8, 6, 3)), (6, 8)),
        (torch.rand(3, 8, 6), (6, 8)),
        (torch.rand(4, 3, 8, 6), (12, 16)),
        (Image.new("RGB", (10, 5), "red"), (10, 5)),
    ],
)
def test_image_layouts_become_png(journal, array, size):
    journal.log(array, "img", kind="image")
    (record,) = read_back(journal, "image")
    assert Image.open(io.BytesIO(record.value)).size == size


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 5, 7, 1)), np.zeros((5, 5, 7)), "img.png"])
def test_image_wrong_shape_or_type(journal, bad):
    with pytest.raises((ValueError, TypeError), match="kind='image'.*'img'"):
        journal.log(bad, "img", kind="image")


def test_figure(journal):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 1), dpi=50)
    axes.plot([1, 2, 3])
    journal.log(figure, "fig", kind="figure")
    plt.close(figure)
    with pytest.raises(TypeError, match="matplotlib Figure"):
        journal.log([1, 2], "fig", kind="figure")
    (record,) = read_back(journal, "figure")
    assert Image.open(io.BytesIO(record.value)).size == (100, 50)


def test_histogram(journal):
    journal.log(torch.arange(12.0).reshape(3, 4), "w", kind="histogram")
    (record,) = read_back(journal, "histogram")
    assert record.value.shape == (12,) and record.value[-1] == 11.0


def test_artifact_is_copied_and_refuses_escape(journal, tmp_path):
    source = tmp_path / "weights.txt"
    source.write_text("v1")
    journal.log(str(source), "checkpoints/weights.txt", kind="artifact")
    source.write_text("v2")  # the copy is taken when the writer gets to it; flush first
    with pytest.raises(ValueError, match="does not exist"):
        journal.log(str(tmp_path / "missing.bin"), "missing.bin", kind="artifact")
    with pytest.raises(ValueError, match=r"'\.\.' are refused"):
        journal.log(str(source), "../../etc/passwd", kind="artifact")
    (record,) = read_back(journal, "artifact")
    assert record.value.startswith(journal.run_info.run_dir)
    with open(record.value) as copy:
        assert copy.read() in ("v1", "v2")


def test_model_and_torch_roundtrip(journal):
    model = torch.nn.Linear(3, 2)
    journal.log(model, "model", kind="model")
    journal.log({"epoch": 3, "t": torch.ones(2)}, "state", kind="torch")
    journal.destroy_logger_context()
    run = fanlog.read_run(journal.savedir)
    loaded = torch.load(io.BytesIO(run.of_kind("model")[0].value), weights_only=False)
    assert torch.equal(loaded.weight, model.weight)
    state = torch.load(io.BytesIO(run.of_kind("torch")[0].value), weights_only=False)
    assert state["epoch"] == 3 and torch.equal(state["t"], torch.ones(2))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        get_kind("model").normalize("not a model", "m")


def test_unknown_kind_lists_known_ones(journal):
    with pytest.raises(ValueError, match="unknown kind 'metrik'.*metric"):
        journal.log(1.0, "m", kind="metrik")


def test_registry_covers_the_core_kinds():
    expected = {
        "metric",
        "param",
        "text",
        "dict",
        "figure",
        "image",
        "artifact",
        "model",
        "torch",
        "histogram",
    }
    assert expected <= set(known_kinds())


def test_identifier_must_be_non_empty_string(journal):
    with pytest.raises(ValueError, match="identifier must be a non-empty str"):
        journal.log(1.0, "")
    with pytest.raises(ValueError, match="identifier"):
        journal.log(1.0, 3)


@pytest.mark.parametrize(
    ("policy", "warns", "raises"), [("warn", True, False), ("raise", False, True), ("ignore", False, False)]
)
def test_unsupported_kind_policy(tmp_path, policy, warns, raises):
    from core_backends import NullLogger, RecordingLogger

    recording = RecordingLogger(savedir=tmp_path)
    metrics_only = NullLogger(savedir=tmp_path, log_freq="batch")
    collection = LoggersCollection([recording, metrics_only], unsupported=policy)
    collection.create_logger_context()
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if raises:
            with pytest.raises(ValueError, match="NullLogger does not support kind 'text'"):
                collection.log("x", "t", kind="text")
        else:
            collection.log("x", "t", kind="text")
            collection.log("y", "t", kind="text")
    mine = [w for w in caught if "does not support kind" in str(w.message)]
    assert len(mine) == (1 if warns else 0)  # once per (backend, kind)
    collection.destroy_logger_context()
    assert len(recording.instance.records) == (0 if raises else 2)
