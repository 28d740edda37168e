"""hi-ml's helpers with hi-ml's call forms (``health_ml/utils/logging.py``), on a real fit.

hi-ml's own tests drive ``log_on_epoch`` with a MagicMock module; here a real
``lightning.Trainer.fit`` runs on CPU and the values are read back from fanlog's journal. A
module subclass records what reached ``LightningModule.log_dict`` (the real method still runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

lightning = pytest.importorskip("lightning")
from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import fanlog  # noqa: E402
from fanlog.backends.journal import JournalLogger  # noqa: E402
from fanlog.lightning import FanlogLogger, NoTrainerError, log_learning_rate, log_on_epoch  # noqa: E402

EXTRA = {"extra": 3}


class HimlModule(LightningModule):
    """Logs with every hi-ml call form; two schedulers, the second with two parameter groups."""

    def __init__(self, schedulers: int = 2) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.head = torch.nn.Linear(1, 1)
        self.schedulers = schedulers
        self.calls: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def log_dict(self, dictionary: Any, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.calls.append((dict(dictionary), dict(kwargs)))
        super().log_dict(dictionary, *args, **kwargs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.head(self.layer(x)), y)
        log_on_epoch(self, metrics={"m_int": 1, "m_loss": loss})  # byol_module.py's form
        log_on_epoch(self, name="kw_value", value=0.5)
        log_on_epoch(self, "both", 2.0, metrics=EXTRA)
        log_on_epoch(self, "positional", loss, sync_dist=False)  # simclr_module.py's form
        log_on_epoch(self, {"fanlog_dict": 4.0})  # fanlog's own form
        log_learning_rate(self, name="foo")
        return loss

    def configure_optimizers(self) -> Any:
        first = torch.optim.SGD(self.layer.parameters(), lr=0.1)
        if self.schedulers == 0:
            return first
        second = torch.optim.SGD(
            [{"params": self.head.weight, "lr": 0.2}, {"params": self.head.bias, "lr": 0.3}]
        )
        schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in (first, second)]
        return [first, second][: self.schedulers], schedulers[: self.schedulers]


class SingleScheduler(HimlModule):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.head(self.layer(x)), y)
        log_learning_rate(self)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)]


def fit(tmp_path: Path, module: LightningModule) -> Any:
    journal = JournalLogger(savedir=tmp_path / "logs")
    x = torch.linspace(-1, 1, 16).unsqueeze(1)
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=FanlogLogger(journal),
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, DataLoader(TensorDataset(x, 2 * x + 1), batch_size=8))
    return fanlog.read_run(journal.journal_path)


class TwoOptimizers(HimlModule):
    """Two optimizers need manual optimization in Lightning 2."""

    def __init__(self) -> None:
        super().__init__(schedulers=2)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        for optimizer in self.optimizers():
            optimizer.zero_grad()
        self.manual_backward(loss)
        for optimizer in self.optimizers():
            optimizer.step()
        return loss

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()


def test_every_himl_call_form_reaches_the_journal(tmp_path: Path) -> None:
    module = TwoOptimizers()
    run = fit(tmp_path, module)
    per_epoch = {
        key: [v for _, v in run.metric(key)]
        for key in ("m_int", "kw_value", "both", "extra", "fanlog_dict", "positional", "m_loss")
    }
    assert per_epoch["m_int"] == [1.0, 1.0] and per_epoch["kw_value"] == [0.5, 0.5]
    assert per_epoch["both"] == [2.0, 2.0] and per_epoch["extra"] == [3.0, 3.0]
    assert per_epoch["fanlog_dict"] == [4.0, 4.0]
    assert len(per_epoch["positional"]) == 2 and len(per_epoch["m_loss"]) == 2
    assert EXTRA == {"extra": 3}, "the caller's metrics dict is not changed"
    # hi-ml's names: scheduler index / parameter group index; StepLR halves each epoch.
    assert [v for _, v in run.metric("foo/0/0")] == pytest.approx([0.1, 0.05])
    assert [v for _, v in run.metric("foo/1/0")] == pytest.approx([0.2, 0.1])
    assert [v for _, v in run.metric("foo/1/1")] == pytest.approx([0.3, 0.15])
    assert run.metric("foo") == []
    # What reached log_dict: tensors of Lightning's dtype, exactly hi-ml's four keywords.
    plain = [(values, kwargs) for values, kwargs in module.calls if "m_int" in values]
    values, kwargs = plain[0]
    assert kwargs == {"on_epoch": True, "on_step": False, "sync_dist": False, "reduce_fx": torch.mean}
    assert values["m_int"].dtype == torch.float32 and values["m_int"].item() == 1.0
    assert isinstance(values["m_loss"], torch.Tensor) and values["m_loss"].requires_grad
    both = [v for v, _ in module.calls if "both" in v][0]
    assert sorted(both) == ["both", "extra"] and both["extra"].dtype == torch.float32


def test_one_scheduler_with_one_group_is_logged_under_the_name(tmp_path: Path) -> None:
    run = fit(tmp_path, SingleScheduler())
    assert [v for _, v in run.metric("learning_rate")] == pytest.approx([0.1, 0.05])


def test_no_scheduler_is_hi_mls_value_error(tmp_path: Path) -> None:
    class NoScheduler(SingleScheduler):
        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(ValueError, match="Learning rate logging can only be used during training"):
        fit(tmp_path, NoScheduler())


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        (("loss",), {}, "no value"),
        ((), {"name": "loss"}, "Both or neither of 'name' and 'value' must be provided"),
        ((), {"value": 1.0}, "Both or neither of 'name' and 'value' must be provided"),
        (({"a": 1.0}, 2.0), {}, "either"),
        (({"a": 1.0},), {"metrics": {"b": 2.0}}, "either"),
    ],
)
def test_argument_errors_come_first(args: tuple[Any, ...], kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        log_on_epoch(HimlModule(), *args, **kwargs)


@pytest.mark.parametrize("call", [{"metrics": {"a": 1.0}}, {"name": "a", "value": 1.0}, {}])
def test_no_trainer_raises_as_hi_ml_and_lightning_do(call: dict[str, Any]) -> None:
    module = HimlModule()
    for error in (AssertionError, RuntimeError, NoTrainerError):
        with pytest.raises(error, match="No trainer is set for this module"):
            log_on_epoch(module, **call)
