# taskserve: the two commands of the README, and a few more.
.PHONY: quickstart test lint bench

quickstart:  ## Document indexing on the embedded sqlite adapter (no server needed)
	scripts/bootstrap.sh
	.venv/bin/python examples/quickstart.py

test:  ## Lint, type check and run the whole test suite against real brokers
	scripts/test.sh

lint:
	scripts/bootstrap.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy core/src plugins/*/src conformance/src bench examples/example_ray.py examples/deploy/app.py examples/embeddings
	.venv/bin/lint-imports --no-cache

bench:  ## Benchmarks (not part of the tests)
	scripts/bootstrap.sh
	scripts/ensure_brokers.sh
	.venv/bin/python -m bench
