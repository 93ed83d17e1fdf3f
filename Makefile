# zeroburn: the two commands are `make demo` and `make test`; both run `make setup` first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.zeroburn-installed
UMQTT  := build/lib/umqtt/simple.py
PEERS  := tests/peers/node_modules/.zeroburn-installed

.DEFAULT_GOAL := help
.PHONY: help setup test demo lint format bench clean package.json

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(STAMP) $(UMQTT) $(PEERS) ## create .venv, install pinned dependencies, fetch MicroPython-side deps (idempotent)
	@$(PY) -m host_tools.runtime --check
	@echo "zeroburn is installed in $(VENV)/bin: run \`. $(VENV)/bin/activate\` to type \`zeroburn\` (or use $(VENV)/bin/zeroburn)"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the pins change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade "pip>=23" "setuptools>=77"
	$(PY) -m pip install --disable-pip-version-check -q --no-build-isolation -e ".[dev]"
	@touch $@

$(UMQTT): host_tools/build/micropython-deps.toml $(STAMP)
	$(PY) -m host_tools.build.deps

# Aliyun's Node.js clients the platform is tested against (pinned by tests/peers' lockfile).
$(PEERS): tests/peers/package-lock.json
	npm ci --prefix tests/peers --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $@

# Three workers (pytest-xdist) on CI's two cores: most tests wait on virtual boards and sockets,
# not on the CPU. One run measured 6 min 14 s with -n 3 against 12 min 55 s serial
# (docs/architecture.md section 3). `.venv/bin/python -m pytest tests/x` still runs serially.
test: setup ## run the whole test suite
	$(PY) -m pytest -q -n 3 --durations=15

demo: setup ## boot a virtual board against the local platform emulator and watch it register
	$(PY) -m host_tools.emulator.demo

lint: setup ## ruff check, ruff format --check, and the type check (firmware vs the ESP32 port, host vs CPython)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) .ci/typecheck.py

package.json: firmware/manifest.py $(wildcard firmware/zeroburn/*.py) | $(STAMP) ## regenerate mip's package.json from firmware/manifest.py
	$(PY) -m host_tools.build.mip

format: setup ## apply ruff formatting
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup ## measure device and platform figures (zeroburn bench), not part of make test
	$(VENV)/bin/zeroburn bench --json build/bench.json --plot build/bench.png

clean: ## remove the venv, build output and local platform state
	rm -rf $(VENV) build .zeroburn tests/peers/node_modules
