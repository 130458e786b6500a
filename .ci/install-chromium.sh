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

# fonts-dejavu-core so that the report's text renders in the screenshot.
bash "$(dirname "$0")/apt-install.sh" install-chromium chromium fonts-dejavu-core
/usr/bin/chromium --version 2>/dev/null | head -1
