"""Tiny Hugging Face models and data for the integration tests: built from configs, nothing downloaded.

`OFFLINE_ENV` keeps transformers, the Hub client and the trackers off the network; the
models have a few hidden units and the data are random token ids, so a Trainer or an
Accelerate loop of ten steps takes well under a second on a CPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DISABLE_MLFLOW_INTEGRATION": "FALSE",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}
VOCAB, SEQ_LEN = 40, 8


def go_offline() -> None:
    """Set `OFFLINE_ENV` in this process (before transformers is imported)."""
    os.environ.update(OFFLINE_ENV)


class RandomTokens(torch.utils.data.Dataset):
    """`n` sequences of random token ids with a binary label, the same for a given seed."""

    def __init__(self, n: int, seed: int, labels: bool = True) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, SEQ_LEN), generator=generator)
        self.labels = torch.randint(0, 2, (n,), generator=generator)
        self.with_labels = labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"input_ids": self.ids[index]}
        if self.with_labels:
            item["labels"] = self.labels[index]
        return item


def tiny_bert(seed: int = 0, **config: Any) -> Any:
    """A BERT sequence classifier with 8 hidden units and one layer, randomly initialised."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    options = {
        "vocab_size": VOCAB,
        "hidden_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 16,
        "max_position_embeddings": SEQ_LEN * 2,
        **config,
    }
    return BertForSequenceClassification(BertConfig(**options))


def tiny_gpt2(seed: int = 0) -> Any:
    """A GPT-2 language model with 8 hidden units and one layer, randomly initialised."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB,
            n_positions=SEQ_LEN * 2,
            n_embd=8,
            n_layer=1,
            n_head=2,
            bos_token_id=0,
            eos_token_id=0,
        )
    )


def training_arguments(output_dir: str, **overrides: Any) -> Any:
    """TrainingArguments for a 10-step CPU run: log every 2 steps, evaluate and save every 5."""
    from transformers import TrainingArguments

    options: dict[str, Any] = {
        "output_dir": output_dir,
        "max_steps": 10,
        "logging_steps": 2,
        "eval_strategy": "steps",
        "eval_steps": 5,
        "save_steps": 5,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
        "dataloader_num_workers": 0,
    }
    options.update(overrides)
    return TrainingArguments(**options)
