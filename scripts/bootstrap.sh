#!/usr/bin/env bash
# Create .venv and install every taskserve distribution (editable) with the
# development tools. Re-running is cheap: it reinstalls only when a
# pyproject.toml or requirements-dev.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.taskserve-installed

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi

packages=(-e "core[serve,redis]")
[ -d conformance ] && packages+=(-e conformance)
for plugin in plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && packages+=(-e "$plugin")
done

inputs=$(ls requirements-dev.txt core/pyproject.toml conformance/pyproject.toml plugins/*/pyproject.toml 2>/dev/null)
digest=$(cat $inputs | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ]; then
    exit 0
fi

# A machine's pip configuration may name package indexes that do not exist
# there; pip warns about each on every lookup. Those lines alone are dropped.
quiet_pip() {
    "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

echo "bootstrap: installing ${packages[*]}"
quiet_pip install --quiet --upgrade pip
quiet_pip install --quiet -r requirements-dev.txt "${packages[@]}"
echo "$digest" > "$STAMP"
