#!/usr/bin/env bash
# Install Debian's headless-capable Chromium and a font, for tests/test_report_chromium.py (it loads
# the HTML storage report in headless Chromium, dumps the DOM and takes a screenshot).
# Idempotent: does nothing (and needs no network) when /usr/bin/chromium is already there.
# Usage: sudo .ci/install-chromium.sh     (root on CI; prints the installed version)
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "install-chromium: already installed ($(/usr/bin/chromium --version 2>/dev/null | head -1))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends: the browser and its libraries only (no desktop integration, no extra
# fonts); fonts-dejavu-core so that the report's text renders in the screenshot.
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
end=$(date +%s)

echo "install-chromium: installed chromium and fonts-dejavu-core in $((end - start)) s" \
     "($(/usr/bin/chromium --version 2>/dev/null | head -1))"
