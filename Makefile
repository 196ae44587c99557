# The two commands of the README: `make up` runs the pipeline, `make test` runs the tests.
# Each first installs whatever this machine still lacks (scripts/bootstrap.sh).
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: up test lint bootstrap

bootstrap:
	@scripts/bootstrap.sh

up: bootstrap
	$(UV) run cryptoflow setup
	$(UV) run cryptoflow up

test:
	@scripts/bootstrap.sh --test
	$(UV) run ruff check .
	$(UV) run pytest

lint: bootstrap
	$(UV) run ruff check .
	$(UV) run ruff format --check .
