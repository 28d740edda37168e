"""DataLoader workers kept across epochs (persistent_workers=True, fork): each record they
log carries the epoch it was logged in, not the epoch of the fork, and automatic steps of
a key never repeat across workers. Real workers, real forks; counted in the journals."""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fanlog

pytest.importorskip("torch")

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch.utils.data
    from fanlog import JournalLogger

    logger = JournalLogger(savedir=sys.argv[1], log_freq="batch", job_id="dl")

    class Logging(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, index):
            logger.log(float(index), "worker/item")  # automatic step
            logger.log(float(index), "worker/index", step=index)  # given step
            return index

    logger.create_logger_context(rank=0)
    loader = torch.utils.data.DataLoader(Logging(), batch_size=2, num_workers=int(sys.argv[3]),
                                         persistent_workers=True, multiprocessing_context="fork")
    for epoch in range(int(sys.argv[2])):
        seen = sorted(i for batch in loader for i in batch.tolist())
        assert seen == list(range(12)), seen
        logger.log(float(epoch), "main/epoch")
        logger.end_epoch()
    del loader  # the workers exit (and close their journals)
    assert logger.destroy_logger_context()
    """
)


@pytest.mark.parametrize(("epochs", "workers"), [(3, 2), (4, 3)])
def test_persistent_workers_log_the_right_epoch_and_unique_steps(
    tmp_path: Path, epochs: int, workers: int
) -> None:
    savedir = tmp_path / "sd"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(savedir), str(epochs), str(workers)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = fanlog.read_run(savedir / "runs" / "dl").records
    items = [r for r in records if r.key == "worker/item"]
    assert len(items) == 12 * epochs  # nothing lost
    per_epoch = collections.Counter(r.epoch for r in items)
    assert per_epoch == dict.fromkeys(range(epochs), 12), per_epoch
    for epoch in range(epochs):  # each epoch saw every index once
        assert sorted(r.value for r in items if r.epoch == epoch) == [float(i) for i in range(12)]
    steps = [r.step for r in items]
    assert len(set(steps)) == len(steps), sorted(steps)  # no step twice across workers
    given = [r for r in records if r.key == "worker/index"]
    assert sorted((r.epoch, r.step) for r in given) == [(e, i) for e in range(epochs) for i in range(12)]
    assert [r.epoch for r in records if r.key == "main/epoch"] == list(range(epochs))
