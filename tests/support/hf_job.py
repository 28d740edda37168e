"""A tiny training job for the integration tests' subprocesses: Trainer or an Accelerate loop.

    python hf_job.py trainer --config '{"type": "journal", "savedir": "mllogs"}'
    torchrun --standalone --nproc_per_node 2 hf_job.py accelerate --config ...

``--fail-at N`` raises at step N (an exception inside training), ``--slow S`` sleeps S
seconds per step and ``--ready FILE`` is created after step 2, so a test can send a signal
while the job trains. Under torchrun both frameworks use gloo on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support.hf_tiny import RandomTokens, go_offline, tiny_bert, tiny_gpt2, training_arguments  # noqa: E402

go_offline()


class StepHook:
    """What the job does after each optimizer step: fail, slow down, say it is running."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options

    def after(self, step: int) -> None:
        if self.options.ready and step >= 2:
            Path(self.options.ready).touch()
        if self.options.fail_at is not None and step >= self.options.fail_at:
            raise RuntimeError(f"boom at step {step}")
        if self.options.slow:
            time.sleep(self.options.slow)


def run_trainer(options: argparse.Namespace, config: Any, hook: StepHook) -> None:
    from transformers import Trainer, TrainerCallback

    from fanlog.integrations.transformers import FanlogCallback

    class Hook(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            hook.after(state.global_step)

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    args = training_arguments(
        options.output_dir,
        max_steps=options.steps,
        log_level="warning",
        ddp_backend="gloo" if distributed else None,
    )
    trainer = Trainer(
        model=tiny_bert(),
        args=args,
        train_dataset=RandomTokens(64, 1),
        eval_dataset=RandomTokens(16, 2),
        callbacks=[FanlogCallback(config, log_model=options.log_model), Hook()],
    )
    trainer.train()
    trainer.accelerator.wait_for_everyone()  # see tutorials/08_accelerate.py: a gloo teardown race


def run_accelerate(options: argparse.Namespace, config: Any, hook: StepHook) -> None:
    import torch
    from accelerate import Accelerator

    from fanlog.integrations.accelerate import FanlogTracker

    tracker = FanlogTracker(config, main_process_only=not options.every_process)
    accelerator = Accelerator(log_with=[tracker], cpu=True)
    accelerator.init_trackers("hf-job", config={"lr": 1e-3, "steps": options.steps})
    model = tiny_gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(RandomTokens(8 * options.steps, 1, labels=False), batch_size=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for step, batch in enumerate(loader, start=1):
        loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
        accelerator.log({"train/loss": mean_loss}, step=step)  # the main process only
        # Called on every process: with main_process_only=True only the main one logs it.
        tracker.log({"rank/loss": loss.item(), "rank/index": accelerator.process_index}, step=step)
        hook.after(step)
        if step >= options.steps:
            break
    accelerator.wait_for_everyone()  # see tutorials/08_accelerate.py: a gloo teardown race
    accelerator.end_training()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("framework", choices=["trainer", "accelerate"])
    parser.add_argument("--config", required=True, help="fanlog config as JSON")
    parser.add_argument("--output-dir", default="hf-out")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--log-model", default="false", choices=["false", "true", "all", "end"])
    parser.add_argument("--every-process", action="store_true", help="FanlogTracker(main_process_only=False)")
    parser.add_argument("--fail-at", type=int)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--ready")
    options = parser.parse_args()
    options.log_model = {"false": False, "true": True}.get(options.log_model, options.log_model)
    config = json.loads(options.config)
    hook = StepHook(options)
    if options.framework == "trainer":
        run_trainer(options, config, hook)
    else:
        run_accelerate(options, config, hook)


if __name__ == "__main__":
    main()
