"""Tutorial 6: AzureML, in job mode (inside an AzureML job) and from a VM.

``AzureMLLogger`` writes to an Azure Machine Learning workspace through MLflow and the
``azureml-mlflow`` plugin (``pip install 'fanlog[azureml]'``). It has two modes, and the
same script works in both: the logger decides from the environment.

Run it::

    # no workspace needed: train, show what the logger resolved, keep the run in the journal
    python tutorials/06_azureml.py --dry-run

    # from a VM or a laptop: the workspace from the portal's config.json (cwd or a parent) ...
    az login                                    # or a managed identity, or AZURE_CLIENT_* vars
    python tutorials/06_azureml.py --experiment mnist --tag lr-0.05
    # ... or named explicitly, or by its MLflow tracking URI
    python tutorials/06_azureml.py --subscription-id ... --resource-group ... \\
        --workspace-name ... --region westeurope
    python tutorials/06_azureml.py --tracking-uri "azureml://westeurope.api.azureml.ms/mlflow/v1.0/..."

    # inside an AzureML job (command: python tutorials/06_azureml.py): nothing to configure

then deliver a dry run's journal (or whatever a failed upload left behind)::

    fanlog sync mllogs --to azureml -o config_path=config.json -o tag=lr-0.05 --dry-run
    fanlog sync mllogs --to azureml -o config_path=config.json -o tag=lr-0.05

What it shows:

* **Job mode.** Inside an AzureML job, AzureML sets ``MLFLOW_TRACKING_URI=azureml://...``,
  ``MLFLOW_RUN_ID`` and ``MLFLOW_TRACKING_TOKEN``. ``AzureMLLogger()`` then attaches to the
  job's own run with the job's token, never starts a second run and never ends the job's
  run (the job owns its status). ``experiment_name``/``tag`` and ``credential`` are not used.
* **From a VM.** The workspace comes from a ``config.json`` (found in the working directory
  or a parent, or given as ``config_path=``), from ``subscription_id`` + ``resource_group`` +
  ``workspace_name``, or from an ``azureml://`` tracking URI. ``experiment_name`` is hi-ml's
  ``--experiment`` and ``tag`` hi-ml's ``--tag`` (the run's display name).
* **No login prompt in a batch job.** ``credential=`` takes any ``TokenCredential``
  (``AzureCliCredential()``, ``ManagedIdentityCredential()``, ...); without one, the logger
  uses ``DefaultAzureCredential`` *without* its interactive browser login, so a job with no
  credential fails instead of hanging. ``interactive=True`` allows the browser on a desktop.
* **The journal keeps everything.** Next to AzureML, a ``JournalLogger`` keeps every record
  (batch level too); what AzureML did not take (throttling, an outage, a dry run) is
  delivered later with ``fanlog sync --to azureml``, exactly once.
* **--dry-run contacts nothing.** It builds the logger exactly as a real run would (from a
  placeholder ``config.json`` written to a temporary directory when none is given), resolves
  the mode, workspace and tracking URI (no network needed), trains with the journal only,
  and asks ``fanlog.sync(..., dry_run=True)`` what would be sent. Any connection beyond
  127.0.0.1 is refused while it runs, so it cannot hang on a login or a lookup.
"""
# ci-args: --dry-run --epochs 1 --batches 4
# ci-requires: mlflow azureml.mlflow azure.identity
# ci-timeout: 120

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

import fanlog
from fanlog import JournalLogger, LoggersCollection
from fanlog.backends.azureml import (
    AzureMLLogger,
    Workspace,
    find_workspace_config,
    in_azureml_job,
    tracking_uri_for,
)

# What --dry-run writes when no config.json is given or found: a workspace that does not
# exist. Real ones come from the Azure portal (workspace page, "Download config.json").
PLACEHOLDER_CONFIG = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "resource_group": "my-resource-group",
    "workspace_name": "my-workspace",
    # Optional. Without a region the tracking URI is asked of Azure Resource Manager when
    # the run opens (on fanlog's background thread); with it, no lookup is needed.
    "region": "westeurope",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=20, help="training batches per epoch")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--savedir", default="mllogs")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="contact no workspace: resolve the logger, train with the journal "
        "only, and show what `fanlog sync --to azureml` would send",
    )
    # hi-ml's --experiment and --tag
    parser.add_argument(
        "--experiment",
        default="fanlog-tutorials",
        help="AzureML experiment (not used in job mode: the job has one)",
    )
    parser.add_argument(
        "--tag", default=None, help="the run's display name (default: lr-<lr>; not used in job mode)"
    )
    where = parser.add_argument_group("workspace, from a VM (one of; default: ./config.json)")
    where.add_argument("--config", default=None, help="the workspace's config.json")
    where.add_argument("--subscription-id", default=None)
    where.add_argument("--resource-group", default=None)
    where.add_argument("--workspace-name", default=None)
    where.add_argument("--region", default=None, help="e.g. westeurope (saves a lookup)")
    where.add_argument(
        "--tracking-uri", default=None, help="azureml://... MLflow tracking URI (turns job mode off)"
    )
    parser.add_argument(
        "--credential",
        default="default",
        choices=["default", "cli", "managed-identity"],
        help="default: DefaultAzureCredential without interactive login; "
        "cli: AzureCliCredential (after `az login`); managed-identity: "
        "ManagedIdentityCredential (AZURE_CLIENT_ID picks a user-assigned one)",
    )
    parser.add_argument(
        "--interactive",
        action="store_true",
        help="allow a browser login (desktops only; never in a batch job)",
    )
    args = parser.parse_args(argv)
    args.tag = args.tag or f"lr-{args.lr:g}"
    return args


