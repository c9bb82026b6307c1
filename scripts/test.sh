#!/usr/bin/env bash
# The whole test suite: every test (core unit tests, the conformance suite on
# every adapter and broker, Serve integration, the examples), with the lint,
# type and import checks beside them.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh
scripts/ensure_brokers.sh
scripts/ensure_browser.sh

# Lint, type and import checks run beside the tests (they take one core for
# about 20 s, while the tests mostly wait); their output comes after the tests',
# and either failing fails the run.
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
# an idle Ray costs a tenth of a core. The examples, which start a Ray of their
# own each as a user would, form one more group, run one after another; it is
# collected early (pyproject.toml's testpaths), so that its worker starts on it
# rather than ending the run with it. The other workers take the rest.
tests_status=0
.venv/bin/pytest -n "${TASKSERVE_TEST_WORKERS:-5}" --dist loadgroup "$@" || tests_status=$?

checks_status=0
wait "$checks_pid" || checks_status=$?
cat "$checks_log"
if [ "$checks_status" -ne 0 ]; then
    echo "test.sh: the lint, type or import checks failed (above)" >&2
    exit "$checks_status"
fi
exit "$tests_status"
