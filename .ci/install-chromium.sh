#!/usr/bin/env bash
# Install Debian's headless-capable Chromium, its chromedriver and a font, for tests/test_report_chromium.py
# (it loads the HTML storage report in headless Chromium, dumps the DOM and takes a screenshot) and the
# osmo ui browser tests in tests/ui (Selenium drives /usr/bin/chromium through /usr/bin/chromedriver).
# Idempotent: does nothing (and needs no network) when both are already there.
# Usage: sudo .ci/install-chromium.sh     (root on CI; prints the installed versions)
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "install-chromium: already installed ($(/usr/bin/chromium --version 2>/dev/null | head -1);" \
         "$(/usr/bin/chromedriver --version 2>/dev/null | cut -d' ' -f1-2))"
    exit 0
fi

# fonts-dejavu-core so that the text renders in the screenshots; chromium-driver is /usr/bin/chromedriver,
# of chromium's version (Selenium is given its path and never downloads a driver).
bash "$(dirname "$0")/apt-install.sh" install-chromium chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --version 2>/dev/null | head -1
/usr/bin/chromedriver --version 2>/dev/null | head -1
