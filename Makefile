# Two commands matter: `make run` (the platform on its embedded default, with demo data)
# and `make test` (everything, against real PostgreSQL and Kafka). Both start from a bare machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
KAFKA_LIB := .peers/kafka/lib
KAFKA_STAMP := $(KAFKA_LIB)/.fetched
MVN_DEP := org.apache.maven.plugins:maven-dependency-plugin:3.9.0

.PHONY: run test venv peers postgres kafka chromium tokens lint bench soak clean

run: $(INSTALLED)
	$(BIN)/python -m tools.run_embedded

test: $(INSTALLED) peers
	$(BIN)/python -m pytest $(PYTEST_ARGS)

venv: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

peers: postgres kafka chromium helm

postgres:
	tools/ensure_postgres.sh

kafka: $(KAFKA_STAMP)

# The broker comes from Maven Central as jars; see peers/kafka/pom.xml for the version and why.
$(KAFKA_STAMP): peers/kafka/pom.xml
	rm -rf $(KAFKA_LIB)
	mvn -B -q -f peers/kafka/pom.xml $(MVN_DEP):copy-dependencies \
	    -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/$(KAFKA_LIB)
	touch $@

chromium:
	tools/ensure_chromium.sh

# The helm CLI for the chart tests (tests/deploy), built from the Go module proxy into .peers/helm.
helm:
	tools/ensure_helm.sh

tokens: $(INSTALLED)
	$(BIN)/python -m tools.devtokens

# The long runs (docs/RELIABILITY.md): a bounded load run of mixed reads and ingest over five minutes on loopback
# (its own PostgreSQL and Kafka; report in var/load/report.json), then the fault tests at five times their size.
soak: $(INSTALLED) postgres kafka
	$(BIN)/python -m tools.load.run --duration 300 --operations 6000 --report var/load/report.json
	SCR_SOAK_SCALE=5 $(BIN)/python -m pytest tests/reliability -q -p no:cacheprovider

# The benchmark (docs/BENCHMARKS.md, which it rewrites): its own PostgreSQL and Kafka, the three services as
# processes, a synthetic ICS population through every feed. 100k resources by default (about 15 minutes);
# `make bench BENCH_RESOURCES=1000000` measures at 100k and at 1M in one run; `make bench BENCH_ARGS=--quick`
# is a two-minute smoke run at 2,000 resources.
BENCH_RESOURCES ?= 100000
bench: $(INSTALLED) postgres kafka
	$(BIN)/python -m tools.bench --resources $(BENCH_RESOURCES) $(BENCH_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check shared services tools tests

clean:
	rm -rf var .pytest_cache
