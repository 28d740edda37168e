"""`fanlog config`: check a configuration file, or print the JSON Schema of configuration files."""

from __future__ import annotations

import json
import os

import click

from fanlog.config import CONFIG_ENV, ConfigError, from_config, json_schema


@click.command("config")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--schema", is_flag=True, help="Print the JSON Schema of configuration files and exit.")
def config_command(path: str | None, schema: bool) -> None:
    """Check a logger configuration file (default: $FANLOG_CONFIG), or print its JSON Schema.

    The loggers the file describes are built but not started, so an unknown option,
    backend or value shows up here instead of at the start of a training job.
    """
    if schema:
        click.echo(json.dumps(json_schema(), indent=2, default=str))
        return
    try:
        logger = from_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    names = [type(m).__name__ for m in logger.members()] or [type(logger).__name__]
    click.echo(f"{path or os.environ.get(CONFIG_ENV)}: OK ({', '.join(names)})")
