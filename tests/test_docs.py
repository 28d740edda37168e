"""The docs site: a strict mkdocs build, the quickstart's code actually runs, the CLI page is complete."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"


def nav_pages(nav: Any) -> list[str]:
    """Every page path named in an mkdocs nav (nested lists and mappings)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def load_nav() -> list[str]:
    config = yaml.safe_load(CONFIG.read_text())
    return nav_pages(config["nav"])


def missing_pages() -> list[str]:
    return [page for page in load_nav() if not (DOCS / page).exists()]


def test_nav_names_every_required_page() -> None:
    pages = set(load_nav())
    required = {
        "index.md",
        "quickstart.md",
        "concepts.md",
        "cli.md",
        "api.md",
        "backends/mlflow.md",
        "backends/tensorboard.md",
        "backends/wandb.md",
        "backends/prov.md",
        "backends/azureml.md",
        "distributed.md",
        "bad-inputs.md",
        "sync.md",
        "lightning.md",
        "migration-itwinai.md",
        "config.md",
        "benchmarks.md",
    }
    assert required <= pages, sorted(required - pages)
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk <= pages, f"pages not in the nav: {sorted(on_disk - pages)}"


def test_every_nav_page_is_written() -> None:
    assert missing_pages() == []


@pytest.mark.slow
def test_docs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(CONFIG, tmp_path / "mkdocs.yml")
    os.symlink(ROOT / "src", tmp_path / "src")
    site = tmp_path / "site"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(tmp_path / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    api = (site / "api" / "index.html").read_text()
    for name in (
        "create_logger_context",
        "destroy_logger_context",
        "read_run",
        "plot_run",
        "PipelineSettings",
        "PartialDelivery",
    ):
        assert name in api, f"{name} missing from the API reference"
    concepts = (site / "concepts" / "index.html").read_text()
    assert "log_on_workers" in concepts and "journal.sqlite" in concepts


@pytest.mark.slow
def test_quickstart_code_runs(tmp_path: Path) -> None:
    """Every ```python block of the quickstart, in order, as one script."""
    pytest.importorskip("torch")
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "quickstart.md").read_text(), re.S)
    assert len(blocks) >= 4
    script = tmp_path / "quickstart.py"
    script.write_text("\n".join(blocks))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "FANLOG_"))}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "expected a real number" in done.stdout
    from fanlog.reader import find_runs, read_run

    runs = find_runs(tmp_path / "mllogs")
    first = read_run(runs[0])
    assert first.meta[0]["status"] == "finished"
    assert len(first.metric("train/loss")) == 30
    assert len(first.of_kind("model")) == 1


def test_cli_page_documents_every_option() -> None:
    from fanlog.cli import runs as cli_runs

    text = (DOCS / "cli.md").read_text()
    for command in (
        cli_runs.ls_command,
        cli_runs.show_command,
        cli_runs.plot_command,
        cli_runs.export_command,
    ):
        assert f"fanlog {command.name}" in text
        for param in command.params:
            longest = max(getattr(param, "opts", []), key=len)
            if longest.startswith("--") and longest != "--help":
                assert longest in text, f"docs/cli.md does not mention {command.name} {longest}"
