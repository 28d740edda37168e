"""The `fanlog` command line: demo, ls, show, plot, export, sync."""

from __future__ import annotations

import importlib

import click

# name → "module:command"; each command lives beside the code it drives.
COMMANDS = {
    "demo": "fanlog.demo:demo_command",
    "ls": "fanlog.cli_runs:ls_command",
    "show": "fanlog.cli_runs:show_command",
    "plot": "fanlog.cli_runs:plot_command",
    "export": "fanlog.cli_runs:export_command",
    "sync": "fanlog.sync:sync_command",
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


def _unavailable(exc: Exception):  # noqa: ANN202
    def fail() -> None:
        raise click.ClickException(str(exc))

    return fail


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fanlog")
def cli() -> None:
    """fanlog: log a PyTorch loop to every experiment tracker, and read it back."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
