# Two entry points: `make demo` and `make test`. Both create or reuse .venv.
# `make test-fast`: the tests that start no server or process, for the edit-test loop.
# `make lint`: ruff and mypy, as CI (.ci/run) runs them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fanlog-installed

.PHONY: demo test test-fast lint docs bench clean install test-itwinai

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch==2.13.0 first: pip then takes the CPU wheel on disk instead of a CUDA build.
# yprov4ml goes in with --no-deps: its declared deps drag in torchvision (see DESIGN.md).
$(STAMP): pyproject.toml requirements/prov-nodeps.txt | $(PY)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps -r requirements/prov-nodeps.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m fanlog.cli demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# --fast (tests/conftest.py) leaves out the tests marked slow and fails any other test
# that starts a process or a server.
test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --fast

# The second environment: itwinai 0.4.2 with its yprov4ml 2.0.9 (no torchvision), used by
# tests/test_itwinai_real.py (itwinai's real TorchTrainer, yprov4ml 2.0.x) through FANLOG_ITWINAI_PYTHON.
ITW_VENV ?= .venv-itwinai
$(ITW_VENV)/bin/python:
	$(PYTHON) -m venv $(ITW_VENV)
	$(ITW_VENV)/bin/python -m pip install -q "torch==2.13.0"
	$(ITW_VENV)/bin/python -m pip install -q --no-deps -r requirements/itwinai-nodeps.txt
	$(ITW_VENV)/bin/python -m pip install -q "torch==2.13.0" -r requirements/itwinai-runtime.txt

test-itwinai: $(STAMP) $(ITW_VENV)/bin/python
	FANLOG_ITWINAI_PYTHON=$(abspath $(ITW_VENV))/bin/python $(PY) -m pytest -q -p no:cacheprovider tests/test_itwinai_real.py

lint: $(STAMP)
	$(PY) -m ruff check src tests bench tutorials
	$(PY) -m ruff format --check src tests bench tutorials
	$(PY) -m mypy

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) bench/bench_core.py
	$(PY) bench/bench_redaction.py
	$(PY) bench/bench_tensorboard_wandb.py --repeat 3
	$(PY) bench/bench_mlflow.py
	$(PY) bench/bench_outage.py --steps 2000 --records 1000000
	$(PY) bench/bench_hang.py --records 1000
	$(PY) bench/bench_writer.py
	$(PY) bench/bench_training_loop.py --quick
	$(PY) bench/bench_small_job.py --quick

clean:
	rm -rf $(VENV) $(ITW_VENV) mllogs site .pytest_cache
