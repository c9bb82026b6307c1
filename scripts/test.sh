#!/usr/bin/env bash
# The whole test suite: every test (core unit tests, the conformance suite on
# every adapter and broker, Serve integration), then the examples, with the
# lint, type and import checks beside them.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
scripts/ensure_brokers.sh
scripts/ensure_browser.sh

# Lint, type and import checks run beside the tests (they take one core for
# about 20 s, while the tests start); their output comes after the tests', and
# either failing fails the run.
checks_log="$(mktemp)"
(
    set -e
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/mypy core/src plugins/*/src conformance/src bench examples/example_ray.py examples/deploy/app.py examples/embeddings
    .venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
) >"$checks_log" 2>&1 &
checks_pid=$!
trap 'kill "$checks_pid" 2>/dev/null || true; rm -f "$checks_log"' EXIT

# Tests wait on brokers and consumer processes far more than they compute, so
# they run in parallel worker processes (pytest-xdist), more than there are
# cores. The Serve tests form three xdist groups (serve-ray-1 to -3), each run
# by one worker on its one Ray: three Ray instances, not one per worker, since
# an idle Ray costs a tenth of a core. The other workers take the rest.
tests_status=0
.venv/bin/pytest -n "${TASKSERVE_TEST_WORKERS:-5}" --dist loadgroup "$@" || tests_status=$?

# The examples start a Ray of their own each, as a user would, and Ray gives
# its node a fixed 30 s to start, which a machine busy with the tests above
# can exceed: they run one after another once the Serve groups' Rays are gone.
# Exit status 5 is pytest's "no test selected" (arguments that select none of
# them).
if [ "$tests_status" -eq 0 ]; then
    .venv/bin/pytest -n 0 examples/tests "$@" || tests_status=$?
    if [ "$tests_status" -eq 5 ]; then
        tests_status=0
    fi
fi

checks_status=0
wait "$checks_pid" || checks_status=$?
cat "$checks_log"
if [ "$checks_status" -ne 0 ]; then
    echo "test.sh: the lint, type or import checks failed (above)" >&2
    exit "$checks_status"
fi
exit "$tests_status"
