"""Which process am I? Rank and world size from the argument, the launcher, or torch.distributed.

Launchers are checked most specific first. torchrun sets ``RANK``; Open MPI, MPICH/Hydra
(``PMI_*``) and PMIx set their own variables. SLURM comes last, because an ``mpirun`` or a
``torchrun`` started inside a SLURM allocation inherits ``SLURM_PROCID=0`` on every process,
while the launcher's own variables are right. Rank and world size always come from the
same launcher, so a half-set environment cannot pair one launcher's rank with another's size.
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from typing import NamedTuple

# (launcher, rank variable, world size variable, local rank variable), most specific first.
LAUNCHERS: tuple[tuple[str, str, str, str], ...] = (
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("pmix", "PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"),
    ("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("mvapich", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


class Placement(NamedTuple):
    """Where this process sits in the job, and who said so."""

    rank: int
    world_size: int
    local_rank: int
    source: str
    """The launcher whose variables were used, ``torch.distributed``, or ``default``."""


def _int(name: str) -> int | None:
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


def detect_placement() -> Placement:
    """Rank, world size and local rank from the first launcher that set a rank.

    A launcher that sets a rank but no size (rare) falls back to torch.distributed's size,
    else rank + 1, so that a world size is never smaller than the process count it implies.
    """
    for source, rank_var, size_var, local_var in LAUNCHERS:
        rank = _int(rank_var)
        if rank is None:
            continue
        size = _int(size_var)
        if size is None:
            dist = _distributed()
            size = int(dist.get_world_size()) if dist is not None else rank + 1  # type: ignore[attr-defined]
        local = _int(local_var)
        return Placement(rank, max(size, rank + 1), rank if local is None else local, source)
    dist = _distributed()
    if dist is not None:
        rank = int(dist.get_rank())  # type: ignore[attr-defined]
        return Placement(rank, int(dist.get_world_size()), rank, "torch.distributed")  # type: ignore[attr-defined]
    return Placement(0, 1, 0, "default")


def detect_rank(rank: int | None = None) -> int:
    """The argument, else torchrun/MPI/PMI/SLURM variables, else torch.distributed, else 0."""
    if rank is not None:
        return int(rank)
    return detect_placement().rank


def detect_world_size() -> int:
    """The world size from the same source as the rank (launcher, torch.distributed, else 1)."""
    return detect_placement().world_size


def detect_local_rank() -> int:
    """The rank within this node (the GPU index to use), from the same source as the rank."""
    return detect_placement().local_rank


def job_id_from_env() -> str | None:
    """An id every rank of one job sees alike, when the launcher provides one."""
    explicit = os.environ.get("FANLOG_RUN_ID")
    if explicit:
        return check_run_id(explicit, "the environment variable FANLOG_RUN_ID")
    slurm = os.environ.get("SLURM_JOB_ID")
    if slurm:
        step = os.environ.get("SLURM_STEP_ID")
        return check_run_id(f"slurm-{slurm}" + (f".{step}" if step else ""), "SLURM_JOB_ID")
    elastic = os.environ.get("TORCHELASTIC_RUN_ID")
    if elastic and elastic != "none":
        return check_run_id(f"torchrun-{elastic}", "TORCHELASTIC_RUN_ID")
    return None


MAX_RUN_ID_LENGTH = 200
_RUN_ID_REFUSED = re.compile(r"[/\\\x00-\x1f\x7f]")


def check_run_id(run_id: object, source: str = "job_id") -> str:
    """`run_id` if it can name the run's directory (``<savedir>/runs/<run_id>``); else a
    ValueError that says where it came from and what is expected.

    One path component, so that every reader (``fanlog ls``, ``sync``) finds the run and
    nothing is written outside the save dir: no ``/`` or ``\\``, not ``.`` or ``..``, no NUL
    or other control character, not empty, at most MAX_RUN_ID_LENGTH characters.
    """
    if not isinstance(run_id, str):
        raise TypeError(f"{source} must be a str (a run id); got {type(run_id).__name__} {run_id!r}")
    problem = None
    if not run_id.strip():
        problem = "it is empty"
    elif run_id in (".", ".."):
        problem = f"{run_id!r} is not a directory name of its own"
    elif _RUN_ID_REFUSED.search(run_id):
        problem = "it holds '/', '\\' or a control character (NUL, newline, ...)"
    elif len(run_id) > MAX_RUN_ID_LENGTH:
        problem = f"it is {len(run_id)} characters long (at most {MAX_RUN_ID_LENGTH})"
    elif run_id != run_id.strip():
        problem = "it starts or ends with white space"
    if problem is not None:
        raise ValueError(
            f"{source} {run_id!r} cannot be a run id: {problem}. The run id names the run's "
            "directory <savedir>/runs/<run id>, so it must be one directory name, such as "
            "'sweep-trial-3'"
        )
    return run_id


def new_run_id() -> str:
    """A fresh run id: the local time and a random suffix (``20250101-120000-1a2b3c``)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def run_id_for_job(job_id: str | None = None) -> str:
    """The run id every rank of the job uses: `job_id`, else the launcher's
    (:func:`job_id_from_env`), else a new id that rank 0 broadcasts.

    Only a generated id differs between ranks, so only it is agreed on: with `job_id` or a
    launcher id, no collective runs, and a logger opened on some processes only (Accelerate's
    main process, rank 0 alone) never waits for the others.
    """
    known = check_run_id(job_id) if job_id else job_id_from_env()  # "" means: not given
    return known if known else agree_on(new_run_id())


def agree_on(value: str) -> str:
    """Rank 0's `value` on every rank when torch.distributed is initialised, else `value`.

    This is a collective: every rank must reach it, as with any torch.distributed call.
    """
    dist = _distributed()
    if dist is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)  # type: ignore[attr-defined]
    return str(box[0])
