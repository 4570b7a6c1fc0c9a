# llm-usage-exporter — run it, test it.
#   make run        exporter + embedded simulator on http://127.0.0.1:9477/metrics
#   make test       the whole suite (unit, promtool, real Prometheus integration); < 10 min
#   make test-slow  long fuzz / soak / load tests
#   make bench      benchmarks, side by side with a prometheus-client baseline (ARGS='--quick', '--shape ...')
#   make soak       steady load + 1 s scrapes for MINUTES (default 10); RSS, fds, p99 must stay flat
#   make stack      exporter + Prometheus + Alertmanager from the Debian binaries (no Docker)
#   make snapshot   re-render docs/snapshots/*.png from the dashboards' PromQL

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv run test test-slow bench soak dashboards rules stack stack-backfill snapshot clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

run: venv
	$(PY) -m exporter --web.listen-address=127.0.0.1:9477 --simulator.enabled=true --storage.path=./data/llm-exporter.db

test: venv
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

bench: venv
	$(PY) bench/run.py $(ARGS)

soak: venv
	$(PY) bench/soak.py --minutes $(or $(MINUTES),10)

snapshot: venv
	$(PY) -m pip install --quiet --disable-pip-version-check 'matplotlib==3.11.2'
	$(PY) tools/snapshot.py

stack: venv
	tools/stack.sh

stack-backfill: venv
	tools/stack.sh --fresh --backfill 7

dashboards: venv
	$(PY) -m mixin dashboards

rules: venv
	$(PY) -m mixin rules

clean:
	rm -rf $(VENV) data .pytest_cache .stack
