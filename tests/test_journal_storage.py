"""Where the journal lives: network file systems (detected from /proc/mounts, exclusive mode),
a -wal file deleted during the run, and artifacts captured at the log() call.

Real journals, real subprocesses for the readers that a live exclusive journal refuses, a real
`mlflow server` that must receive the original content of files deleted or replaced right
after log(), and real tmpfs mounts for a full disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core_backends import RecordingLogger
from fanlog import JournalLogger, LoggersCollection, read_run
from fanlog.journal.capture import LINK_MIN_BYTES
from fanlog.journal.fsinfo import file_system_type, is_network
from fanlog.kinds import get_kind
from support.journals import count, fanlog_cli, meta, query

MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/sda1 / ext4 rw,relatime 0 0
/dev/sdb1 /home xfs rw 0 0
nas:/export/home /home/shared nfs4 rw,vers=4.2 0 0
10.0.0.1@o2ib:/scratch /scratch lustre rw,flock 0 0
gpfs0 /gpfs/projects gpfs rw 0 0
beegfs_nodev /mnt/beegfs beegfs rw 0 0
//server/share /mnt/smb cifs rw 0 0
me@host:/data /mnt/my\\040data fuse.sshfs rw 0 0
tmpfs /scratch/local tmpfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/home/alice/run", "xfs"),
        ("/home/shared/alice/mllogs", "nfs4"),
        ("/home/sharedother/x", "xfs"),  # a prefix of the name is not a parent directory
        ("/scratch/proj/mllogs", "lustre"),
        ("/scratch/local/mllogs", "tmpfs"),  # the longest mount point wins
        ("/gpfs/projects/p1/not/created/yet", "gpfs"),
        ("/mnt/beegfs", "beegfs"),
        ("/mnt/smb/runs", "cifs"),
        ("/mnt/my data/runs", "fuse.sshfs"),  # \\040 in /proc/mounts is a space
        ("/opt/elsewhere", "ext4"),
    ],
)
def test_file_system_type_from_mounts(path: str, expected: str) -> None:
    assert file_system_type(path, MOUNTS) == expected
    assert is_network(expected) == (expected not in ("ext4", "xfs", "tmpfs"))


def test_file_system_type_of_this_machine_is_read_from_proc_mounts(tmp_path: Path) -> None:
    with open("/proc/mounts") as handle:
        assert file_system_type(str(tmp_path)) == file_system_type(str(tmp_path), handle.read())


# ------------------------------------------------------------------ network file systems
READER = """
import sys
from fanlog import read_run
from fanlog.journal import JournalBusyError
try:
    read_run(sys.argv[1])
except JournalBusyError as exc:
    print("busy:", exc)
else:
    print("read")
