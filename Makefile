# Thin wrappers: each target is one command. Variables: MODEL DATA STEPS EVERY SEED RUN.
PY ?= .venv/bin/python
MODEL ?= mlp
ARGS = $(if $(DATA),--data $(DATA)) $(if $(STEPS),--steps $(STEPS)) $(if $(EVERY),--every $(EVERY)) $(if $(SEED),--seed $(SEED)) $(if $(RUN),--run $(RUN))

.PHONY: setup test test-slow lint typecheck capture replay analyze report bench-capture bench-analyze

setup:  ## create .venv and install torch (CPU build) first, then dimlapse with dev tools
	python3 -m venv .venv
	.venv/bin/pip install --quiet torch==2.13.0
	.venv/bin/pip install --quiet -e '.[dev]'

test:
	$(PY) -m pytest -q

test-slow:
	$(PY) -m pytest -q -m slow

lint: typecheck
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# mypy cannot follow setuptools' editable finder, so it reads the package through a link.
typecheck:
	@mkdir -p .mypy_path && ln -sfn .. .mypy_path/dimlapse
	MYPYPATH=.mypy_path $(PY) -m mypy -p dimlapse.capture -p dimlapse.analyze -p dimlapse.pipelines

capture:
	$(PY) -m dimlapse.pipelines capture --model $(MODEL) $(ARGS)

replay:
	$(PY) -m dimlapse.pipelines replay $(if $(RUN),--run $(RUN))

analyze:
	$(PY) -m dimlapse.pipelines analyze $(if $(RUN),--run $(RUN)) $(if $(SCHEDULER),--scheduler $(SCHEDULER))

report:
	$(PY) -m dimlapse.pipelines report $(if $(RUN),--run $(RUN))

bench-capture:
	$(PY) -m dimlapse.pipelines bench-capture

bench-analyze:
	$(PY) -m dimlapse.pipelines bench-analyze
