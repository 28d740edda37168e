"""`fanlog sync`: the command over :func:`fanlog.delivery.sync.sync`."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from fanlog.delivery.sync import SyncError, sync
from fanlog.journal import JournalBusyError


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.replace("-", "_"), value


@click.command("sync")
@click.argument("path", type=click.Path(exists=True))
@click.option("--to", "to", required=True, help="tracker: mlflow, wandb, tensorboard, azureml, ...")
@click.option("--dry-run", is_flag=True, help="report what would be sent; send nothing")
@click.option("--tracking-uri", default=None, help="MLflow/AzureML tracking URI")
@click.option("--experiment-name", default=None, help="MLflow experiment (default: the run's)")
@click.option("--project-name", default=None, help="W&B project")
@click.option("--mode", default=None, help="W&B mode (online, offline)")
@click.option("--logdir", default=None, help="TensorBoard log directory")
@click.option("--savedir", default=None, help="where file-based trackers write (default: the run's)")
@click.option("-o", "--option", "extra", multiple=True, help="any tracker option, KEY=VALUE (JSON)")
@click.option("--cursor", default=None, help="delivery entry to use (default: the run's own or sync:<to>)")
@click.option("--batch-size", type=int, default=None, help="records per request")
@click.option("--force", is_flag=True, help="sync even though the writing process still runs")
@click.option(
    "--retry-rejected", is_flag=True, help="send again the records this tracker refused for good earlier"
)
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option(
    "--follow", is_flag=True, help="follow a live journal (on the host that writes it) until its run ends"
)
def sync_command(
    path: str,
    to: str,
    dry_run: bool,
    tracking_uri: str | None,
    experiment_name: str | None,
    project_name: str | None,
    mode: str | None,
    logdir: str | None,
    savedir: str | None,
    extra: tuple[str, ...],
    cursor: str | None,
    batch_size: int | None,
    force: bool,
    retry_rejected: bool,
    no_progress: bool,
    follow: bool,
) -> None:
    """Deliver what the journal(s) under PATH hold and tracker --to has not received yet.

    PATH is a journal, a run or rank directory, or a save dir. Running it again sends
    nothing twice; an interrupted sync continues where it stopped. With --follow, PATH is
    one live run's journal (or rank directory): its records are delivered as they arrive,
    as the delivery agent does, until the run ends.
    """
    options: dict[str, Any] = {
        k: v
        for k, v in {
            "tracking_uri": tracking_uri,
            "experiment_name": experiment_name,
            "project_name": project_name,
            "mode": mode,
            "logdir": logdir,
            "savedir": savedir,
        }.items()
        if v is not None
    }
    options.update(_parse_option(text) for text in extra)
    if follow:
        _follow(path, to, cursor, options)
        return
    try:
        report = sync(
            path,
            to=to,
            dry_run=dry_run,
            progress=not no_progress,
            cursor=cursor,
            batch_size=batch_size,
            force=force,
            retry_rejected=retry_rejected,
            **options,
        )
    except (SyncError, ValueError, FileNotFoundError, ImportError, JournalBusyError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(report.summary())
    for skipped in (j for j in report.journals if not j.cursor):
        click.echo(f"Error: {skipped.error}", err=True)
    if report.interrupted:
        sys.exit(130)
    if not report.ok:
        sys.exit(1)


def _follow(path: str, to: str, cursor: str | None, options: dict[str, Any]) -> None:
    from fanlog.delivery.agent import follow_journal
    from fanlog.delivery.follow import CrossHostError

    try:
        complete = follow_journal(path, to, cursor, **options)
    except (SyncError, CrossHostError, ValueError, FileNotFoundError, ImportError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"followed {path} to {to}: "
        + ("everything delivered" if complete else "some records left for `fanlog sync`")
    )
    if not complete:
        sys.exit(1)