"""


@pytest.mark.slow
@pytest.mark.parametrize("fs", ["nfs", "lustre", "gpfs", "beegfs", "cifs"])
def test_on_a_network_file_system_the_journal_is_exclusive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fs: str
) -> None:
    """The save dir is declared to be on `fs` (FANLOG_JOURNAL_FS: no such mount exists here)."""
    monkeypatch.setenv("FANLOG_JOURNAL_FS", fs)
    savedir = tmp_path / "sd"
    recording = RecordingLogger(savedir=str(savedir))
    logger = LoggersCollection(
        [JournalLogger(savedir=str(savedir), log_freq="batch"), recording], job_id="net"
    )
    logger.create_logger_context(rank=0)
    for step in range(500):
        logger.log(float(step), "loss", step=step)
    assert logger.flush(timeout=30)
    path = str(logger.journal_path)
    assert not os.path.exists(path + "-shm")  # no shared memory: WAL index in the writer's heap
    assert len(read_run(savedir).metric("loss")) == 500  # this process reads through the writer
    assert len(recording.instance.records) == 500  # the dispatcher too

    started = time.monotonic()
    other = subprocess.run(
        [sys.executable, "-c", READER, str(savedir)], capture_output=True, text=True, timeout=120
    )
    assert other.stdout.startswith("busy:") and "network file system" in other.stdout
    assert path in other.stdout and str(os.getpid()) in other.stdout
    shown = fanlog_cli("show", str(savedir), check=False)
    assert shown.returncode == 1 and "locked by its writer" in shown.stderr
    assert "Traceback" not in shown.stderr
    synced = fanlog_cli(
        "sync", str(savedir), "--to", "tensorboard", "--logdir", str(tmp_path / "tb"), check=False
    )
    assert synced.returncode == 1 and "locked by its writer" in synced.stderr
    assert "held by its writer" in fanlog_cli("ls", str(savedir)).stdout
    assert time.monotonic() - started < 100  # refused quickly, not after SQLite's 30 s timeouts

    logger.destroy_logger_context()
    assert meta(path)["journal_mode"] == "exclusive" and count(path) == 500
    assert "finished" in fanlog_cli("ls", str(savedir)).stdout  # readable once the run ended


def test_on_a_local_file_system_the_journal_is_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANLOG_JOURNAL_FS", "ext4")
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch", job_id="local")
    logger.create_logger_context(rank=0)
    logger.log(1.0, "loss")
    assert logger.flush(timeout=30)
    path = str(logger.journal_path)
    assert os.path.exists(path + "-shm")
    assert count(path) == 1  # another connection reads it while the run is live
    logger.destroy_logger_context()
    assert meta(path)["journal_mode"] == "wal"


# ------------------------------------------------------------------ a deleted -wal file
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_wal_file_deleted_during_the_run_is_noticed(tmp_path: Path, how: str) -> None:
    recording = RecordingLogger(savedir=str(tmp_path / "sd"))
    logger = LoggersCollection(
        [JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch"), recording], flush_interval=0.05
    )
    logger.create_logger_context(rank=0)
    for step in range(1000):
        logger.log(float(step), "before", step=step)
    assert logger.flush(timeout=30)
    wal = f"{logger.journal_path}-wal"
    os.unlink(wal)
    if how == "replaced":
        Path(wal).write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1000):
            logger.log(float(step), "after", step=step)
        assert logger.flush(timeout=30)
        path = str(logger.journal_path)
        logger.destroy_logger_context()
    loud = [str(w.message) for w in caught if wal in str(w.message)]
    assert loud and f"was {how}" in loud[0]
    assert any(wal in error for error in logger.delivery_errors()["journal"])
    assert len(recording.instance.records) == 2000
    # the writer still holds the old file open: at its final checkpoint every record reaches
    # the database (had any been lost, destroy would have said how many)
    assert count(path, "before") == count(path, "after") == 1000
    assert not any("missing from" in str(w.message) for w in caught)


def lose_journal(path: str, how: str) -> None:
    """What a cleanup script or a user's `rm` does to a live run's journal."""
    if how == "main-deleted":
        os.unlink(path)
    elif how == "all-deleted":
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
    elif how == "rank-dir-deleted":
        shutil.rmtree(os.path.dirname(path))
    elif how == "replaced-by-dir":
        os.unlink(path)
        os.mkdir(path)
    elif how == "replaced-by-copy":  # `cp journal.sqlite x; mv x journal.sqlite`
        shutil.copy(path, path + ".copy")
        os.replace(path + ".copy", path)


@pytest.mark.parametrize(
    "how", ["main-deleted", "all-deleted", "rank-dir-deleted", "replaced-by-dir", "replaced-by-copy"]
)
def test_a_journal_file_deleted_during_the_run_is_said_and_never_reported_durable(
    tmp_path: Path, how: str
) -> None:
    recording = RecordingLogger(savedir=str(tmp_path / "sd"))
    logger = LoggersCollection(
        [JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch"), recording], flush_interval=0.05
    )
    logger.create_logger_context(rank=0)
    for step in range(1000):
        logger.log(float(step), "before", step=step)
    assert logger.flush(timeout=30)
    path = str(logger.journal_path)
    lose_journal(path, how)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(1000):
            logger.log(float(step), "after", step=step)
        assert logger.flush(timeout=30) is False  # never True: the journal is gone
        assert logger.destroy_logger_context() is False
    loud = [str(w.message) for w in caught if "journal file" in str(w.message)]
    assert loud and path in loud[0] and ("deleted" in loud[0] or "replaced" in loud[0]), loud
    assert any(path in error for error in logger.delivery_errors()["journal"])
    assert len(recording.instance.records) == 2000  # the tracker still got every record


# ------------------------------------------------------------------ artifacts
def digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def change(path: Path, how: str) -> None:
    """What a training script does to its file right after logging it."""
    if how == "deleted":
        path.unlink()
    elif how == "replaced":  # a new file under the same name (checkpoint savers do this)
        path.with_suffix(".tmp").write_bytes(os.urandom(4096))
        os.replace(path.with_suffix(".tmp"), path)
    elif how == "rewritten":  # the same file written again in place
        path.write_bytes(os.urandom(4096))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "capture"),
    [
        ("deleted", "link"),
        ("replaced", "link"),
        ("rewritten", "copy"),
        ("rewritten", "auto"),
        ("deleted", "auto"),
    ],
)
def test_artifacts_are_captured_at_the_call(
    tmp_path: Path, mlflow_server: Any, how: str, capture: str
) -> None:
    from mlflow import MlflowClient

    from fanlog.backends.mlflow import MLflowLogger

    source_dir = tmp_path / "work"
    (source_dir / "folder").mkdir(parents=True)
    logger = MLflowLogger(
        savedir=str(tmp_path / "sd"),
        tracking_uri=mlflow_server.url,
        experiment_name=f"capture-{how}-{capture}",
        log_freq="batch",
        capture=capture,
    )
    logger.create_logger_context(rank=0)
    originals: dict[str, str] = {}
    for n in range(5):
        checkpoint = source_dir / f"model-{n}.bin"
        checkpoint.write_bytes(os.urandom(8192))
        originals[f"ckpt/model-{n}.bin"] = digest(checkpoint)
        logger.log(str(checkpoint), f"ckpt/model-{n}.bin", kind="artifact")
        change(checkpoint, how)
    inner = source_dir / "folder" / "weights.bin"
    inner.write_bytes(os.urandom(1024))
    originals["folder/weights.bin"] = digest(inner)
    logger.log(str(source_dir / "folder"), "folder", kind="artifact")
    change(inner, how)
    assert logger.flush(timeout=120)
    run_id = logger.backend.run_id
    path = str(logger.journal_path)
    logger.destroy_logger_context()

    records = {r.key: r.value for r in read_run(path).of_kind("artifact")}
    assert len(records) == 6 and all(v.startswith(os.path.dirname(path)) for v in records.values())
    assert digest(os.path.join(records["folder"], "weights.bin")) == originals["folder/weights.bin"]
    for key, value in records.items():
        if key != "folder":
            assert digest(value) == originals[key], key
    download = tmp_path / "download"
    MlflowClient(tracking_uri=mlflow_server.url).download_artifacts(run_id, "", str(download))
    for key, expected in originals.items():
        assert digest(download / key) == expected, key


@pytest.mark.parametrize(
    ("capture", "size", "linked"),
    [
        ("auto", LINK_MIN_BYTES, True),
        ("auto", 10_000, False),
        ("link", 10_000, True),
        ("copy", LINK_MIN_BYTES, False),
    ],
)
def test_hard_links_where_the_file_system_allows_them(
    tmp_path: Path, capture: str, size: int, linked: bool
) -> None:
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch", capture=capture)
    logger.create_logger_context(rank=0)
    source = tmp_path / "weights.bin"
    source.write_bytes(b"x" * size)
    logger.log(str(source), "weights.bin", kind="artifact")
    logger.destroy_logger_context()
    (record,) = read_run(str(logger.journal_path)).of_kind("artifact")
    assert (os.stat(record.value).st_ino == os.stat(source).st_ino) is linked  # the same file
    assert os.path.getsize(record.value) == size


def test_an_unknown_capture_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="capture must be one of"):
        JournalLogger(capture="symlink")


def test_a_fifo_is_refused_at_the_call(tmp_path: Path) -> None:
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch")
    logger.create_logger_context(rank=0)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"identifier='pipe'.*FIFO"):
        logger.log(str(fifo), "pipe", kind="artifact")
    folder = tmp_path / "folder"
    folder.mkdir()
    os.mkfifo(folder / "inner-pipe")
    with pytest.raises(ValueError, match=r"identifier='folder'.*FIFO"):
        logger.log(str(folder), "folder", kind="artifact")
    logger.log(1.0, "after")
    logger.destroy_logger_context()
    assert [r.key for r in read_run(str(logger.journal_path)).records] == ["after"]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """A small tmpfs (we are root in the test machine), unmounted after the test."""
    mounted: list[Path] = []

    def mount(name: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(point)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("cause", ["files-area-blocked", "disk-full"])
def test_an_artifact_that_cannot_be_captured_is_an_error_never_the_original(
    tmp_path: Path, tmpfs: Callable[[str], Path], cause: str
) -> None:
    savedir = tmpfs("small") / "sd" if cause == "disk-full" else tmp_path / "sd"
    recording = RecordingLogger(savedir=str(savedir))
    logger = LoggersCollection([JournalLogger(savedir=str(savedir), log_freq="batch"), recording])
    logger.create_logger_context(rank=0)
    rank_dir = Path(str(logger.journal_path)).parent
    source = tmp_path / "weights.bin"  # another file system than the tmpfs: a copy is needed
    source.write_bytes(os.urandom(3 * 1024 * 1024) if cause == "disk-full" else b"w")
    if cause == "files-area-blocked":
        (rank_dir / "files").write_text("a file where the files area should be")
    with pytest.warns(RuntimeWarning, match=r"could not capture the artifact .*weights\.bin"):
        logger.log(str(source), "weights.bin", kind="artifact")
    logger.log(1.0, "after")
    assert logger.flush(timeout=30)
    assert any("could not capture" in e for e in logger.delivery_errors()["journal"])
    assert logger.unstored == 1
    path = str(logger.journal_path)
    with pytest.warns(RuntimeWarning, match="could not be stored"):
        logger.destroy_logger_context()
    assert [r.kind for r in recording.instance.records] == ["metric"]  # never the original path
    assert query(path, "SELECT COUNT(*) FROM records WHERE kind = 'artifact'") == [(0,)]
    (reason,) = [r for (r,) in query(path, "SELECT reason FROM unstored WHERE key = 'weights.bin'")]
    assert "could not capture" in reason and str(source) in reason


def test_an_artifact_path_recorded_without_capture_is_copied_or_set_aside(tmp_path: Path) -> None:
    """Records built by other code than log() may carry a plain path: a failed copy is set
    aside with its reason, never recorded as the original path."""
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch")
    logger.create_logger_context(rank=0)
    pipeline = logger._pipeline
    artifact = get_kind("artifact")
    present = tmp_path / "present.txt"
    present.write_text("here")
    for key, source in (("present.txt", present), ("gone.txt", tmp_path / "gone.txt")):
        pipeline.submit((artifact, key, str(source), 0, None, 0, time.time(), logger._bit, None))
    assert logger.flush(timeout=30)
    path = str(logger.journal_path)
    with pytest.warns(RuntimeWarning, match="could not be stored"):
        logger.destroy_logger_context()
    (record,) = read_run(path).of_kind("artifact")
    assert record.key == "present.txt" and Path(record.value).read_text() == "here"
    assert record.value != str(present)
    (reason,) = [r for (r,) in query(path, "SELECT reason FROM unstored WHERE key = 'gone.txt'")]
    assert "gone.txt" in reason


def test_a_live_exclusive_journal_is_read_in_process_with_the_writers_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANLOG_JOURNAL_FS", "nfs4")
    logger = JournalLogger(savedir=str(tmp_path / "sd"), log_freq="batch", job_id="inproc")
    logger.create_logger_context(rank=0)
    logger.log(1.0, "loss")
    assert logger.flush(timeout=30)
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # another connection: refused
        sqlite3.connect(str(logger.journal_path), timeout=0.1).execute(
            "SELECT COUNT(*) FROM records"
        ).fetchone()
    assert read_run(str(logger.journal_path)).metric("loss") == [(0, 1.0)]
    logger.destroy_logger_context()
