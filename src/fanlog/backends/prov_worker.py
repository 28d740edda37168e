"""The yProv4ML worker process: yprov4ml 2.0.x or 3.2.x, whichever is installed.

:class:`WorkerState` is what :mod:`fanlog.isolated` serves in the child process of the prov
backend (see :mod:`fanlog.backends.prov`). itwinai pins yprov4ml 2.0.9; fanlog's own pin is
3.2.4. Their APIs differ call by call, so the worker finds out which one it has (2.0.x
exports the ``Context`` enum, 3.2.x takes contexts as strings) and :class:`Calls20` or
:class:`Calls32` makes each call the way that version takes it. docs/backends/prov.md lists
what differs for the user.
"""

from __future__ import annotations

import io
import os
from importlib import metadata
from typing import Any

from fanlog.record import RunStatus

_SOURCES = {
    "flops_pb": "torch.utils.flop_counter",
    "flops_pe": "torch.utils.flop_counter",
    "execution_time": "std.time",
}


class Calls32:
    """yprov4ml 3.2.x: string contexts, a pinned run number, timestamps, RO-Crate."""

    def __init__(self, yprov4ml: Any, data: Any) -> None:
        self.y = yprov4ml
        self.data = data

    def start(self, options: dict[str, Any]) -> None:
        self.y.start_run(**options)

    def context(self, name: str | None) -> Any:
        return name

    def metric(self, key: str, value: float, context: Any, step: int, source: str | None, ms: int) -> None:
        self.y.log_metric(key, value, context=context, step=step, source=source, timestamp=ms)

    def model_folder(self, key: str) -> str | None:
        """The folder yprov4ml needs for a model key with '/': it saves in the working directory."""
        return os.path.dirname(key) or None

    def documents(self, graph: bool, svg: bool, crate: bool) -> None:
        self.y.end_run(create_graph=graph, create_svg=svg, crate_ro_crate=crate)


class Calls20(Calls32):
    """yprov4ml 2.0.x: ``Context`` members only, no run number of ours, no timestamps, no
    RO-Crate (2.0.9 never writes it), codecarbon started unless disabled."""

    FILE_TYPES = {"csv": "CSV", "nc": "NETCDF", "zarr": "ZARR"}

    def start(self, options: dict[str, Any]) -> None:
        from yprov4ml.datamodel.metric_type import MetricsType

        options = dict(options)
        options.pop("use_run_id", None)  # 2.0.x numbers runs itself
        options["metrics_file_type"] = MetricsType[self.FILE_TYPES[options.get("metrics_file_type", "csv")]]
        options["disable_codecarbon"] = True  # 1.2 s at start, and it probes the network
        self.y.start_run(**options)

    def context(self, name: str | None) -> Any:
        # 2.0.x fails on a metric or param without a context: itwinai's default takes its place.
        return self.y.Context[(name or "training").upper()]

    def metric(self, key: str, value: float, context: Any, step: int, source: str | None, ms: int) -> None:
        self.y.log_metric(key, value, context=context, step=step, source=source)

    def model_folder(self, key: str) -> str | None:
        # 2.0.x saves straight to <artifacts>/<key>/<key>_<n>.pt: the key's folder must exist there.
        folder = os.path.dirname(key)
        return os.path.join(self.data.ARTIFACTS_DIR, key, folder) if folder else None

    def documents(self, graph: bool, svg: bool, crate: bool) -> None:
        self.y.end_run(create_graph=graph, create_svg=svg)


class SavedModel:
    """Stands in for the user's module in the worker: yprov4ml needs only its
    ``state_dict()`` (to save it) and ``parameters()`` (to count them)."""

    def __init__(self, state: dict[str, Any], params: list[str], cls: str) -> None:
        self._state = state
        self._params = params
        self.class_name = cls

    def state_dict(self) -> dict[str, Any]:
        return self._state

    def parameters(self) -> list[Any]:
        return [self._state[name] for name in self._params if name in self._state]


