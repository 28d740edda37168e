"""The `fanlog` command line: demo, ls, show, plot, export, sync.

Only this package imports click; the library (``import fanlog``, :func:`fanlog.sync`,
:func:`fanlog.read_run`, :func:`fanlog.from_config`) does not.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import click

# name → "module:command"; a command's module is imported only when that command runs.
COMMANDS = {
    "demo": "fanlog.cli.demo:demo_command",
    "ls": "fanlog.cli.runs:ls_command",
    "show": "fanlog.cli.runs:show_command",
    "plot": "fanlog.cli.runs:plot_command",
    "export": "fanlog.cli.runs:export_command",
    "sync": "fanlog.cli.sync:sync_command",
    "config": "fanlog.cli.config:config_command",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (keeps `fanlog --help` fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            return click.Command(name, help=f"(unavailable: {exc})", callback=_unavailable(exc))


def _unavailable(exc: Exception) -> Callable[[], None]:
    def fail() -> None:
        raise click.ClickException(str(exc))

    return fail


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fanlog")
def cli() -> None:
    """fanlog: log a PyTorch loop to every experiment tracker, and read it back."""


def main() -> None:
    cli()
