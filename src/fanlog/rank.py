"""Which process am I? Rank and world size from the argument, the launcher, or torch.distributed."""

from __future__ import annotations

import os
import sys

RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def _from_env(names: tuple[str, ...]) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def _distributed() -> object | None:
    """torch.distributed if the user imported torch and initialised a process group."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def detect_rank(rank: int | None = None) -> int:
    """The argument, else torchrun/SLURM/Open MPI/PMI variables, else torch.distributed, else 0."""
    if rank is not None:
        return int(rank)
    found = _from_env(RANK_VARIABLES)
    if found is not None:
        return found
    dist = _distributed()
    return int(dist.get_rank()) if dist is not None else 0  # type: ignore[attr-defined]


def detect_world_size() -> int:
    found = _from_env(WORLD_SIZE_VARIABLES)
    if found is not None:
        return found
    dist = _distributed()
    return int(dist.get_world_size()) if dist is not None else 1  # type: ignore[attr-defined]


def job_id_from_env() -> str | None:
    """An id every rank of one job sees alike, when the launcher provides one."""
    explicit = os.environ.get("FANLOG_RUN_ID")
    if explicit:
        return explicit
    slurm = os.environ.get("SLURM_JOB_ID")
    if slurm:
        step = os.environ.get("SLURM_STEP_ID")
        return f"slurm-{slurm}" + (f".{step}" if step else "")
    elastic = os.environ.get("TORCHELASTIC_RUN_ID")
    if elastic and elastic != "none":
        return f"torchrun-{elastic}"
    return None


def agree_on(value: str) -> str:
    """Rank 0's `value` on every rank when torch.distributed is initialised, else `value`."""
    dist = _distributed()
    if dist is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)  # type: ignore[attr-defined]
    return str(box[0])
