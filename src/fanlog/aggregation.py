"""Cross-rank reduction (``reduce=``) and epoch accumulation (``on_epoch=True``).

``Logger.log`` hands a call here, on every rank and before any gating, when it carries
``reduce=`` or ``on_epoch=``. After reducing, the value goes back through ``Logger.log``
without those options, so the normal gate (``log_freq``, ``log_on_workers``) decides
which ranks and backends store it. The state (the open epoch's accumulators, the number
of exchanges per metric) lives on the :class:`fanlog.run.Run`.

The rules (see docs/distributed.md):

* ``log(x, key, reduce="mean"|"sum"|"max"|"min")`` reduces ``x`` across all ranks at that
  call (Lightning's ``sync_dist``). It is a collective: every rank must make the same calls,
  in the same order. A rank that skips one would make the others wait, so the exchange runs
  on a gloo group with a timeout (``FANLOG_REDUCE_TIMEOUT`` seconds, default 600) and each
  exchange carries the metric's name and call number: a mismatch or a timeout raises
  :class:`ReduceError` naming the metric instead of hanging or pairing the wrong values.
  The exchange needs the value on the host, so a device tensor costs one synchronisation
  per call; use ``on_epoch=True`` as well to pay it once per epoch.
* ``log(x, key, on_epoch=True, reduce_fx="mean"|"sum"|"max"|"min")`` accumulates ``x``
  over the epoch and logs the result once, when ``logger.end_epoch()`` is called (the
  decision for "end of epoch or next epoch-level log": ``end_epoch()`` only, so that a
  loop that never passes ``batch_idx`` still gets one value per epoch). The record has
  ``batch_idx=None`` (so ``log_freq="epoch"`` keeps it) and step = the epoch number, or
  the last ``step=`` given to the accumulated calls. Device tensors are summed on the
  device (``a + b``, ``clamp``): no synchronisation per batch, none at all without
  ``reduce=`` (the result is logged as a device tensor, which the core snapshots
  asynchronously).
* Both together: each rank reduces its epoch with ``reduce_fx``, then the ranks reduce
  with ``reduce``. With ``mean``/``mean`` (and ``sum``/``sum``, ``max``/``max``,
  ``min``/``min``) the values of all ranks are pooled, so the mean is weighted by the
  number of batches each rank saw.
"""

from __future__ import annotations

import datetime
import os
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fanlog.diagnostics import warn_once
from fanlog.errors import FanlogError, bad_item
from fanlog.kinds.core import normalize_metric
from fanlog.rank import _distributed, detect_world_size
from fanlog.tensors import is_tensor, torch_module

REDUCE_OPS = ("mean", "sum", "max", "min")
OWN_OPTIONS = ("reduce", "on_epoch", "reduce_fx")
REDUCE_TIMEOUT = float(os.environ.get("FANLOG_REDUCE_TIMEOUT", "600"))
"""Seconds a rank waits for the others in a ``reduce=`` exchange before raising."""


class ReduceError(FanlogError, RuntimeError):
    """A ``reduce=`` exchange failed: a rank skipped the call, called another metric, or died."""


@dataclass
class Accumulator:
    """One metric's running values over an epoch, on the device the values live on."""

    reduce_fx: str
    reduce: str | None
    kind: str
    total: Any = 0.0
    count: int = 0
    high: Any = None
    low: Any = None
    step: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def add(self, value: Any) -> None:
        """Fold one value in. Tensor ops only: queued on the device, never waited for."""
        self.count += 1
        if self.reduce_fx in ("mean", "sum"):
            self.total = self.total + value
        elif self.reduce_fx == "max":
            self.high = value if self.high is None else _extreme(self.high, value, "max")
        else:
            self.low = value if self.low is None else _extreme(self.low, value, "min")

    def local(self) -> Any:
        """This rank's epoch value (a float or a 0-d tensor on the values' device)."""
        if self.reduce_fx == "mean":
            return self.total / self.count
        if self.reduce_fx == "sum":
            return self.total
        return self.high if self.reduce_fx == "max" else self.low


class RunState(Protocol):
    """Where a run keeps this module's state (:class:`fanlog.run.Run`)."""

    epoch: int
    accumulators: dict[str, Accumulator]
    """The open epoch's ``on_epoch=True`` values, per key."""
    reduce_calls: dict[str, int]
    """``reduce=`` exchanges made so far, per key: part of the mismatch check."""


