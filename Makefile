# collab: every target bootstraps what it needs, so `make demo` or `make test`
# alone works on a fresh machine. Set-up steps are stamped and re-run only when
# their inputs change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
COLLAB := $(VENV)/bin/collab
TORCH_PIN := torch==2.13.0
CRYPTEN_PIN := crypten==0.4.1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1

.PHONY: setup test test-fast test-scale demo demo-quick bench clean

setup: $(VENV)/.collab-python chain/node_modules/.collab-npm

# torch first (exact pin: the CPU wheel), crypten without its dead `sklearn`
# dependency, then everything else under the pinned constraints.
$(VENV)/.collab-python: pyproject.toml constraints.txt
	@echo ">> python environment ($(VENV))" >&2
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(TORCH_PIN)
	$(PIP) install --no-deps $(CRYPTEN_PIN)
	set -o pipefail; $(PIP) install -c constraints.txt -e '.[dev]' 2>&1 \
	  | { grep -vE "^(WARNING: Location|ERROR: pip.s dependency resolver|crypten .* requires)" || true; }
	$(PY) -c "import collab, torch, web3" 
	touch $@

chain/node_modules/.collab-npm: chain/package.json chain/package-lock.json
	@echo ">> chain toolchain (npm ci in chain/)" >&2
	cd chain && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The 20-participant Flower test alone (it also runs in `make test`, marked slow).
test-scale: setup
	$(PY) -m pytest -q tests/test_fl_scale.py

demo: setup
	$(COLLAB) demo

demo-quick: setup
	$(COLLAB) demo --quick

bench: setup
	$(COLLAB) bench all

clean:
	rm -rf $(VENV) chain/node_modules chain/build .pytest_cache .hypothesis
