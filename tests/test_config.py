"""``fanlog.from_config``: loggers built from YAML / dicts, checked against the generated schema.

No mocks: loggers built from configs log for real and are read back with the
trackers' own readers (journal, TensorBoard's EventAccumulator, MLflow's client
against a real ``mlflow server`` on 127.0.0.1, W&B's offline transaction log).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tensorboard.backend.event_processing import event_accumulator as ea

import fanlog
from fanlog.backends import BUILTIN as BACKENDS
from fanlog.backends.journal import JournalLogger
from fanlog.backends.mlflow import MLflowLogger
from fanlog.backends.tensorboard import TensorBoardLogger
from fanlog.compat import itwinai
from fanlog.config import ConfigError, accepted_parameters, from_config, json_schema, validate
from fanlog.logger import LoggersCollection
from test_wandb_backend import offline_env, offline_runs  # noqa: F401  (W&B reader, env)

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "tutorials" / "02_swap_by_config.py"
CONFIGS = ROOT / "tutorials" / "configs"


class NotesLogger(JournalLogger):
    """A user-defined logger reached by `_target_`: its own options come from its signature."""

    def __init__(self, note: str, repeat: int = 1, **common: Any) -> None:
        super().__init__(**common)
        self.note = note
        self.repeat = repeat


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_type_and_target_build_the_named_classes(tmp_path: Path) -> None:
    single = from_config({"type": "tensorboard", "savedir": str(tmp_path), "flush_secs": 3})
    assert type(single) is TensorBoardLogger and single.flush_secs == 3 and single.savedir == str(tmp_path)
    target = from_config({"_target_": "fanlog.backends.mlflow.MLflowLogger", "experiment_name": "e"})
    assert type(target) is MLflowLogger and target.experiment_name == "e"
    custom = from_config({"_target_": "test_config.NotesLogger", "note": "hi", "repeat": 2})
    assert type(custom).__name__ == "NotesLogger" and (custom.note, custom.repeat) == ("hi", 2)
    itwinai_style = from_config(CONFIGS / "itwinai_style.yaml")
    assert type(itwinai_style) is itwinai.LoggersCollection
    assert [type(m) for m in itwinai_style.members()] == [itwinai.MLFlowLogger, JournalLogger]


def test_yaml_collection_logs_to_every_member(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "fanlog.yaml",
        {
            "savedir": str(tmp_path / "logs"),
            "loggers": [
                {"type": "journal", "log_freq": "batch"},
                {"type": "tensorboard", "log_freq": 2, "flush_secs": 1},
            ],
        },
    )
    logger = from_config(path)
    assert type(logger) is LoggersCollection
    journal, tb = logger.members()
    assert journal.log_freq == "batch" and tb.log_freq == 2
    with logger.start_logging():
        for batch_idx in range(4):
            logger.log(float(batch_idx), "loss", step=batch_idx, batch_idx=batch_idx)
    assert fanlog.read_run(logger.journal_path).metric("loss") == [(i, float(i)) for i in range(4)]
    acc = ea.EventAccumulator(tb.backend.logdir, size_guidance={ea.SCALARS: 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(0, 0.0), (2, 2.0)]


def test_fanlog_config_env_is_the_default_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FANLOG_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="FANLOG_CONFIG"):
        from_config()
    path = write_yaml(tmp_path / "c.yaml", {"type": "console", "interval": 7})
    monkeypatch.setenv("FANLOG_CONFIG", str(path))
    logger = fanlog.from_config()
    assert type(logger).__name__ == "ConsoleLogger" and logger.interval == 7
    monkeypatch.setenv("FANLOG_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        from_config()


def test_overrides_reach_every_logger_that_takes_them(tmp_path: Path) -> None:
    config = [{"type": "journal", "savedir": "elsewhere"}, {"type": "console"}]
    logger = from_config(config, savedir=str(tmp_path), interval=9)
    assert {m.savedir for m in logger.members()} == {str(tmp_path)} and logger.savedir == str(tmp_path)
    assert logger.members()[1].interval == 9
    with pytest.raises(ConfigError, match="not an option of any"):
        from_config(config, tracking_uri="http://127.0.0.1:1")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"type": "mlfow"}, ["unknown backend type 'mlfow'", "did you mean 'mlflow'", "tensorboard, wandb"]),
        (
            {"type": "mlflow", "trackin_uri": "x"},
            ["unknown option 'trackin_uri'", "did you mean 'tracking_uri'", "accepted: ", "experiment_name"],
        ),
        (
            {"loggers": [{"type": "journal"}, {"type": "tensorboard", "max_queue": "ten"}]},
            ["loggers[1] (tensorboard)", "max_queue: expected integer, got str 'ten'"],
        ),
        ({"type": "journal", "log_freq": ["x"]}, ["log_freq: expected integer or string, got list"]),
        ({"type": "journal", "log_freq": "hourly"}, ["log_freq must be 'batch', 'epoch' or an int"]),
        ({"_target_": "fanlog.nowhere.Logger"}, ["cannot import fanlog.nowhere.Logger"]),
        ({"_target_": "collections.OrderedDict"}, ["is not a fanlog Logger class"]),
        ({"type": "journal", "_target_": "x.Y"}, ["either 'type' or '_target_'"]),
        ({"savedir": "x"}, ["expected a logger", "'loggers'"]),
        ({"loggers": []}, ["non-empty list"]),
        ({"_target_": "test_config.NotesLogger"}, ["missing required option 'note'"]),
        # WandBLogger sets experiment_name from project_name itself: not a config option
        ({"type": "wandb", "experiment_name": "x"}, ["unknown option 'experiment_name'", "project_name"]),
        ({"loggers": [{"type": "journal"}], "log_freq": "batch"}, ["unknown option 'log_freq'"]),
    ],
)
def test_bad_configs_are_clear_errors(config: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        from_config(config)
    for text in expected:
        assert text in str(caught.value), str(caught.value)


def test_schema_is_generated_from_the_signatures() -> None:
    schema = json_schema()
    json.dumps(schema)  # plain JSON
    mlflow_def = schema["$defs"]["backend-mlflow"]
    own = [n for n in inspect.signature(MLflowLogger.__init__).parameters if n not in ("self", "common")]
    assert set(own) <= set(mlflow_def["properties"])
    assert set(mlflow_def["properties"]) == {"type"} | set(accepted_parameters(MLflowLogger))
    assert mlflow_def["properties"]["tracking_uri"]["type"] == ["string", "null"]
    assert mlflow_def["properties"]["flush_interval"]["default"] == 0.2  # a PipelineSettings field
    assert mlflow_def["additionalProperties"] is False
    assert {f"backend-{n}" for n in BACKENDS} - set(schema["$defs"]) == set()
    good = {"savedir": "x", "loggers": [{"type": "wandb", "mode": "offline"}, {"_target_": "a.B"}]}
    assert validate(good, schema) == []
    assert validate([{"type": "tensorboard", "max_queue": 5}], schema) == []
    errors = validate({"loggers": [{"type": "wandb", "modde": "offline"}]}, schema)
    assert errors and "matches none" in errors[0]


@pytest.mark.slow
def test_schema_cli_prints_and_checks(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fanlog.config", "--schema"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout)["title"] == "fanlog configuration"
    bad = write_yaml(tmp_path / "bad.yaml", {"type": "journal", "log_frq": 2})
    result = subprocess.run(
        [sys.executable, "-m", "fanlog.config", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "did you mean 'log_freq'" in result.stderr


def run_tutorial(config: Path, savedir: Path, env: dict[str, str]) -> None:
    savedir.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            sys.executable,
            str(TUTORIAL),
            "--config",
            str(config),
            "--epochs",
            "2",
            "--batches",
            "3",
            "--savedir",
            str(savedir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=savedir.parent,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


@pytest.mark.slow
def test_switching_mlflow_to_wandb_is_a_config_change(mlflow_server: Any, tmp_path: Path) -> None:
    """The same tutorial script, run with the two shipped configs: same values in both trackers."""
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url, "PYTHONPATH": str(ROOT / "src")}
    env.pop("MLFLOW_RUN_ID", None)
    run_tutorial(CONFIGS / "mlflow.yaml", tmp_path / "a" / "mllogs", env)
    run_tutorial(CONFIGS / "wandb.yaml", tmp_path / "b" / "mllogs", env)

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name("fanlog-tutorial")
    (run,) = client.search_runs([experiment.experiment_id])
    mlflow_loss = [
        (m.step, m.value)
        for m in sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    ]
    assert run.data.params["lr"] == "0.05" and run.info.status == "FINISHED"

    (wandb_run,) = offline_runs(tmp_path / "b" / "mllogs")
    wandb_loss = wandb_run.series("train/loss")
    assert len(mlflow_loss) == 6 and [s for s, _ in wandb_loss] == [s for s, _ in mlflow_loss]
    assert [v for _, v in wandb_loss] == pytest.approx([v for _, v in mlflow_loss], rel=1e-6)
    assert wandb_run.config()["lr"] == 0.05
    assert len(wandb_run.series("train/epoch_loss")) == 2
