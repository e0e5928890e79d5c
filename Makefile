# HealthLink — the README's two commands are `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: install install-browser run test test-sqlite test-postgresql postgres bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

## Install, migrate, seed the demo region and serve on http://127.0.0.1:8000 (SQLite).
run: install
	$(VENV)/bin/healthlink serve --demo

## Make sure the local PostgreSQL (127.0.0.1:5432) is up; start it if it is not.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
	  echo "PostgreSQL is not running: starting it"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; \
	  for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	  pg_isready -h 127.0.0.1 -p 5432; }

## Debian's chromium and a CJK font for the browser tests (Playwright drives /usr/bin/chromium;
## its own browser download is not used).  Runs as root on the project's machines.
install-browser:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium fonts-noto-cjk)

## The whole suite, on SQLite and then on PostgreSQL.  The heavy suites that do not depend on the
## database kind (browser, fault, fuzz, bench smoke, Spark) run once, in the PostgreSQL pass.
HEAVY := browser or fault or fuzz or bench or spark
test: install install-browser postgres
	$(MAKE) test-sqlite
	$(MAKE) test-postgresql

test-sqlite: install
	@echo "=== test suite on SQLite ==="
	HEALTHLINK_TEST_DB=sqlite $(PY) -m pytest -m "not ($(HEAVY))" $(PYTEST_ARGS)

test-postgresql: install postgres
	@echo "=== test suite on PostgreSQL ==="
	HEALTHLINK_TEST_DB=postgresql $(PY) -m pytest $(PYTEST_ARGS)

## The benchmark suite (bench/suite.py, docs/benchmarks.md): SCALE=smoke|small|medium|full.
SCALE ?= small
bench: install postgres
	$(PY) bench/suite.py --scale $(SCALE)

clean:
	rm -rf $(VENV) var .pytest_cache
