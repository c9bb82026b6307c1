#!/usr/bin/env bash
# The whole test suite: lint, type check, then every test (core unit tests,
# the conformance suite on every adapter and broker, Serve integration).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
scripts/ensure_brokers.sh
scripts/ensure_browser.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy core/src plugins/*/src conformance/src bench examples/example_ray.py examples/deploy/app.py examples/embeddings
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache

# Tests wait on brokers and consumer processes far more than they compute, so
# they run in parallel worker processes (pytest-xdist), more than there are
# cores. The Serve tests form three xdist groups (serve-ray-1 to -3), each run
# by one worker on its one Ray: three Ray instances, not one per worker, since
# an idle Ray costs a tenth of a core. The other workers take the rest.
.venv/bin/pytest -n "${TASKSERVE_TEST_WORKERS:-5}" --dist loadgroup "$@"

# The examples start a Ray of their own each, as a user would: they run one
# after another once the Serve groups' Rays are gone, so that no more than one
# Ray starts on the machine at a time. Exit status 5 is pytest's "no test
# selected" (arguments that select none of them).
status=0
.venv/bin/pytest -n 0 examples/tests "$@" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
    exit "$status"
fi
