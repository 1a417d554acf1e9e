# retina-study: `make sweep` runs a whole study, `make test` the tests. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SPACE ?= search_spaces/demo.yaml
DATA ?=
RESULTS ?= results
ARGS ?=
DEMO_DATA := data/demo

LOCK := requirements.lock

.PHONY: install lock sweep demo-data test test-quick lint format weights report analyze dashboard bench bench-gpu clean-results

# Idempotent: reinstalls only when pyproject.toml or the lock changed since the last install.
# The lock pins every package to the version the suite passed with (pip constraints).
install: $(STAMP)
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[dev,mlflow]'
	@touch $(STAMP)

# Refresh the lock from pyproject.toml's ranges in a fresh venv; then `make test` and commit both.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet -e '.[dev,mlflow]'
	@{ head -n 2 $(LOCK); .venv-lock/bin/pip freeze --exclude-editable | grep -v '^#'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .venv-lock

demo-data: $(STAMP)
	@test -f $(DEMO_DATA)/trainLabels.csv || $(PY) -m retina.synthetic --out $(DEMO_DATA) --n 1000 --size 256 --seed 0

# The demo study needs the synthetic data; another study names its own with DATA=/path.
sweep: $(STAMP) $(if $(DATA),,demo-data)
	$(PY) -m study.sweep $(SPACE) --results $(RESULTS) $(if $(DATA),--data $(DATA)) $(ARGS)
	$(PY) -m study.analyze $(RESULTS)

report analyze: $(STAMP)
	$(PY) -m study.analyze $(RESULTS)

dashboard:
	@echo "A running sweep prints its dashboard URL at start (http://127.0.0.1:8265 by default)."
	@echo "From another machine, tunnel it instead of exposing it: ssh -L 8265:127.0.0.1:8265 HOST"
	@echo "then open http://127.0.0.1:8265 and give the token in ~/.ray/auth_token (keep it chmod 600);"
	@echo "'ray status' lists the cluster's nodes and resources."

weights: $(STAMP)
	$(PY) -m retina.weights

# Everything: before a commit that lands. Three pytest-xdist workers on 2 cores (one compute
# thread each, tests/conftest.py): a sweep test spends much of its time waiting (Ray starting,
# a driver polled, a trial held), which a third worker fills - on a fresh clone the suite took
# 514 s with 3 workers against 766-794 s with 2; test-quick 91 s against 120 s. Each worker
# runs whole modules: a module fixture (two security sweeps, a dozen CLI runs) is made once,
# not once per worker. (Not `loadgroup`: under pytest 9 its group suffix no longer reaches the
# node id, so xdist 3.8 spread a group over the workers.)
# Modules go out in the order tests/conftest.py sorts them, slow ones first: xdist's default
# (most tests first) left two-test sweep modules for the end, one worker idle meanwhile.
# `make test TEST_WORKERS=0` runs it in this one process.
TEST_WORKERS ?= 3
WORKERS = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS))
test: $(STAMP)
	$(PY) -m pytest -q $(if $(WORKERS),$(WORKERS) --dist loadfile --no-loadscope-reorder) --durations=15

# The edit loop (~1.5 min on 2 cores): no Ray start, no sweep (tests marked slow are left out).
# Test by test (--dist load): its module fixtures are cheap, and whole modules balanced worse
# (136 s vs 120 s measured with 2 workers).
test-quick: $(STAMP)
	$(PY) -m pytest -q $(if $(WORKERS),$(WORKERS) --dist load) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check retina study tests
	$(VENV)/bin/ruff format --check retina study tests
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format retina study tests
	$(VENV)/bin/ruff check --fix retina study tests

bench: $(STAMP)
	$(PY) -m retina.bench --json bench.json

bench-gpu: $(STAMP)
	$(PY) -m retina.bench --gpu --json bench-gpu.json

clean-results:
	rm -rf $(RESULTS)/*/
