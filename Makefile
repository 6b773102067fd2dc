# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-tools install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and exactly, so the range in pyproject.toml is already satisfied by the local CPU wheel.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/p2p_orchestrator.py --port $${P2P_PORT:-8770}

# The ops tests drive a real git against a local bare repository and run the seed's curl examples as written.
TEST_TOOLS := git curl

test-tools:
	@missing=$$(for tool in $(TEST_TOOLS); do command -v $$tool >/dev/null || echo $$tool; done); \
	if [ -n "$$missing" ]; then apt-get update -q && apt-get install -y -q $$missing; fi

test: $(STAMP) test-tools
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python benchmarks/gateway.py

clean:
	rm -rf $(VENV)
