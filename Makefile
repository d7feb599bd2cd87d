# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo demo-fast up test test-fast lint bench bench-evidently clean postgres-binaries promtool chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The whole lifecycle on the real embedded services, then a summary (state kept in ./.evolution).
demo: $(STAMP)
	$(VENV)/bin/evolution demo

demo-fast: $(STAMP)
	$(VENV)/bin/evolution demo --fast

up: $(STAMP)
	$(VENV)/bin/evolution up

## PostgreSQL server binaries for the tests (Debian's package) when the machine lacks them.
postgres-binaries:
	@if command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then \
		echo "PostgreSQL binaries present"; \
	else \
		echo "installing Debian's postgresql for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

## promtool for the monitoring-rule tests (Debian's prometheus package) when the machine lacks it; the package's
## own server is not wanted, so it is stopped where systemd started it.
promtool:
	@if command -v promtool >/dev/null 2>&1; then \
		echo "promtool present"; \
	else \
		echo "installing Debian's prometheus (for promtool) for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
		systemctl disable --now prometheus >/dev/null 2>&1 || true; \
	fi

## Debian's Chromium for the dashboard's browser test (Playwright drives it; no browser download).
chromium:
	@if [ -x /usr/bin/chromium ]; then \
		echo "chromium present"; \
	else \
		echo "installing Debian's chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy evolution workflows activities workers dashboard

test: $(STAMP) postgres-binaries promtool chromium lint
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

bench: $(STAMP)
	$(PY) bench/bench_merkle.py
	$(PY) bench/bench_drift.py

## The drift bench against Evidently too, in its own virtualenv (Evidently 0.7 needs pandas<3).
bench-evidently:
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet -e ".[bench]"
	.venv-bench/bin/python bench/bench_drift.py

clean:
	rm -rf $(VENV) .venv-bench .evolution .pytest_cache .mypy_cache .ruff_cache
