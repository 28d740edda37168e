"""Kinds beyond the core ten that more than one tracker can store: tag, dataset, system,
flops_pb, flops_pe, execution_time and best_model.

They came with itwinai's Prov4MLLogger but say nothing about a tracker (MLflow takes
datasets, W&B tags and best models, the console execution times), so they stay in the
core. A kind only one tracker understands is declared in that tracker's module (yProv4ML's
``prov_documents`` is in :mod:`fanlog.backends.prov`).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping
from typing import Any

from fanlog.errors import bad_item
from fanlog.kinds.core import normalize_metric, normalize_model, snapshot_json
from fanlog.kinds.registry import Kind, register_kind
from fanlog.secrets import REDACTED, is_secret_key, scrub_text
from fanlog.tensors import Deferred, numbers_mapping, torch_module


def normalize_tag(item: Any, identifier: str) -> str:
    if not isinstance(item, (str, int, float, bool)):
        raise bad_item("tag", identifier, "a str, number or bool", item)
    if is_secret_key(identifier):
        return REDACTED
    return scrub_text(str.__str__(item) if isinstance(item, str) else str(item))


def normalize_dataset(item: Any, identifier: str) -> dict[str, Any]:
    """A description of a dataset: a mapping, a path, a DataFrame, a Dataset or a DataLoader.

    Secrets are redacted in every case; under a secret-looking identifier every value is.
    """
    description = _describe_dataset(item, identifier)
    if is_secret_key(identifier):
        return {key: REDACTED for key in description}
    return description


def _describe_dataset(item: Any, identifier: str) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return snapshot_json("dataset", identifier, item, "a mapping")
    if isinstance(item, (str, os.PathLike)):
        return {"source": scrub_text(os.fsdecode(item))}
    dataset = getattr(item, "dataset", item)  # a DataLoader carries its Dataset
    description: dict[str, Any] = {"class": type(dataset).__qualname__}
    if hasattr(item, "batch_size") and item is not dataset:
        description["batch_size"] = item.batch_size
    if hasattr(dataset, "columns") and hasattr(dataset, "shape"):  # pandas-like
        columns = [scrub_text(str(c)) for c in dataset.columns]
        description.update(num_rows=int(dataset.shape[0]), columns=columns)
        return description
    try:
        description["num_rows"] = len(dataset)
    except TypeError:
        raise bad_item(
            "dataset", identifier, "a mapping, path, DataFrame, Dataset or DataLoader", item
        ) from None
    return description


def normalize_system(item: Any, identifier: str) -> dict[str, float] | Deferred:
    """System usage now: given as a mapping of numbers, or measured when `item` is None."""
    if isinstance(item, Mapping):
        return numbers_mapping({str(k): normalize_metric(v, f"{identifier}/{k}") for k, v in item.items()})
    if item is not None:
        raise bad_item("system", identifier, "None (measure now) or a mapping of numbers", item)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    load1, _, _ = os.getloadavg()
    metrics = {
        "cpu_user_seconds": usage.ru_utime,
        "cpu_system_seconds": usage.ru_stime,
        "max_rss_mb": usage.ru_maxrss / 1024.0,
        "load_average_1m": load1,
    }
    torch = torch_module()
    if torch is not None and torch.cuda.is_available():
        metrics["gpu_memory_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
    return metrics


def _count_flops(model: Any, inputs: Any) -> float:
    torch = torch_module()
    if torch is None:
        raise RuntimeError("counting FLOPs needs torch")
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    return float(counter.get_total_flops())


def normalize_flops_per_batch(item: Any, identifier: str) -> float | Deferred:
    """FLOPs of one forward pass: a number, or a (model, batch) pair counted now; a batch that
    is an (inputs, targets) pair, as itwinai passes it, is counted on its inputs."""
    if isinstance(item, tuple) and len(item) == 2:
        model, batch = item
        inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
        return _count_flops(model, inputs)
    try:
        return normalize_metric(item, identifier)
    except TypeError:
        raise bad_item("flops_pb", identifier, "a number or a (model, batch) pair", item) from None


def normalize_flops_per_epoch(item: Any, identifier: str) -> float | Deferred:
    """FLOPs of one epoch: a number, or (model, dataloader), counted as batches × first batch."""
    if isinstance(item, tuple) and len(item) == 2:
        model, loader = item
        batch = next(iter(loader))
        inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
        return _count_flops(model, inputs) * len(loader)
    try:
        return normalize_metric(item, identifier)
    except TypeError:
        raise bad_item("flops_pe", identifier, "a number or a (model, dataloader) pair", item) from None


def normalize_execution_time(item: Any, identifier: str) -> float | Deferred:
    """Seconds: a number, or None for the seconds since the process started."""
    if item is None:
        return time.process_time()
    return normalize_metric(item, identifier)


for _kind in (
    Kind("tag", normalize_tag, "json", doc="a run tag"),
    Kind("dataset", normalize_dataset, "json", doc="a dataset description (MLflow log_input)"),
    Kind("system", normalize_system, "json", doc="system usage metrics", default_key="system"),
    Kind("flops_pb", normalize_flops_per_batch, "num", doc="FLOPs per batch"),
    Kind("flops_pe", normalize_flops_per_epoch, "num", doc="FLOPs per epoch"),
    Kind("execution_time", normalize_execution_time, "num", doc="seconds"),
    Kind("best_model", normalize_model, "bytes", doc="the best model so far"),
):
    register_kind(_kind)
