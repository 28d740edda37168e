"""Tutorial 7: Hugging Face Trainer, logging through fanlog with one callback.

A tiny BERT, built from a config (nothing is downloaded), learns whether a sequence of
token ids starts with a small id. ``FanlogCallback`` sends what the Trainer logs to the
trackers of a fanlog config::

    python tutorials/07_transformers_trainer.py --steps 40
    python tutorials/07_transformers_trainer.py --config my-loggers.yaml --log-model end
    fanlog show mllogs

What it shows:

* ``Trainer(..., callbacks=[FanlogCallback(logger)], report_to="none")``: the training
  arguments and the model config as params (``hub_token`` and other secret-looking keys
  redacted), every ``Trainer.log`` call at ``state.global_step`` (``train/loss``,
  ``eval/loss``, ...), without the Trainer waiting on any tracker.
* ``log_model``: ``"all"`` logs every checkpoint as it is saved, ``True`` the ones the
  Trainer kept when training ends, ``"end"`` the final model (``save_pretrained``).
* The trackers come from a config (``--config``, else the journal, the console and,
  when installed, TensorBoard): changing trackers needs no change to the script.
"""

# ci-args: --steps 6
# ci-requires: transformers accelerate

from __future__ import annotations

import argparse
import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the Hub
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

import fanlog  # noqa: E402
from fanlog.integrations.transformers import FanlogCallback  # noqa: E402

VOCAB, LENGTH = 32, 8


class StartsSmall(torch.utils.data.Dataset):
    """Random token ids; the label says whether the first id is below VOCAB / 2."""

    def __init__(self, size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (size, LENGTH), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.ids[index]
        return {"input_ids": ids, "labels": (ids[0] < VOCAB // 2).long()}


def default_config(savedir: str) -> dict:
    loggers: list[dict] = [{"type": "journal"}, {"type": "console", "interval": 5}]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append({"type": "tensorboard"})
    # Checkpoints go to the journal; the console and TensorBoard do not take files: no warning.
    return {"savedir": savedir, "run_name": "tutorial-07", "unsupported": "ignore", "loggers": loggers}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps")
    parser.add_argument("--savedir", default="mllogs")
    parser.add_argument("--output-dir", default="trainer-out", help="the Trainer's checkpoints")
    parser.add_argument("--config", help="a fanlog config file (default: journal, console, TensorBoard)")
    parser.add_argument("--log-model", choices=["false", "true", "all", "end"], default="true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    logger = (
        fanlog.from_config(args.config, savedir=args.savedir)
        if args.config
        else (fanlog.from_config(default_config(args.savedir)))
    )
    log_model = {"false": False, "true": True}.get(args.log_model, args.log_model)

    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=LENGTH,
        )
    )
    every = max(1, args.steps // 4)
    training = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.steps,
        learning_rate=5e-3,
        per_device_train_batch_size=16,
        logging_steps=max(1, every // 2),
        eval_strategy="steps",
        eval_steps=every,
        save_steps=every,
        save_total_limit=2,
        load_best_model_at_end=True,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        log_level="warning",
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=StartsSmall(512, 0),
        eval_dataset=StartsSmall(64, 1),
        callbacks=[FanlogCallback(logger, log_model=log_model)],
    )
    trainer.train()

    run = fanlog.read_run(args.savedir)
    print("train/loss:", ", ".join(f"{step}: {value:.3f}" for step, value in run.metric("train/loss")))
    print("eval/loss: ", ", ".join(f"{step}: {value:.3f}" for step, value in run.metric("eval/loss")))
    print(f"params: {len(run.params)} (hub_token: {run.params.get('hub_token')})")
    print(f"models logged: {[r.key for r in run.of_kind('artifact')]}")
    print(f"run status: {run.meta[0]['status']}, journal: {run.paths[0]}")


if __name__ == "__main__":
    main()
