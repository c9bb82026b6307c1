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

echo "bootstrap: installing ${packages[*]}"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt "${packages[@]}"
echo "$digest" > "$STAMP"
