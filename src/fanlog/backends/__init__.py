"""The trackers that ship with fanlog, one module each, imported only when used.

Other trackers register themselves with :func:`fanlog.register_backend` or an entry point
in the ``fanlog.backends`` group; :func:`fanlog.backend.logger_type` finds every one.
"""

from __future__ import annotations

from importlib.util import find_spec

BUILTIN: dict[str, str] = {
    "journal": "fanlog.backends.journal:JournalLogger",
    "console": "fanlog.backends.console:ConsoleLogger",
    "mlflow": "fanlog.backends.mlflow:MLflowLogger",
    "tensorboard": "fanlog.backends.tensorboard:TensorBoardLogger",
    "wandb": "fanlog.backends.wandb:WandBLogger",
    "azureml": "fanlog.backends.azureml:AzureMLLogger",
    "prov": "fanlog.backends.prov:Prov4MLLogger",
}
"""name → ``"module:LoggerClass"`` of each built-in tracker."""

KINDS: dict[str, str] = {"prov_documents": "fanlog.backends.prov"}
"""Kinds a built-in tracker declares in its own module: kind → that module. The kinds
registry imports the module the first time such a kind is asked for by name (a journal-only
run can log it, and any process can read it back)."""

LIBRARIES: dict[str, str] = {
    "mlflow": "mlflow",
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "azureml": "azureml.mlflow",
    "prov": "yprov4ml",
}
"""The library each built-in tracker writes with (the journal and the console need none)."""


def installed(name: str) -> bool:
    """Whether built-in tracker `name` can be used here: its library is found (not imported)."""
    library = LIBRARIES.get(name)
    try:
        return library is None or find_spec(library) is not None
    except ImportError:  # the parent package of a dotted name is missing
        return False