class Sized:
    """A Dataset of a known length, rebuilt from fanlog's dataset description."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index


class WorkerState:
    """Everything the worker does with yprov4ml, one request at a time."""

    def __init__(self) -> None:
        import torch
        import yprov4ml
        from yprov4ml.constants import PROV4ML_DATA

        self.torch = torch
        self.yprov4ml = yprov4ml
        self.data = PROV4ML_DATA
        self.calls = (
            Calls20(yprov4ml, PROV4ML_DATA)
            if hasattr(yprov4ml, "Context")
            else Calls32(yprov4ml, PROV4ML_DATA)
        )
        self.metric_dirs: set[str] = set()

    def start(self, options: dict[str, Any]) -> dict[str, Any]:
        self.calls.start(options)
        return {
            "experiment_dir": os.path.abspath(self.data.EXPERIMENT_DIR),
            "version": metadata.version("yprov4ml"),
        }

    def write(self, items: list[tuple[Any, ...]]) -> dict[str, Any]:
        import traceback

        done, documents = 0, []
        try:
            for index, item in enumerate(items):
                written = self.apply(*item)
                if written is not None:
                    documents.append((index, written))
                done += 1
        except Exception:
            return {"done": done, "documents": documents, "error": traceback.format_exc()}
        return {"done": done, "documents": documents, "error": None}

    def apply(
        self, kind: str, key: str, value: Any, step: int, context: str | None, extra: dict[str, Any]
    ) -> list[str] | None:
        y, calls = self.yprov4ml, self.calls
        ctx = calls.context(context)
        # A context given only when the user gave one: each version has its own default for
        # models (2.0.x: Context.MODELS) and datasets (Context.DATASETS).
        given = {} if context is None else {"context": ctx}
        if kind in ("metric", "flops_pb", "flops_pe", "execution_time"):
            self.metric(key, value, ctx, step, _SOURCES.get(kind), extra["time_ms"])
        elif kind == "param":
            y.log_param(key, value, **given)
        elif kind == "system":
            # yprov4ml's own reading (power, RAM, GPU) is taken now, so only in a live run;
            # the values fanlog measured at the call are kept under `<key>/<name>`.
            if not extra["resumed"]:
                y.log_system_metrics(ctx, step=step)
            for name, number in value.items():
                self.metric(f"{key}/{name}", number, ctx, step, "fanlog", extra["time_ms"])
        elif kind == "model":
            self.model_folder(key)
            y.save_model_version(key, self.model(value), step=step, **given)
        elif kind == "best_model":
            self.model_folder(key)
            y.log_model(key, self.model(value), is_input=False, **given)
        elif kind == "dataset":
            y.log_dataset(key, self.dataset(value), **given)
        elif kind == "prov_documents":
            return self.documents(value)
        else:
            raise ValueError(f"the prov backend does not handle kind {kind!r}")
        return None

    def metric(self, key: str, value: float, context: Any, step: int, source: str | None, ms: int) -> None:
        # A key like "train/loss" becomes a file in a sub-folder that yprov4ml does not create.
        folder = os.path.dirname(key)
        if folder and folder not in self.metric_dirs:
            os.makedirs(os.path.join(self.data.METRIC_DIR, folder), exist_ok=True)
            self.metric_dirs.add(folder)
        self.calls.metric(key, float(value), context, step, source, ms)

    def model_folder(self, key: str) -> None:
        folder = self.calls.model_folder(key)
        if folder:
            os.makedirs(folder, exist_ok=True)

    def model(self, payload: bytes) -> SavedModel:
        saved = self.torch.load(io.BytesIO(payload), weights_only=True)
        return SavedModel(saved["state_dict"], saved["params"], saved["class"])

    def dataset(self, description: dict[str, Any]) -> Any:
        """A DataLoader or Dataset with the recorded size, for yprov4ml's statistics."""
        rows = description.get("num_rows")
        if rows is None:
            return None
        from torch.utils.data import DataLoader, Dataset

        class RecordedDataset(Sized, Dataset):
            """yprov4ml tells a Dataset from a DataLoader by isinstance."""

        dataset = RecordedDataset(int(rows))
        if description.get("batch_size"):
            return DataLoader(dataset, batch_size=int(description["batch_size"]))
        return dataset

    def documents(self, options: dict[str, Any]) -> list[str]:
        """Write the PROV-JSON (and dot/svg/RO-Crate) now; yprov4ml keeps collecting. The
        files that exist are returned (2.0.x names files it did not write)."""
        svg = bool(options.get("create_svg", False))
        crate = bool(options.get("create_rocrate", False))
        self.calls.documents(bool(options.get("create_graph", True)) or svg, svg, crate)
        stem = os.path.join(self.data.EXPERIMENT_DIR, f"prov_{self.data.PROV_JSON_NAME}")
        found = [stem + ext for ext in (".json", ".dot", ".svg") if os.path.exists(stem + ext)]
        zipped = self.data.EXPERIMENT_DIR + ".zip"
        if crate and os.path.exists(zipped):
            found.append(zipped)
        return [os.path.abspath(path) for path in found]

    def end(self, options: dict[str, Any]) -> dict[str, Any]:
        self.yprov4ml.log_param("run_status", options["status"])
        return {"documents": self.documents(options)}

    def parent_gone(self) -> None:
        """The training process went away without closing the run: keep what we have."""
        if self.data.is_collecting:
            self.end({"status": RunStatus.KILLED.value, "create_graph": False})
