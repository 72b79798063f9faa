# mega-lra: every target installs into .venv first if needed (torch pinned to the local CPU build).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH  ?= torch==2.13.0
ARGS   ?=
TASK   ?= listops_small
PYTEST_WORKERS ?= 2
LAUNCHER ?= basic
REPRO_DIR ?= runs/reproduce-lra
SEEDS ?= 1,2,3,4,5
MODELS ?=
TASKS ?=

.PHONY: help install train test test-fast bench bench-train bench-table2 table data lint format \
	hf-fixtures clean reproduce-lra

help:
	@echo "make train   [ARGS='key=value ...']   train (default: the CPU demo, experiment=demo/listops)"
	@echo "make test                            the CPU test suite (what CI runs)"
	@echo "make bench   [ARGS=...]              speed/memory benchmarks -> runs/bench/ (+ the"
	@echo "                                     training step of the Text recipes)"
	@echo "make bench-train [ARGS=...]          one training step of every recipe -> runs/bench_training/"
	@echo "make bench-table2 [ARGS=...]         Table 2's Speed/Mem: a training step of each Table 2"
	@echo "                                     model's Text recipe at 4K vs XFM‡, on this device"
	@echo "                                     (then: make table ARGS='--bench runs/bench_training/<dir>')"
	@echo "make table   [ARGS='RUNS_DIR ...']   the paper's tables from run dirs (--table lra|lra1|...)"
	@echo "make data    TASK=name               prepare a task's dataset"
	@echo "make reproduce-lra [MODELS='reformer performer'] [TASKS=...] [LAUNCHER=slurm] [ARGS=...]"
	@echo "                                     the LRA grid (default: every model with recipes x"
	@echo "                                     6 tasks x 5 seeds), resumable; DRY=1: print only"
	@echo "make lint | make format              ruff"
	@echo "make hf-fixtures                     rebuild the transformers-4.41 parity fixtures"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/python -m mega_lra.train $(if $(ARGS),$(ARGS),experiment=demo/listops)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --durations=15 $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -m "not slow" $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m mega_lra.bench $(ARGS)
	$(BIN)/python -m mega_lra.bench_training --experiments lra/mega_chunk/text lra/mega/text

bench-train: $(STAMP)
	$(BIN)/python -m mega_lra.bench_training $(ARGS)

bench-table2: $(STAMP)
	$(BIN)/python -m mega_lra.bench_training --table2 $(ARGS)

table: $(STAMP)
	$(BIN)/python -m mega_lra.table $(ARGS)

reproduce-lra: $(STAMP)
	$(BIN)/python -m mega_lra.reproduce --launcher $(LAUNCHER) --out $(REPRO_DIR) \
		--seeds $(SEEDS) $(if $(strip $(MODELS)),--models "$(MODELS)") \
		$(if $(strip $(TASKS)),--tasks "$(TASKS)") $(if $(DRY),--dry-run) $(ARGS)

data: $(STAMP)
	$(BIN)/python -m tasks.prepare task=$(TASK) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

hf-fixtures: $(STAMP)
	$(BIN)/python tools/make_hf_fixtures.py $(ARGS)

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
