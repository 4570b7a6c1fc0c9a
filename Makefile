# llm-usage-exporter — run it, test it.
#   make run        exporter + embedded simulator on http://127.0.0.1:9477/metrics (HOST=, PORT= override)
#   make test       the whole suite (unit, promtool, real Prometheus integration); < 10 min; installs what
#                   it needs first: Python packages into .venv, Debian packages (apt) when missing
#   make test-slow  long fuzz / soak / load tests
#   make bench      benchmarks, side by side with a prometheus-client baseline (ARGS='--quick', '--shape ...')
#   make soak       steady load + 1 s scrapes for MINUTES (default 10); RSS, fds, p99 must stay flat
#   make stack      exporter + Prometheus + Alertmanager from the Debian binaries (no Docker)
#   make snapshot   re-render docs/snapshots/*.png from the dashboards' PromQL

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
HOST   ?= 127.0.0.1
PORT   ?= 9477
# The demo's state is its own file: a real exporter started later on the default
# ./data/llm-exporter.db never shows simulated tenants.
DEMO_DB ?= ./data/demo.db

# Debian packages the integration tests run (binary -> package). Installed only when a binary is
# missing, so a machine that has them pays one `command -v` per binary.
TEST_BINARIES := prometheus promtool prometheus-alertmanager amtool victoria-metrics chromium chromedriver curl
TEST_PACKAGES := prometheus prometheus-alertmanager victoria-metrics chromium chromium-driver curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv deps run test test-slow bench soak dashboards rules stack stack-backfill snapshot clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

deps:
	@missing=$$(for b in $(TEST_BINARIES); do command -v $$b >/dev/null || echo $$b; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the tests (missing: $$(echo $$missing))"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update && apt-get install -y $(TEST_PACKAGES)'; \
	fi

run: venv
	$(PY) -m exporter --web.listen-address=$(HOST):$(PORT) --simulator.enabled=true --storage.path=$(DEMO_DB)

test: venv deps
	$(PY) -m pytest -q -n $(or $(WORKERS),2) --dist loadfile

test-slow: venv deps
	$(PY) -m pytest -q -m slow

bench: venv
	$(PY) bench/run.py $(ARGS)

soak: venv
	$(PY) bench/soak.py --minutes $(or $(MINUTES),10)

snapshot: venv
	$(PY) -m pip install --quiet --disable-pip-version-check 'matplotlib==3.11.2'
	$(PY) tools/snapshot.py

stack: venv deps
	tools/stack.sh

stack-backfill: venv deps
	tools/stack.sh --fresh --backfill 7

dashboards: venv
	$(PY) -m mixin dashboards

rules: venv
	$(PY) -m mixin rules

clean:
	rm -rf $(VENV) data .pytest_cache .stack
