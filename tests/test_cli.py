"""`fanlog ls / show / plot / export`, run as a subprocess against real journals.

The runs are made with the real Logger API (journal, TensorBoard and a test backend that
always fails, from tests/core_backends.py, so that undelivered records exist to report).
One run is killed with SIGKILL mid-way to check the "interrupted" status.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from core_backends import RecordingBackend, RecordingLogger
from fanlog import JournalLogger, LoggersCollection
from fanlog.reader import read_run

pytestmark = pytest.mark.slow  # the CLI runs as a subprocess

EPOCHS, BATCHES = 3, 6
RUN_ID = "cli-main-run"
DDP_RUN_ID = "cli-ddp-run"
KILLED_RUN_ID = "cli-killed-run"


def fanlog_cli(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m fanlog.cli ARGS` in a fresh interpreter, as a user would run it."""
    env = dict(os.environ)
    env.pop("FANLOG_SAVEDIR", None)  # the tests name the savedir explicitly
    done = subprocess.run(
        [sys.executable, "-m", "fanlog.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"fanlog {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def loss_at(epoch: int, batch: int) -> float:
    return 1.0 / (1 + epoch * BATCHES + batch)


@pytest.fixture(scope="module")
def savedir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three runs: a collection with TensorBoard and a broken tracker, a 2-rank run, a killed run."""
    root = tmp_path_factory.mktemp("cli") / "mllogs"
    broken = RecordingBackend(always_fail=True)
    loggers = [
        JournalLogger(savedir=root, log_freq="batch"),
        RecordingLogger(savedir=root, log_freq="batch", backend=broken, name="broken"),
    ]
    try:
        from fanlog.backends.tensorboard import TensorBoardLogger

        loggers.append(TensorBoardLogger(savedir=root, log_freq="batch"))
    except ImportError:
        pass
    collection = LoggersCollection(
        loggers,
        job_id=RUN_ID,
        run_name="cli-test",
        experiment_name="cli-exp",
        close_timeout=3.0,
        retry_initial=0.05,
        retry_max=0.1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broken tracker's warnings are expected
        collection.create_logger_context(rank=0)
        collection.save_hyperparameters({"lr": 0.01, "optimizer": {"name": "adam"}})
        for epoch in range(EPOCHS):
            for batch in range(BATCHES):
                collection.log(loss_at(epoch, batch), "train/loss", batch_idx=batch)
            collection.log(0.5 + 0.1 * epoch, "val/acc")
            collection.log(f"epoch {epoch} done", "notes", kind="text")
            collection.end_epoch()
        collection.log(float("nan"), "val/odd")
        collection.log(2.0, "val/odd")
        collection.destroy_logger_context()

    for rank in (0, 1):
        ddp = JournalLogger(savedir=root, log_freq="batch", log_on_workers=-1, job_id=DDP_RUN_ID)
        ddp.create_logger_context(rank=rank)
        for step in range(4):
            ddp.log(float(10 * rank + step), "loss", step=step)
        ddp.destroy_logger_context()

    script = textwrap.dedent(f"""
        import os, signal
        from fanlog import JournalLogger
        lg = JournalLogger(savedir={str(root)!r}, log_freq="batch", job_id={KILLED_RUN_ID!r})
        lg.create_logger_context(rank=0)
        for i in range(5):
            lg.log(float(i), "loss")
        lg.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    return root


def test_help_for_every_command() -> None:
    top = fanlog_cli("--help").stdout
    for command in ("ls", "show", "plot", "export"):
        assert command in top
        text = fanlog_cli(command, "--help").stdout
        assert text.startswith(f"Usage: python -m fanlog.cli {command}")
        assert "--help" in text


def test_ls_table(savedir: Path) -> None:
    out = fanlog_cli("ls", str(savedir)).stdout
    lines = out.strip().splitlines()
    assert lines[0].split() == ["RUN", "RANK", "STARTED", "STATUS", "RECORDS", "DELIVERY"]
    main = next(line for line in lines if line.startswith(RUN_ID))
    records = 2 + EPOCHS * (BATCHES + 2) + 2  # params + per epoch (batches, val/acc, notes) + val/odd
    assert main.split()[1] == "0"
    assert " finished " in main
    assert f" {records} " in main
    assert "journal stored" in main
    assert f"broken 0/{records} PENDING" in main
    if "tensorboard" in main:  # TensorBoard takes metrics, params and text: all of them here
        assert f"tensorboard {records}/{records}" in main
    ddp = [line for line in lines if line.startswith(DDP_RUN_ID)]
    assert sorted(line.split()[1] for line in ddp) == ["0", "1"]
    killed = next(line for line in lines if line.startswith(KILLED_RUN_ID))
    assert " interrupted " in killed and " 5 " in killed


def test_ls_json_counts_match_the_journal(savedir: Path) -> None:
    runs = json.loads(fanlog_cli("ls", str(savedir), "--json").stdout)
    main = next(r for r in runs if r["run_id"] == RUN_ID)
    data = read_run(savedir / "runs" / RUN_ID)
    assert main["records"] == len(data.records)
    assert main["kinds"] == {"metric": len(data.metrics), "param": 2, "text": EPOCHS}
    broken = next(t for t in main["trackers"] if t["name"] == "broken")
    assert broken["delivered"] == 0
    assert broken["total"] == len(data.metrics) + 2 + EPOCHS
    assert main["status"] == "finished" and main["experiment_name"] == "cli-exp"


def test_ls_on_a_missing_dir_is_a_clear_error(tmp_path: Path) -> None:
    done = fanlog_cli("ls", str(tmp_path / "nothing"), check=False)
    assert done.returncode != 0
    assert "no fanlog journal" in done.stderr


def test_show_params_and_metric_stats(savedir: Path) -> None:
    out = fanlog_cli("show", RUN_ID, "--savedir", str(savedir)).stdout
    assert "lr" in out and "0.01" in out and "optimizer/name" in out and "adam" in out
    row = next(line for line in out.splitlines() if line.startswith("train/loss"))
    count, last, step, low, high = row.split()[1:]
    total = EPOCHS * BATCHES
    assert int(count) == total and int(step) == total - 1
    assert float(last) == pytest.approx(loss_at(EPOCHS - 1, BATCHES - 1), rel=1e-5)
    assert float(low) == pytest.approx(loss_at(EPOCHS - 1, BATCHES - 1), rel=1e-5)
    assert float(high) == 1.0


def test_show_json_ignores_nan_in_min_max(savedir: Path) -> None:
    shown = json.loads(fanlog_cli("show", str(savedir / "runs" / RUN_ID), "--json").stdout)
    odd = next(m for m in shown["metrics"] if m["key"] == "val/odd")
    assert odd["count"] == 2 and odd["min"] == 2.0 and odd["max"] == 2.0 and odd["last"] == 2.0
    acc = next(m for m in shown["metrics"] if m["key"] == "val/acc")
    assert acc["min"] == pytest.approx(0.5) and acc["max"] == pytest.approx(0.5 + 0.1 * (EPOCHS - 1))
    assert shown["params"] == {"lr": 0.01, "optimizer/name": "adam"}


def test_show_by_run_id_prefix_and_rank(savedir: Path) -> None:
    shown = json.loads(
        fanlog_cli("show", "cli-ddp", "--savedir", str(savedir), "--rank", "1", "--json").stdout
    )
    assert [(m["key"], m["rank"], m["last"]) for m in shown["metrics"]] == [("loss", 1, 13.0)]
    both = fanlog_cli("show", DDP_RUN_ID, "--savedir", str(savedir)).stdout
    assert "RANK" in both  # several ranks: one row per (metric, rank)


def test_show_unknown_run_lists_runs(savedir: Path) -> None:
    done = fanlog_cli("show", "no-such-run", "--savedir", str(savedir), check=False)
    assert done.returncode == 2
    assert RUN_ID in done.stderr and DDP_RUN_ID in done.stderr


def _image_stats(path: Path) -> tuple[tuple[int, int], int, float]:
    from PIL import Image, ImageStat

    with Image.open(path) as image:
        assert image.format == "PNG"
        grey = image.convert("L")
        return image.size, len(set(grey.getdata())), ImageStat.Stat(grey).stddev[0]


def test_plot_writes_a_non_blank_png(savedir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "out" / "curves.png"
    done = fanlog_cli("plot", RUN_ID, "--savedir", str(savedir), "-o", str(target))
    assert Path(done.stdout.strip()) == target
    size, shades, spread = _image_stats(target)
    assert size[0] >= 600 and size[1] >= 250  # 3 metrics side by side
    assert shades > 20 and spread > 5  # lines and text, not a blank canvas


def test_plot_selected_keys_sets_the_panel_count(savedir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    one = tmp_path / "one.png"
    fanlog_cli("plot", str(savedir / "runs" / RUN_ID), "-k", "train/loss", "-o", str(one))
    two = tmp_path / "two.png"
    fanlog_cli("plot", str(savedir / "runs" / RUN_ID), "-k", "val/*", "-o", str(two))
    (w1, h1), _, spread = _image_stats(one)
    (w2, h2), _, _ = _image_stats(two)
    assert spread > 5
    assert h1 == h2 and w2 > 1.5 * w1  # one panel, then two panels side by side


def test_plot_unknown_key_names_the_metrics(savedir: Path, tmp_path: Path) -> None:
    done = fanlog_cli(
        "plot", RUN_ID, "--savedir", str(savedir), "-k", "nope", "-o", str(tmp_path / "x.png"), check=False
    )
    assert done.returncode == 1
    assert "train/loss" in done.stderr and "val/acc" in done.stderr
    assert not (tmp_path / "x.png").exists()


def test_plot_run_marks_epochs(savedir: Path, tmp_path: Path) -> None:
    """In process: the epoch markers are where the journal says each epoch begins."""
    pytest.importorskip("matplotlib")
    from fanlog.plots import epoch_starts

    data = read_run(savedir / "runs" / RUN_ID)
    rows = [r for r in data.metrics if r.key == "train/loss"]
    assert epoch_starts(rows) == [(e * BATCHES, e) for e in range(1, EPOCHS)]


def _expected_rows(savedir: Path) -> list[tuple[str, int, float]]:
    data = read_run(savedir / "runs" / RUN_ID)
    return [(m.key, m.step, m.value) for m in data.metrics]


def test_export_csv_roundtrip(savedir: Path) -> None:
    out = fanlog_cli("export", RUN_ID, "--savedir", str(savedir), "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["run_id", "rank", "kind", "key", "step", "epoch", "batch_idx", "time", "value"]
    got = [(r["key"], int(r["step"]), float(r["value"])) for r in rows]
    expected = _expected_rows(savedir)
    assert len(got) == len(expected)
    for (k1, s1, v1), (k2, s2, v2) in zip(got, expected, strict=True):
        assert (k1, s1) == (k2, s2) and (v1 == v2 or (math.isnan(v1) and math.isnan(v2)))
    first_val = next(r for r in rows if r["key"] == "val/acc")
    assert first_val["batch_idx"] == "" and first_val["epoch"] == "0"


def test_export_jsonl_all_kinds_to_file(savedir: Path, tmp_path: Path) -> None:
    target = tmp_path / "run.jsonl"
    fanlog_cli(
        "export", RUN_ID, "--savedir", str(savedir), "--format", "jsonl", "--kind", "all", "-o", str(target)
    )
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"metric", "param", "text"}
    assert [r["value"] for r in rows if r["kind"] == "text"] == [f"epoch {e} done" for e in range(EPOCHS)]
    assert {r["run_id"] for r in rows} == {RUN_ID}


def test_export_parquet(savedir: Path, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    target = tmp_path / "run.parquet"
    fanlog_cli("export", RUN_ID, "--savedir", str(savedir), "--format", "parquet", "-o", str(target))
    frame: Any = pd.read_parquet(target)
    expected = _expected_rows(savedir)
    assert len(frame) == len(expected)
    loss = frame[frame["key"] == "train/loss"]
    assert loss["value"].tolist() == [v for k, _, v in expected if k == "train/loss"]
    assert loss["batch_idx"].tolist() == [b for _ in range(EPOCHS) for b in range(BATCHES)]
    assert frame[frame["key"] == "val/acc"]["batch_idx"].isna().all()


def test_export_parquet_to_stdout_is_refused(savedir: Path) -> None:
    done = fanlog_cli("export", RUN_ID, "--savedir", str(savedir), "--format", "parquet", check=False)
    assert done.returncode == 2 and "-o FILE" in done.stderr


def test_ls_shows_a_tracker_fed_later_by_sync(tmp_path: Path) -> None:
    """An offline run (journal only), then `fanlog sync --to tensorboard`: ls shows the new cursor."""
    pytest.importorskip("fanlog.delivery.sync")
    pytest.importorskip("tensorboard")
    root = tmp_path / "mllogs"
    with JournalLogger(savedir=root, log_freq="batch", job_id="offline-run").start_logging(rank=0) as lg:
        for step in range(7):
            lg.log(float(step), "loss")
    before = fanlog_cli("ls", str(root)).stdout
    assert "sync:tensorboard" not in before
    fanlog_cli(
        "sync",
        str(root / "runs" / "offline-run"),
        "--to",
        "tensorboard",
        "--logdir",
        str(tmp_path / "tb"),
        cwd=tmp_path,
    )
    after = json.loads(fanlog_cli("ls", str(root), "--json").stdout)
    (synced,) = [t for t in after[0]["trackers"] if t["name"] == "sync:tensorboard"]
    assert (synced["delivered"], synced["total"]) == (7, 7)
    assert "sync:tensorboard 7/7" in fanlog_cli("ls", str(root)).stdout


def test_select_keys_globs_keep_logging_order() -> None:
    from fanlog.plots import select_keys

    keys = ["train/loss", "val/acc", "train/acc", "lr"]
    assert select_keys(keys, None) == keys
    assert select_keys(keys, ["train/*", "lr", "train/loss"]) == ["train/loss", "train/acc", "lr"]
    with pytest.raises(ValueError, match="metrics in this run: train/loss, val/acc"):
        select_keys(keys, ["test/*"])


def test_plot_run_draws_every_rank(savedir: Path, tmp_path: Path) -> None:
    """In process: the 2-rank run gives one panel with two lines of different colours."""
    pytest.importorskip("matplotlib")
    from PIL import Image

    from fanlog.plots import plot_run

    path = plot_run(read_run(savedir / "runs" / DDP_RUN_ID), output=tmp_path / "ddp.png")
    with Image.open(path) as image:
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 20)}
    coloured = {c for c in colours if max(c) - min(c) > 80}  # saturated: line colours, not grey
    blue = any(b > r + 60 for r, _, b in coloured)
    orange = any(r > b + 60 for r, _, b in coloured)
    assert blue and orange


def test_ls_reports_an_unreadable_journal_and_lists_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "mllogs"
    with JournalLogger(savedir=root, job_id="good-run").start_logging(rank=0) as lg:
        lg.log(1.0, "loss")
    bad = root / "runs" / "bad-run" / "rank-0" / "journal.sqlite"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not an SQLite database" * 100)
    lines = fanlog_cli("ls", str(root)).stdout.splitlines()
    assert any(line.startswith("good-run") and " finished " in line for line in lines)
    assert any(line.startswith("bad-run") and "unreadable" in line for line in lines)


LIBRARY_ONLY = """
import sys
import fanlog
from fanlog import JournalLogger, LoggersCollection, find_runs, from_config, read_run, sync

savedir = sys.argv[1]
assert type(from_config({"type": "journal", "savedir": savedir})).__name__ == "JournalLogger"
with JournalLogger(savedir=savedir, log_freq="batch", job_id="no-click").start_logging(rank=0) as lg:
    for step in range(2500):
        lg.log(float(step), "loss", step=step)
run = find_runs(savedir)[-1]
assert len(read_run(run).metric("loss")) == 2500
report = sync(run, to="tensorboard", logdir=sys.argv[2], progress=True)  # a progress bar: >= 2000
assert report.ok and report.sent == 2500, report.summary()
print(sorted(m for m in sys.modules if m.split(".")[0] == "click"))
"""


def test_the_library_never_imports_click(tmp_path: Path) -> None:
    """Only `fanlog.cli` imports click: logging, reading a run back and syncing it (with its
    progress bar), and building loggers from a configuration, leave it out."""
    pytest.importorskip("tensorboard")
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_ONLY, str(tmp_path / "sd"), str(tmp_path / "tb")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "sync rank-0 → tensorboard" in done.stderr  # the bar was drawn, without click
