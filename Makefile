# The two commands of the README: `make up` runs the pipeline, `make test` runs the tests.
# Each first installs whatever this machine still lacks (scripts/bootstrap.sh).
# `make check` is the contributor's quick loop: lint, types and the pure tests, no services.
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: up test check lint bootstrap

# The packages mypy checks (pyproject's [tool.mypy]).
TYPED := cryptoflow ingestion pipelines expectations

bootstrap:
	@scripts/bootstrap.sh

# `cryptoflow up` makes the set-up steps itself and stops the embedded services it started
# when it stops (a separate `cryptoflow setup` would start them and leave them running).
# ARGS: options of `cryptoflow up`, e.g. make up ARGS="--source sim".
up: bootstrap
	$(UV) run cryptoflow up $(ARGS)

test:
	@scripts/bootstrap.sh --test
	$(UV) run ruff check .
	$(UV) run mypy $(TYPED)
	$(UV) run pytest

# Everything but the tests that start Kafka, PostgreSQL or Spark (pytest -m integration).
check:
	@scripts/bootstrap.sh --test
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy $(TYPED)
	$(UV) run pytest -m "not integration"

lint: bootstrap
	$(UV) run ruff check .
	$(UV) run ruff format --check .
