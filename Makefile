# Two commands for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= config.yaml

.PHONY: serve test install regen check-generated clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,load]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(PY) -m server --config $(CONFIG)

test: $(STAMP)
	bash scripts/install-browser.sh || echo "!!! chromium could not be installed: the playground browser test will say so" >&2
	bash scripts/install-redis.sh || echo "!!! redis-server could not be installed: tests/store will say so" >&2
	$(PY) -m pytest

regen: $(STAMP)
	$(PY) -m spec.codegen
	$(PY) -m server.config

check-generated: $(STAMP)
	$(PY) -m spec.codegen --check
	$(PY) -m server.config --check

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# Load: the seed_target scenario (10 users, simulator 50 ms to first chunk) against
# its thresholds in load/thresholds.yaml; other scenarios: `$(PY) -m load run NAME`.
LOAD_STAMP := $(VENV)/.installed-load

$(LOAD_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,load]'
	touch $(LOAD_STAMP)

.PHONY: load
load: $(LOAD_STAMP)
	$(PY) -m load run seed_target
