"""fanlog: one `log()` call in a PyTorch loop, fanned out to every experiment tracker.

Everything is imported lazily (PEP 562), so `import fanlog` imports no tracker and no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Logger": "fanlog.logger",
    "TrackerLogger": "fanlog.logger",
    "BackendLogger": "fanlog.logger",
    "LoggersCollection": "fanlog.logger",
    "EmptyLogger": "fanlog.logger",
    "Backend": "fanlog.backend",
    "BackendOptions": "fanlog.options",
    "register_backend": "fanlog.backend",
    "Record": "fanlog.record",
    "RunInfo": "fanlog.record",
    "RunStatus": "fanlog.record",
    "Kind": "fanlog.kinds",
    "register_kind": "fanlog.kinds",
    "JournalLogger": "fanlog.backends.journal",
    "ConsoleLogger": "fanlog.backends.console",
    "MLflowLogger": "fanlog.backends.mlflow",
    "TensorBoardLogger": "fanlog.backends.tensorboard",
    "WandBLogger": "fanlog.backends.wandb",
    "AzureMLLogger": "fanlog.backends.azureml",
    "Prov4MLLogger": "fanlog.backends.prov",
    "read_run": "fanlog.reader",
    "find_runs": "fanlog.reader",
    "sync": "fanlog.delivery.sync",
    "from_config": "fanlog.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fanlog' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
