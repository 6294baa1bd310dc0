# A thin wrapper over the `dimlapse` command: each target is one command line.
# Variables reach the command only when set, through the environment (quoted: never
# interpreted by the shell). `make help` lists the targets and their variables.
PY ?= .venv/bin/python
DIMLAPSE ?= .venv/bin/dimlapse
# --flag "$VAR" when VAR is set; --flag when a switch VAR is set (e.g. OVERWRITE=1)
opt = $(if $($(1)),$(2) "$$$(1)")
switch = $(if $($(1)),$(2))

.PHONY: help setup test test-slow lint typecheck capture replay analyze report export watch study \
        intervene bench-capture bench-analyze bench-transitions bench-sharded readme-tables

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 20

# torch 2.13.0: this project's registries serve its CPU build (2.13.0+cpu) under that pin, and CI
# reaches no other index. Where PyPI serves the CUDA build instead (gigabytes more), take the CPU
# build from PyTorch's own index:
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# `make setup` says which build it installed.
TORCH ?= torch==2.13.0

setup:  ## .venv with torch (CPU build) first, then dimlapse with every extra and the dev tools: TORCH
	python3 -m venv .venv
	.venv/bin/pip install --quiet $(TORCH)
	.venv/bin/pip install --quiet -e '.[all,dev,ndtracker]'
	@.venv/bin/python -c "import torch; b = 'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU'; print(f'torch {torch.__version__}: the {b} build')"

test:  ## the default suite (fast)
	$(PY) -m pytest -q

test-slow:  ## heavier tests: real training runs, benchmarks' correctness checks
	$(PY) -m pytest -q -m slow

lint: typecheck  ## ruff (lint, format) and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:  ## mypy over the dimlapse package
	$(PY) -m mypy -p dimlapse

capture:  ## train and capture: MODEL DATA STEPS EVERY SEED RUN CODEC MODE WEIGHTS_ONLY OVERWRITE RESUME
	$(DIMLAPSE) capture $(call opt,MODEL,--model) $(call opt,DATA,--data) \
	  $(call opt,STEPS,--steps) $(call opt,EVERY,--every) $(call opt,SEED,--seed) \
	  $(call opt,RUN,--run) $(call opt,CODEC,--codec) $(call opt,MODE,--mode) \
	  $(call switch,WEIGHTS_ONLY,--weights-only) $(call switch,OVERWRITE,--overwrite) \
	  $(call switch,RESUME,--resume)

replay:  ## activations of a weights-only run from its stored weights: RUN
	$(DIMLAPSE) replay $(call opt,RUN,--run)

analyze:  ## analyse a run (default: the newest): RUN SCHEDULER OVERWRITE
	$(DIMLAPSE) analyze $(call opt,RUN,--run) $(call opt,SCHEDULER,--scheduler) \
	  $(call switch,OVERWRITE,--overwrite)

report:  ## re-render a run's report and figures: RUN
	$(DIMLAPSE) report $(call opt,RUN,--run)

export:  ## an analysed run to TensorBoard / Parquet / CSV: RUN TO (default tensorboard) OUT OVERWRITE
	$(DIMLAPSE) export $(call opt,RUN,) --to "$${TO:-tensorboard}" $(call opt,OUT,--out) \
	  $(call switch,OVERWRITE,--overwrite)

watch:  ## follow a run while it trains (default: the newest): RUN PORT TIMEOUT TENSORBOARD WANDB
	$(DIMLAPSE) watch $(call opt,RUN,--run) $(call opt,PORT,--port) $(call opt,TIMEOUT,--timeout) \
	  $(call opt,TENSORBOARD,--tensorboard) $(call opt,WANDB,--wandb)

study:  ## recipes over seeds, one comparison report: MODELS SEEDS STEPS REUSE OVERWRITE SCHEDULER
	$(DIMLAPSE) study $(call opt,MODELS,--models) $(call opt,SEEDS,--seeds) \
	  $(call opt,STEPS,--steps) $(call switch,REUSE,--reuse) $(call switch,OVERWRITE,--overwrite) \
	  $(call opt,SCHEDULER,--scheduler)

intervene:  ## baseline + runs disrupted in step windows: MODEL WINDOWS KIND STEPS SEED OVERWRITE
	$(DIMLAPSE) intervene $(call opt,MODEL,--model) $(call opt,WINDOWS,--windows) \
	  $(call opt,KIND,--kind) $(call opt,STEPS,--steps) $(call opt,SEED,--seed) \
	  $(call switch,OVERWRITE,--overwrite)

bench-capture:  ## capture overhead per mode, with control arms
	$(DIMLAPSE) bench capture

bench-analyze:  ## the analysis jobs against a naive SVD loop
	$(DIMLAPSE) bench analyze

bench-transitions:  ## detectors' false alarms and power: SEEDS
	$(DIMLAPSE) bench transitions $(call opt,SEEDS,--seeds)

bench-sharded:  ## per-rank memory of sharded (FSDP2, HSDP, TP) capture against the shard and a gather
	$(DIMLAPSE) bench sharded

readme-tables:  ## README's measured tables regenerated from the benchmark outputs in docs/
	$(PY) -m dimlapse.pipelines.bench._readme_tables
