#!/usr/bin/env bash
# The whole test suite: lint, type check, then every test (core unit tests,
# the conformance suite on every adapter and broker, Serve integration).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
scripts/ensure_brokers.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy core/src plugins/*/src conformance/src bench
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache

# Tests wait on brokers and consumer processes far more than they compute, so
# they run in parallel worker processes (pytest-xdist), more than there are
# cores; tests sharing one Ray Serve instance form one xdist group.
.venv/bin/pytest -n "${TASKSERVE_TEST_WORKERS:-4}" --dist loadgroup "$@"
