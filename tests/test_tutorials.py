"""Every tutorial runs, as a subprocess, on the tiny settings it declares (tutorials/README.md).

Tutorial 1 is also read back with each tracker's own reader: the journal with
`fanlog.read_run`, TensorBoard with its EventAccumulator, MLflow with MlflowClient.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fanlog.reader import find_runs, read_run

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "tutorials"
SCRIPTS = sorted(TUTORIALS.glob("[0-9]*.py"))


@dataclass
class CiSpec:
    """What a tutorial's `# ci-...:` comment lines ask for."""

    args: list[str] | None = None
    launcher: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 300.0


def read_spec(script: Path) -> CiSpec:
    spec = CiSpec()
    for line in script.read_text().splitlines():
        if not line.startswith("# ci-"):
            continue
        name, _, value = line[len("# ci-") :].partition(":")
        words = shlex.split(value)
        if name == "args":
            spec.args = words
        elif name == "launcher":
            spec.launcher = words
        elif name == "requires":
            spec.requires = words
        elif name == "env":
            spec.env = dict(word.split("=", 1) for word in words)
        elif name == "timeout":
            spec.timeout = float(value)
        else:
            raise AssertionError(f"{script.name}: unknown CI directive '# ci-{name}:'")
    return spec


def command_for(script: Path, spec: CiSpec, savedir: Path) -> list[str]:
    launcher = list(spec.launcher)
    if launcher and launcher[0] == "torchrun":
        launcher[:1] = [sys.executable, "-m", "torch.distributed.run"]
    elif launcher and launcher[0] in ("python", "python3"):
        launcher[:1] = [sys.executable]
    command = [*(launcher or [sys.executable]), str(script), *(spec.args or [])]
    if "--savedir" not in (spec.args or []):
        command += ["--savedir", str(savedir)]
    return command


def offline_env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """The caller's environment without tracker settings that could reach the network."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_", "FANLOG_", "AZUREML_"))
    }
    env.update(
        {
            "WANDB_MODE": "offline",
            "WANDB_DIR": str(tmp_path),
            "WANDB_SILENT": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TUTORIALS), env.get("PYTHONPATH")])),
        }
    )
    env.update(extra)
    return env


def run_tutorial(script: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    spec = read_spec(script)
    assert spec.args is not None, f"{script.name} declares no '# ci-args:' line (tutorials/README.md)"
    missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{script.name} needs {', '.join(missing)}")
    savedir = tmp_path / "mllogs"
    try:
        done = subprocess.run(
            command_for(script, spec, savedir),
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=offline_env(tmp_path, spec.env),
            timeout=spec.timeout,
        )
    except subprocess.TimeoutExpired as exc:  # say where it hung, before pytest-timeout would
        pytest.fail(
            f"{script.name} did not end within {spec.timeout:.0f} s:\n"
            f"{_text(exc.stdout)[-2000:]}\n{_text(exc.stderr)[-4000:]}"
        )
    assert done.returncode == 0, (
        f"{script.name} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    return done, savedir


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def test_there_are_tutorials() -> None:
    assert any(s.name.startswith("01_") for s in SCRIPTS)


def test_readme_lists_every_tutorial() -> None:
    readme = (TUTORIALS / "README.md").read_text()
    for script in SCRIPTS:
        assert f"`{script.name}`" in readme, f"tutorials/README.md does not list {script.name}"


@pytest.mark.slow
@pytest.mark.timeout(660)  # each tutorial declares its own bound (# ci-timeout:, at most 600 s)
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_tutorial_runs(script: Path, tmp_path: Path) -> None:
    if script.name.startswith("01_"):
        pytest.skip("run and read back by test_plain_loop_tutorial_reads_back")
    _, savedir = run_tutorial(script, tmp_path)
    if (savedir / "runs").is_dir():
        for run in find_runs(savedir):
            data = read_run(run)
            assert data.meta and all(m.get("status") != "running" for m in data.meta.values()), (
                f"{script.name} left run {run} open"
            )


@pytest.mark.slow
def test_plain_loop_tutorial_reads_back(tmp_path: Path) -> None:
    script = TUTORIALS / "01_plain_loop.py"
    spec = read_spec(script)
    assert spec.args is not None
    epochs = int(spec.args[spec.args.index("--epochs") + 1])
    batches = int(spec.args[spec.args.index("--batches") + 1])
    done, savedir = run_tutorial(script, tmp_path)
    assert "final validation accuracy" in done.stdout

    (run_dir,) = find_runs(savedir)
    run = read_run(run_dir)
    assert run.meta[0]["status"] == "finished"
    assert [s for s, _ in run.metric("train/loss")] == list(range(epochs * batches))
    assert [s for s, _ in run.metric("val/accuracy")] == list(range(epochs))
    assert run.params["optimizer/lr"] == 0.1 and run.params["epochs"] == epochs
    assert len(run.of_kind("model")) == 1 and len(run.of_kind("histogram")) == epochs
    assert [r.epoch for r in run.records if r.key == "val/loss"] == list(range(epochs))

    if importlib.util.find_spec("tensorboard") is not None:
        from tensorboard.backend.event_processing import event_accumulator as ea

        acc = ea.EventAccumulator(str(savedir / "tensorboard" / "plain-loop"), size_guidance={ea.SCALARS: 0})
        acc.Reload()
        tb_steps = [e.step for e in acc.Scalars("train/loss")]
        assert tb_steps == [s for s, _ in run.metric("train/loss") if s % batches % 2 == 0]
        tb_acc = [e.value for e in acc.Scalars("val/accuracy")]
        assert tb_acc == pytest.approx([v for _, v in run.metric("val/accuracy")])

    if importlib.util.find_spec("mlflow") is not None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{savedir / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("tutorial-01")
        (mlrun,) = client.search_runs([experiment.experiment_id])
        assert mlrun.info.status == "FINISHED"
        history = client.get_metric_history(mlrun.info.run_id, "val/accuracy")
        assert [m.step for m in history] == [s for s, _ in run.metric("val/accuracy")]
        assert [m.value for m in history] == pytest.approx([v for _, v in run.metric("val/accuracy")])
        assert client.get_metric_history(mlrun.info.run_id, "train/loss") == []  # log_freq="epoch"
        assert mlrun.data.params["optimizer/lr"] == "0.1"