# ---------------------------------------------------------------------------- the logger
def make_credential(args: argparse.Namespace) -> Any:
    """The TokenCredential to hand the logger; None lets it build DefaultAzureCredential."""
    if args.credential == "default":
        return None  # DefaultAzureCredential(exclude_interactive_browser_credential=not interactive)
    import azure.identity

    if args.credential == "cli":
        return azure.identity.AzureCliCredential()
    return azure.identity.ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID"))


def make_azureml_logger(args: argparse.Namespace, config_path: str | None) -> AzureMLLogger:
    """The AzureMLLogger a user writes. In a job, every workspace option below is ignored
    (unless --tracking-uri is given); from a VM, the first one given wins: the tracking URI,
    then the three workspace values, then config.json (config_path, else cwd or a parent)."""
    return AzureMLLogger(
        experiment_name=args.experiment,  # hi-ml --experiment
        tag=args.tag,  # hi-ml --tag: the run's display name
        tracking_uri=args.tracking_uri,
        subscription_id=args.subscription_id,
        resource_group=args.resource_group,
        workspace_name=args.workspace_name,
        config_path=config_path,
        region=args.region,
        credential=make_credential(args),
        interactive=args.interactive,
        tags={"tutorial": "06_azureml"},
        savedir=args.savedir,
        # AzureML throttles busy clients: send epoch-level values only. The journal keeps
        # the batch-level ones.
        log_freq="epoch",
    )


def describe(logger: AzureMLLogger) -> tuple[dict[str, Any], Workspace | None]:
    """Resolve what the logger would do, as start_logging() does first: decide the mode,
    the workspace, the tracking URI and the credential. This step uses no network."""
    backend = logger.make_backend()
    backend.prepare()
    pending = backend.tracking_uri is not None and "pending" in backend.tracking_uri
    facts = {
        "mode": "job (attach to the job's run)" if backend.job_mode else "from a VM (new run)",
        "workspace": (
            f"{ws.workspace_name} (resource group {ws.resource_group}, subscription {ws.subscription_id})"
            if (ws := backend.workspace)
            else "?"
        ),
        "tracking URI": (
            "looked up with Azure Resource Manager when the run opens (no region)"
            if pending
            else backend.tracking_uri
        ),
        "experiment": "the job's own" if backend.job_mode else backend.experiment_name,
        "run name": "the job's own" if backend.job_mode else backend.run_name,
        "run": (
            f"{backend.requested_run_id} (owned by the job, left RUNNING)"
            if backend.job_mode
            else "created at start, ended FINISHED/FAILED at the end"
        ),
        "credential": (
            "the job's MLFLOW_TRACKING_TOKEN" if backend.job_mode else type(backend.credential).__name__
        ),
        "kinds sent": ", ".join(sorted(backend.supported_kinds)),
    }
    return facts, backend.workspace


def print_description(title: str, facts: dict[str, Any]) -> None:
    print(title)
    for name, value in facts.items():
        print(f"  {name:13} {value}")


@contextlib.contextmanager
def pretend_azureml_job(workspace: Workspace) -> Iterator[None]:
    """The three variables AzureML sets in a job (fake values), for the dry run's illustration.
    The environment is restored afterwards."""
    fake = {
        "MLFLOW_TRACKING_URI": tracking_uri_for(workspace, "westeurope"),
        "MLFLOW_RUN_ID": "dry-run-job-run-id",
        "MLFLOW_TRACKING_TOKEN": "not-a-real-token",
    }
    saved = {name: os.environ.get(name) for name in fake}
    os.environ.update(fake)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def local_network_only() -> Iterator[None]:
    """Refuse (at once) any connection or name lookup beyond this machine."""
    local = {"127.0.0.1", "::1", "localhost"}
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
            raise ConnectionRefusedError(f"--dry-run: refused a connection to {address[0]}")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *rest: Any, **kwargs: Any) -> Any:
        if host not in local and host is not None:
            raise socket.gaierror(f"--dry-run: refused a name lookup of {host}")
        return real_getaddrinfo(host, *rest, **kwargs)

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect, socket.getaddrinfo = real_connect, real_getaddrinfo  # type: ignore[method-assign]


