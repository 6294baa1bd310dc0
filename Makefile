# Thin wrappers: each target is one command. Variables: MODEL DATA STEPS EVERY SEED RUN.
PY ?= .venv/bin/python
MODEL ?= mlp
# Optional: MODE=full|weights|spectra, CODEC=lz4|zstd|float16|bitround-10|none, WEIGHTS_ONLY=1 (then `make replay RUN=...`), OVERWRITE=1, RESUME=1.
ARGS = $(if $(DATA),--data $(DATA)) $(if $(STEPS),--steps $(STEPS)) $(if $(EVERY),--every $(EVERY)) \
       $(if $(SEED),--seed $(SEED)) $(if $(RUN),--run $(RUN)) $(if $(CODEC),--codec $(CODEC)) \
       $(if $(WEIGHTS_ONLY),--weights-only) $(if $(MODE),--mode $(MODE)) $(if $(OVERWRITE),--overwrite) $(if $(RESUME),--resume)

.PHONY: setup test test-slow lint typecheck capture replay analyze report bench-capture bench-analyze bench-transitions intervene study watch

setup:  ## .venv: torch (CPU build) first, then dimlapse with every extra, dev tools and ndtracker (benchmark baseline)
	python3 -m venv .venv
	.venv/bin/pip install --quiet torch==2.13.0
	.venv/bin/pip install --quiet -e '.[all,dev,ndtracker]'

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

watch:  ## follow a run while it trains (default: the newest): terminal view, alerts.jsonl, dashboard on PORT (8765)
	$(PY) -m dimlapse.pipelines watch $(if $(RUN),--run $(RUN)) $(if $(PORT),--port $(PORT)) $(if $(TIMEOUT),--timeout $(TIMEOUT))

bench-capture:
	$(PY) -m dimlapse.pipelines bench-capture

bench-analyze:
	$(PY) -m dimlapse.pipelines bench-analyze

# Detectors' false alarms on null series and power on planted events; SEEDS=40 (series per family)
bench-transitions:
	$(PY) -m dimlapse.pipelines._bench_transitions $(if $(SEEDS),--seeds $(SEEDS))

# Baseline + runs disrupted in step windows: WINDOWS=0-500,500-1000 KIND=blur|label_noise|
# input_noise|freeze|lr_spike (or KIND=deeplinear: the deep-linear critical-period check).
intervene:
	$(PY) -m dimlapse.pipelines intervene --model $(MODEL) $(if $(WINDOWS),--windows $(WINDOWS)) \
	  $(if $(KIND),--kind $(KIND)) $(if $(STEPS),--steps $(STEPS)) $(if $(SEED),--seed $(SEED))

# Recipes over seeds, one comparison report: MODELS=mlp,cnn SEEDS=3 STEPS=300 REUSE=1 SCHEDULER=tcp://...
study:
	$(PY) -m dimlapse.pipelines study $(if $(MODELS),--models $(MODELS)) \
	  $(if $(SEEDS),--seeds $(SEEDS)) $(if $(STEPS),--steps $(STEPS)) $(if $(REUSE),--reuse) \
	  $(if $(SCHEDULER),--scheduler $(SCHEDULER))
