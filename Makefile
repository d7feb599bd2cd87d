# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo demo-fast up test test-fast lint bench bench-cli bench-evidently bench-availability bench-serving bench-restore bench-load crash-test fuzz clean postgres-binaries promtool chromium nginx

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

## Debian's nginx for the Temporal mutual-TLS and API-key tests (a TLS-terminating gRPC proxy the tests start on
## free ports as a non-daemon); the package's own server is not wanted, so it is stopped where systemd started it.
nginx:
	@if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then \
		echo "nginx present"; \
	else \
		echo "installing Debian's nginx for the Temporal TLS tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null; \
		systemctl disable --now nginx >/dev/null 2>&1 || true; \
	fi

## Style, types, and the layers of docs/architecture.md (import-linter contracts in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy evolution workflows activities workers dashboard
	$(VENV)/bin/lint-imports --no-cache

## Three processes, a test file each at a time (its module fixtures set up once): most of the suite waits on servers
## and subprocesses, so three keep two cores busy (the non-serial part took 1,090 s with two, 652 s with three on
## this 2-core machine). TEST_WORKERS=0 runs it in one process. Tests marked `serial` (the crash test: kills aimed
## at running activities, with step timeouts capped) run alone afterwards.
TEST_WORKERS ?= 3
test: $(STAMP) postgres-binaries promtool chromium nginx lint
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 -n $(TEST_WORKERS) --dist loadfile -m "not serial"
	$(PY) -m pytest -q -p no:cacheprovider --durations=5 -m serial

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

bench: $(STAMP)
	$(PY) bench/bench_merkle.py
	$(PY) bench/bench_drift.py

## Start-up of the CLI against bare Python in the same run: `evolution --help` (target +0.3 s) and `evolution
## versions` on a demo state (target +1 s).
bench-cli: $(STAMP)
	$(PY) bench/bench_cli.py

## The long runs; `make test` runs a short version of each.
## Lifecycle stateful fuzz (10,000 steps), every bit flip of every Merkle proof up to 64 leaves, schemathesis at
## 1,000 cases per operation (with -s each prints its figures).
fuzz: $(STAMP) postgres-binaries
	EVOLUTION_FUZZ_STEPS=10000 EVOLUTION_FUZZ_MERKLE_SIZE=64 $(PY) -m pytest -q -s -p no:cacheprovider \
		tests/integration/test_lifecycle_stateful.py tests/unit/test_merkle_battery.py
	EVOLUTION_FUZZ_CASES=1000 $(PY) -m pytest -q -s -p no:cacheprovider tests/integration/test_http_fuzz.py

## Serving under a 5-minute loopback load while PostgreSQL and the Temporal server are stopped and restarted.
bench-availability: $(STAMP) postgres-binaries
	$(PY) bench/bench_serving_availability.py

## 1-row predictions over loopback at a fixed rate (built-in and ONNX, alone and with a shadow): p50/p99 against the
## bare round trip and the models' own predict in the same run (target: p99 <= bare + model + 2 ms; about 5 min).
bench-serving: $(STAMP) postgres-binaries
	$(PY) bench/bench_serving.py

## 100 tenants' lifecycles while the worker is SIGKILLed 12 times and the Temporal server once (about 12 min).
crash-test: $(STAMP)
	$(PY) bench/crash_test.py --tenants 100 --kills 12 --seed 7

## Drift scans of 500 tenants (10,000 rows x 20 features each) through the real workflows: tenants per minute,
## CPU per scan of the Temporal server and the workers, peak memory.
bench-load: $(STAMP)
	$(PY) bench/bench_drift_load.py --tenants 500 --rows 10000 --features 20

## Backup and point-in-time-recovery drill on a real PostgreSQL: RPO and RTO for registry, artifacts and keys.
bench-restore: $(STAMP) postgres-binaries
	$(PY) bench/bench_restore_drill.py

## The drift bench against Evidently too, in its own virtualenv (Evidently 0.7 needs pandas<3).
bench-evidently:
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet -e ".[bench]"
	.venv-bench/bin/python bench/bench_drift.py

clean:
	rm -rf $(VENV) .venv-bench .evolution .pytest_cache .mypy_cache .ruff_cache
