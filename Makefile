# The two commands of the README. Both set up everything first (scripts/setup.sh).
VENV ?= .venv
export PREFECT_SERVER_ANALYTICS_ENABLED=false

.PHONY: demo test setup lint bench

demo: setup
	$(VENV)/bin/mcp-ir demo

# Four workers on two cores: most of a test's time is spent waiting on a server, a
# container or a timer, so the extra workers fill the gaps (docs/ENGINE.md, Tests).
TEST_WORKERS ?= 4

test: setup
	bash scripts/install-chromium.sh
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS)

setup:
	bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(VENV)/bin/python benchmarks/evidence.py
	$(VENV)/bin/python benchmarks/intake_throughput.py
	$(VENV)/bin/python benchmarks/containment.py
	$(VENV)/bin/python benchmarks/log_review.py
