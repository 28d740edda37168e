"""Tutorial 8: Hugging Face Accelerate, logging through fanlog with one tracker.

A tiny GPT-2, built from a config (nothing is downloaded), learns to continue a counting
sequence. ``FanlogTracker`` takes the place of Accelerate's built-in trackers::

    python tutorials/08_accelerate.py --steps 60
    torchrun --nproc_per_node 2 tutorials/08_accelerate.py --steps 60
    fanlog show mllogs

What it shows:

* ``Accelerator(log_with=[FanlogTracker(config)])``: ``init_trackers(config=...)`` logs
  params, ``accelerator.log(values, step=...)`` metrics, ``end_training()`` closes the run,
  without the loop waiting on any tracker.
* ``accelerator.get_tracker("fanlog").tracker`` is the fanlog logger, for what Accelerate
  has no call for (here a histogram of the weights and the final model).
* Under torchrun, Accelerate calls trackers on the main process only, and so does the
  tracker by default (``main_process_only=True``): one journal, rank 0's.
"""

# ci-launcher: torchrun --standalone --nproc_per_node 2
# ci-args: --steps 6
# ci-requires: accelerate transformers
# ci-timeout: 240

from __future__ import annotations

import argparse
import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import fanlog  # noqa: E402
from fanlog.integrations.accelerate import FanlogTracker  # noqa: E402

VOCAB, LENGTH = 16, 12


class Counting(torch.utils.data.Dataset):
    """Sequences that count up from a random start, modulo VOCAB: the next id is predictable."""

    def __init__(self, size: int, seed: int) -> None:
        starts = torch.randint(0, VOCAB, (size, 1), generator=torch.Generator().manual_seed(seed))
        self.ids = (starts + torch.arange(LENGTH)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.ids[index]


def fanlog_config(savedir: str) -> dict:
    loggers: list[dict] = [{"type": "journal"}, {"type": "console", "interval": 5}]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append({"type": "tensorboard"})
    return {"savedir": savedir, "run_name": "tutorial-08", "unsupported": "ignore", "loggers": loggers}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--savedir", default="mllogs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    accelerator = Accelerator(log_with=[FanlogTracker(fanlog_config(args.savedir))], cpu=True)
    accelerator.init_trackers("tutorial-08", config={"lr": args.lr, "steps": args.steps, "vocab": VOCAB})

    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB,
            n_positions=LENGTH,
            n_embd=16,
            n_layer=1,
            n_head=2,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    # Each process gets its share of the data: enough for `--steps` steps on each.
    data = Counting(16 * args.steps * accelerator.num_processes, 0)
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for step, ids in enumerate(loader):
        loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        # The mean over processes; every process takes part in the reduction.
        mean_loss = accelerator.reduce(loss.detach(), reduction="mean")
        accelerator.log(
            {"train/loss": mean_loss.item(), "train/lr": optimizer.param_groups[0]["lr"]}, step=step
        )

    if accelerator.is_main_process:
        logger = accelerator.get_tracker("fanlog", unwrap=True)  # the fanlog logger itself
        weights = accelerator.unwrap_model(model).transformer.wte.weight.detach()
        logger.log(weights, "weights/embedding", kind="histogram", step=args.steps)
        logger.log(accelerator.unwrap_model(model), "model", kind="model")
    # Let every rank's last collective finish before the process group goes: on CPU (gloo), torch can
    # deadlock at exit when a collective is still being released as the DDP model is freed.
    accelerator.wait_for_everyone()
    accelerator.end_training()

    if accelerator.is_main_process:
        run = fanlog.read_run(args.savedir)
        losses = run.metric("train/loss")
        print(f"train/loss: first {losses[0][1]:.3f}, last {losses[-1][1]:.3f} ({len(losses)} steps)")
        print(f"params: {run.params}")
        print(f"run status: {run.meta[0]['status']}, ranks with a journal: {sorted(run.meta)}")


if __name__ == "__main__":
    main()
