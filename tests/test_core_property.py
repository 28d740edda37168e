"""Property: any sequence of log() calls is read back from the journal exactly, in order per key."""

from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import fanlog
from fanlog import JournalLogger

keys = st.sampled_from(["loss", "acc", "val/loss", "lr", "x" * 50, "ключ"])
metric_call = st.tuples(
    st.just("metric"),
    keys,
    st.floats(allow_nan=False, width=64) | st.integers(-(2**53), 2**53),
    st.none() | st.integers(0, 10**9),
)
text_call = st.tuples(st.just("text"), keys, st.text(max_size=200), st.none() | st.integers(0, 100))
param_call = st.tuples(
    st.just("param"), keys, st.text(max_size=20) | st.integers() | st.booleans(), st.none()
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(metric_call | text_call | param_call, max_size=60))
@example(
    calls=[
        ("param", "lr", 2**63, None),
        ("param", "acc", -(2**63) - 1, None),
        ("param", "loss", 2**63 - 1, None),
    ]
)
def test_sequence_reads_back_exactly(calls):
    with tempfile.TemporaryDirectory() as savedir:
        logger = JournalLogger(savedir=savedir, log_freq="batch")
        expected: dict[tuple[str, str], list[tuple[int, object]]] = {}
        auto: dict[str, int] = {}
        with logger.start_logging():
            for kind, key, value, step in calls:
                logger.log(value, key, kind=kind, step=step)
                used = auto.get(key, 0) if step is None else step
                auto[key] = used + 1
                stored = float(value) if kind == "metric" else value
                if kind == "param" and type(value) is int and not -(2**63) <= value < 2**63:
                    stored = str(value)  # beyond int64 a param keeps its digits as text
                expected.setdefault((kind, key), []).append((used, stored))
        run = fanlog.read_run(savedir)
        got: dict[tuple[str, str], list[tuple[int, object]]] = {}
        for record in run.records:
            got.setdefault((record.kind, record.key), []).append((record.step, record.value))
        assert got == expected