# ---------------------------------------------------------------------------- training
def train(logger: fanlog.Logger, args: argparse.Namespace) -> None:
    """A small classifier on two Gaussian blobs: nothing to download."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    centres = torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
    with logger.start_logging():
        logger.save_hyperparameters({"lr": args.lr, "epochs": args.epochs, "batches": args.batches})
        step = 0
        for epoch in range(args.epochs):
            epoch_loss = torch.zeros(())
            for batch_idx in range(args.batches):
                labels = torch.randint(0, 2, (32,))
                points = centres[labels] + 0.8 * torch.randn(32, 2)
                loss = loss_fn(model(points), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                epoch_loss += loss.detach()
                # Batch level: the journal keeps it; AzureML (log_freq="epoch") does not.
                logger.log(loss.detach(), "train/loss", step=step, batch_idx=batch_idx)
                step += 1
            with torch.no_grad():
                labels = torch.randint(0, 2, (256,))
                logits = model(centres[labels] + 0.8 * torch.randn(256, 2))
                accuracy = (logits.argmax(dim=1) == labels).float().mean()
            # Epoch level: every tracker keeps it (AzureML shows these as charts).
            logger.log_metrics(
                {"train/epoch_loss": epoch_loss / args.batches, "val/accuracy": accuracy}, step=epoch
            )
            logger.end_epoch()


# ---------------------------------------------------------------------------- the two paths
def sync_command(args: argparse.Namespace, config_path: str | None) -> str:
    """The `fanlog sync` command that delivers the journal to this workspace."""
    if args.tracking_uri:
        where = f"--tracking-uri '{args.tracking_uri}'"
    elif args.subscription_id:
        where = (
            f"-o subscription_id={args.subscription_id} -o resource_group={args.resource_group}"
            f" -o workspace_name={args.workspace_name}"
        )
        where += f" -o region={args.region}" if args.region else ""
    else:
        where = f"-o config_path={config_path or 'config.json'}"
    # The experiment is the run's own (from the journal); the display name goes as tag=.
    return f"fanlog sync {args.savedir} --to azureml {where} -o tag={args.tag}"


def dry_run(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(local_network_only())
        config_path = args.config
        if not (config_path or args.tracking_uri or args.subscription_id or find_workspace_config()):
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="azureml-"))
            config_path = os.path.join(folder, "config.json")
            with open(config_path, "w") as handle:
                json.dump(PLACEHOLDER_CONFIG, handle, indent=2)
            print(f"no workspace given: wrote a placeholder {config_path}")

        # 1. This environment, with the options given: what a real run would do here.
        azureml = make_azureml_logger(args, config_path)
        where = "an AzureML job" if in_azureml_job() else "not in an AzureML job"
        facts, workspace = describe(azureml)
        print_description(f"AzureMLLogger here ({where}):", facts)

        # 2. The same script inside a job: the logger needs no options at all.
        if not in_azureml_job() and workspace is not None:
            with pretend_azureml_job(workspace):
                job_facts, _ = describe(AzureMLLogger(savedir=args.savedir))
            print_description("AzureMLLogger() inside a job (simulated environment):", job_facts)

        # 3. Train with the journal only; the run name and experiment are the ones
        #    AzureML would show, and `fanlog sync` takes the experiment from the journal.
        logger = LoggersCollection(
            [JournalLogger(savedir=args.savedir, log_freq="batch")],
            experiment_name=args.experiment,
            run_name=args.tag,
        )
        train(logger, args)
        run = fanlog.read_run(logger.journal_path)
        print(f"journal: {len(run.records)} records in {logger.journal_path}")

        # 4. What `fanlog sync --to azureml` would send (dry run: no credential is used).
        #    The run never had an AzureML tracker, so sync uses a fresh cursor
        #    ('sync:azureml') and sends every record AzureML can store, batch level too.
        options: dict[str, Any] = {"tag": args.tag}
        if args.tracking_uri:
            options["tracking_uri"] = args.tracking_uri
        elif args.subscription_id:
            options.update(
                subscription_id=args.subscription_id,
                resource_group=args.resource_group,
                workspace_name=args.workspace_name,
                region=args.region,
            )
        else:
            options["config_path"] = config_path
        preview = fanlog.sync(args.savedir, to="azureml", dry_run=True, **options)
        print("fanlog sync --dry-run:\n" + preview.summary())
        print(f"\nwith a workspace, deliver it with:\n  {sync_command(args, args.config)}")


def real_run(args: argparse.Namespace) -> None:
    azureml = make_azureml_logger(args, args.config)
    logger = LoggersCollection(
        [JournalLogger(savedir=args.savedir, log_freq="batch"), azureml],
        experiment_name=args.experiment,
        run_name=args.tag,
        unsupported="ignore",  # nothing here is unsupported; shown for histograms and the like
    )
    train(logger, args)
    print(f"AzureML run: {azureml.azureml_run_id} ({azureml.backend.describe() if azureml.backend else '-'})")
    errors = logger.delivery_errors()
    if errors:
        print(f"not everything reached AzureML: {errors}")
        print(f"the journal has it; deliver the rest with:\n  {sync_command(args, args.config)}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.dry_run:
        dry_run(args)
    else:
        real_run(args)


if __name__ == "__main__":
    main()
