# `make test` is the one command CI runs (.ci/run): it builds the virtualenvs it needs from
# scratch (SQLAlchemy 2.1 and 2.0), then runs the linters, the type checker and the tests.
PYTHON ?= python3
VENV := .venv
VENV_SA20 := .venv-sa20
PIP_FLAGS := --quiet --disable-pip-version-check
# Debian's prometheus package, unpacked without root: the metrics tests run the real server.
PROMETHEUS_DIR := .cache/prometheus
PROMETHEUS := $(PROMETHEUS_DIR)/usr/bin/prometheus

.PHONY: test lint test-sa21 test-sa20 demo bench bench-load prometheus clean

test: prometheus lint test-sa21 test-sa20

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

$(VENV_SA20)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_SA20)
	$(VENV_SA20)/bin/pip install $(PIP_FLAGS) -e '.[dev]' 'sqlalchemy[asyncio]>=2.0.30,<2.1'
	touch $@

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests examples benchmarks
	$(VENV)/bin/ruff format --check src tests examples benchmarks
	$(VENV)/bin/mypy

test-sa21: $(VENV)/.installed
	$(VENV)/bin/python -c 'import sqlalchemy; print("SQLAlchemy", sqlalchemy.__version__)'
	$(VENV)/bin/pytest

test-sa20: $(VENV_SA20)/.installed
	$(VENV_SA20)/bin/python -c 'import sqlalchemy; print("SQLAlchemy", sqlalchemy.__version__)'
	$(VENV_SA20)/bin/pytest -p no:cacheprovider

demo: $(VENV)/.installed
	$(VENV)/bin/python -m examples.demo

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/bench_capture.py
	$(VENV)/bin/python benchmarks/bench_metrics.py

# End-to-end load benchmark (docs/benchmarks.md): PostgreSQL and wrk, ~15 minutes. Its own
# virtualenv on SQLAlchemy 2.0, which opentelemetry-instrumentation-sqlalchemy requires, so
# that every configuration it compares runs on the same SQLAlchemy.
VENV_BENCH := .venv-bench

$(VENV_BENCH)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_BENCH)
	$(VENV_BENCH)/bin/pip install $(PIP_FLAGS) -e '.[dev]' 'sqlalchemy[asyncio]>=2.0.30,<2.1' \
		prometheus-fastapi-instrumentator
	touch $@

bench-load: $(VENV_BENCH)/.installed
	$(VENV_BENCH)/bin/python benchmarks/bench_load.py $(BENCH_LOAD_ARGS)

# The tests find the binaries here (or through QUERYPROF_PROMETHEUS, or on PATH). Where apt
# cannot fetch the package, this warns and the Prometheus tests skip (and fail under CI=true).
prometheus:
	@if [ -x $(PROMETHEUS) ]; then exit 0; fi; \
	rm -rf $(PROMETHEUS_DIR) && mkdir -p $(PROMETHEUS_DIR)/deb && \
	if (cd $(PROMETHEUS_DIR)/deb && apt-get download prometheus) && \
	   dpkg -x $(PROMETHEUS_DIR)/deb/prometheus_*.deb $(PROMETHEUS_DIR); then \
	  rm -rf $(PROMETHEUS_DIR)/deb; $(PROMETHEUS) --version | head -1; \
	else \
	  rm -rf $(PROMETHEUS_DIR); echo "warning: could not obtain Prometheus (apt-get download prometheus)"; \
	fi

clean:
	rm -rf $(VENV) $(VENV_SA20) .pytest_cache .mypy_cache .ruff_cache
