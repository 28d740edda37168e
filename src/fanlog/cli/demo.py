"""`fanlog demo`: train a small model, log it, plot it, say where everything went."""

from __future__ import annotations

import click

from fanlog.demo import run_demo


@click.command("demo")
@click.option("--savedir", default="mllogs", show_default=True, help="Where the run is written.")
@click.option("--epochs", default=5, show_default=True)
@click.option("--batches", default=50, show_default=True, help="Batches per epoch.")
@click.option("--log-freq", default=10, show_default=True, help="Log batch metrics every N batches.")
@click.option("--no-extras", is_flag=True, help="Only the journal and the console.")
def demo_command(savedir: str, epochs: int, batches: int, log_freq: int, no_extras: bool) -> None:
    """Train a small PyTorch model and log it to the embedded default backends."""
    out = run_demo(savedir, epochs, batches, log_freq, extras=not no_extras)
    click.echo("")
    click.echo(f"final epoch loss: {out['final_epoch_loss']:.4f} after {int(out['steps'])} steps")
    click.echo(f"journal : {out['journal']}")
    click.echo(f"plot    : {out['plot']}")
    click.echo(f"inspect : fanlog show {out['run_dir']}")
    for hint in out["hints"]:
        click.echo(f"browse  : {hint}")