# ---------------------------------------------------------------------- entry points
def handle(
    logger: Any,
    item: Any,
    identifier: str,
    kind: str,
    step: int | None,
    batch_idx: int | None,
    options: dict[str, Any],
) -> None:
    """`Logger.log` with ``reduce=`` and/or ``on_epoch=``: reduce or accumulate, then log."""
    reduce = options.get("reduce")
    on_epoch = options.get("on_epoch", False)
    reduce_fx = options.get("reduce_fx", "mean")
    rest = {k: v for k, v in options.items() if k not in OWN_OPTIONS}
    _check(identifier, kind, reduce, on_epoch, reduce_fx)
    if not on_epoch and reduce is None:
        logger.log(item, identifier, kind, step=step, batch_idx=batch_idx, **rest)
        return
    value = _scalar(item, identifier)
    run: RunState = logger._run
    if not on_epoch:
        assert reduce is not None
        reduced = reduce_across_ranks(run, identifier, reduce, value)
        logger.log(reduced, identifier, kind, step=step, batch_idx=batch_idx, **rest)
        return
    accumulators = run.accumulators
    acc = accumulators.get(identifier)
    if acc is None:
        acc = accumulators[identifier] = Accumulator(reduce_fx, reduce, kind, options=rest)
    elif (acc.reduce_fx, acc.reduce) != (reduce_fx, reduce):
        raise ValueError(
            f"log({identifier!r}, on_epoch=True): reduce_fx={reduce_fx!r}, reduce={reduce!r} "
            f"differ from this epoch's earlier calls (reduce_fx={acc.reduce_fx!r}, "
            f"reduce={acc.reduce!r})"
        )
    acc.add(value)
    if step is not None:
        acc.step = int(step)


def end_epoch(run: RunState, log: Callable[..., None]) -> None:
    """Log (through `log`) every metric `run` accumulated, once, reducing across ranks where asked.

    Metrics are handled in sorted key order, so every rank meets the ``reduce=``
    exchanges in the same order whatever order it logged them in.
    """
    accumulators = run.accumulators
    for identifier in sorted(accumulators):
        acc = accumulators[identifier]
        value = acc.local() if acc.reduce is None else _reduce_epoch(run, identifier, acc)
        del accumulators[identifier]
        step = acc.step if acc.step is not None else run.epoch
        log(value, identifier, acc.kind, step=step, batch_idx=None, **acc.options)


def pending(logger: Any) -> list[str]:
    """Metrics accumulated this epoch and not logged yet (they are logged at `end_epoch`)."""
    run: RunState | None = logger._run
    return sorted(run.accumulators) if run is not None else []


# ---------------------------------------------------------------------- cross-rank
def reduce_across_ranks(run: RunState, identifier: str, op: str, value: Any) -> float:
    """`value` reduced with `op` over every rank (the local value without torch.distributed)."""
    local = _host(value)
    # Same payload shape as an epoch exchange ([value, count, total]): a rank that pairs one
    # kind of call with the other is then reported as a mismatch, not a size error.
    rows = _exchange(run, identifier, op, [local, 1.0, local])
    if rows is None:
        return local
    return _combine(op, [r[0] for r in rows])


def _reduce_epoch(run: RunState, identifier: str, acc: Accumulator) -> float:
    assert acc.reduce is not None
    local = _host(acc.local())
    total = _host(acc.total) if acc.reduce_fx in ("mean", "sum") else local
    rows = _exchange(run, identifier, acc.reduce, [local, float(acc.count), total])
    if rows is None:
        return local
    if acc.reduce_fx == acc.reduce == "mean":  # pooled: weighted by each rank's batch count
        return sum(r[2] for r in rows) / sum(r[1] for r in rows)
    return _combine(acc.reduce, [r[0] for r in rows])


def _combine(op: str, values: list[float]) -> float:
    """`op` over the ranks' values (for max/max, min/min, sum/sum this equals pooling)."""
    if op == "sum":
        return float(sum(values))
    if op == "max":
        return float(max(values))
    if op == "min":
        return float(min(values))
    return float(sum(values) / len(values))


_group_lock = threading.Lock()
_group: Any = None
_group_for: Any = None


def _side_group(dist: Any) -> Any:
    """A gloo group with fanlog's timeout, created once per default process group.

    Creating it is itself a collective; it happens at the first ``reduce=`` exchange,
    which every rank reaches at the same point of the program.
    """
    global _group, _group_for
    default = dist.group.WORLD
    with _group_lock:
        if _group is None or _group_for is not default:
            _group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=REDUCE_TIMEOUT))
            _group_for = default
        return _group


