#!/usr/bin/env bash
# Make sure the headless browser of the dashboard's tests is installed:
# Debian's chromium at /usr/bin/chromium (Playwright drives it; its own browser
# builds are never downloaded). Installs it with apt-get when missing.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
echo "ensure_browser: installing chromium"
as_root=(env DEBIAN_FRONTEND=noninteractive)
[ "$(id -u)" = 0 ] || as_root=(sudo "${as_root[@]}")
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq chromium >/dev/null