def _exchange(run: RunState, identifier: str, op: str, payload: list[float]) -> list[list[float]] | None:
    """All ranks' payloads, after checking that they all exchanged the same metric and call.

    None when torch.distributed is not initialised (the local value is the answer).
    """
    dist = _distributed()
    calls = run.reduce_calls
    call = calls.get(identifier, 0)
    calls[identifier] = call + 1
    if dist is None:
        if detect_world_size() > 1:
            warn_once(
                "fanlog: log(..., reduce=...) needs torch.distributed initialised to reduce "
                "across ranks; each rank logs its own value",
                stacklevel=5,
            )
        return None
    torch = torch_module()
    assert torch is not None
    tag = float(zlib.crc32(identifier.encode()))
    mine = torch.tensor([tag, float(call), *payload], dtype=torch.float64)
    world = dist.get_world_size()  # type: ignore[attr-defined]
    rows = [torch.zeros_like(mine) for _ in range(world)]
    try:
        group = _side_group(dist)
        dist.all_gather(rows, mine, group=group)  # type: ignore[attr-defined]
    except RuntimeError as exc:
        raise ReduceError(
            f"fanlog: log({identifier!r}, reduce={op!r}) (call #{call} of this metric on rank "
            f"{dist.get_rank()}) did not complete within {REDUCE_TIMEOUT:g}s: another rank "  # type: ignore[attr-defined]
            f"skipped this call, is still busy elsewhere, or died. Every rank must call "
            f"log(..., reduce=...) for this metric. Cause: {exc}"
        ) from exc
    if any(int(r[0]) != int(tag) or int(r[1]) != call for r in rows):
        _mismatch(dist, group, identifier, op, call, len(rows))
    return [r[2:].tolist() for r in rows]


def _mismatch(dist: Any, group: Any, identifier: str, op: str, call: int, world: int) -> None:
    """Every rank sees the same rows, so all of them raise; first learn the other names."""
    names: list[Any] = [None] * world
    try:
        dist.all_gather_object(names, (identifier, call), group=group)
    except RuntimeError:
        names = [("<unknown>", "?")] * world
    seen = ", ".join(f"rank {rank}: {name!r} call #{n}" for rank, (name, n) in enumerate(names))
    raise ReduceError(
        f"fanlog: log({identifier!r}, reduce={op!r}): the ranks reduced different metrics or "
        f"different calls of one metric ({seen}). Every rank must call log(..., reduce=...) "
        f"for the same metrics, the same number of times, in the same order."
    )


# ---------------------------------------------------------------------- helpers
def _check(identifier: str, kind: str, reduce: Any, on_epoch: Any, reduce_fx: Any) -> None:
    where = f"log({identifier!r}"
    if reduce is not None and reduce not in REDUCE_OPS:
        raise ValueError(f"{where}, reduce={reduce!r}): expected one of {REDUCE_OPS} or None")
    if not isinstance(on_epoch, bool):
        raise TypeError(f"{where}, on_epoch={on_epoch!r}): expected True or False")
    if reduce_fx not in REDUCE_OPS:
        raise ValueError(f"{where}, reduce_fx={reduce_fx!r}): expected one of {REDUCE_OPS}")
    if (reduce is not None or on_epoch) and kind != "metric":
        raise ValueError(f"{where}, kind={kind!r}): reduce= and on_epoch= apply to metrics only")


def _scalar(item: Any, identifier: str) -> Any:
    """A float, or for a device tensor a detached 0-d float tensor left on its device."""
    if is_tensor(item):
        if item.numel() != 1:
            raise bad_item("metric", identifier, "a scalar (one-element tensor)", item, ValueError)
        if item.is_complex():
            raise bad_item("metric", identifier, "a real number", item)
        if item.device.type == "cpu":
            return float(item.item())  # nothing to wait for on the host, and cheaper than ops
        torch = torch_module()
        assert torch is not None
        wide = torch.float32 if item.device.type == "mps" else torch.float64
        return item.detach().reshape(()).to(wide)
    return normalize_metric(item, identifier)


def _extreme(a: Any, b: Any, op: str) -> Any:
    """max/min of two values, either of which may be a tensor, without leaving the device."""
    if is_tensor(a) or is_tensor(b):
        tensor, other = (a, b) if is_tensor(a) else (b, a)
        if is_tensor(other):
            torch = torch_module()
            assert torch is not None
            return torch.maximum(tensor, other) if op == "max" else torch.minimum(tensor, other)
        return tensor.clamp(min=other) if op == "max" else tensor.clamp(max=other)
    return max(a, b) if op == "max" else min(a, b)


def _host(value: Any) -> float:
    """A host float: the one place a device value is waited for (reduce= exchanges)."""
    return float(value.item()) if is_tensor(value) else float(value)
