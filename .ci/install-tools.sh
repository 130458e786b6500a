#!/usr/bin/env bash
# Install the small Debian packages the tests need: python3-venv (the test command makes a virtualenv),
# and the packages of the programs tests/helpers/tools.py lists for this script (nc, curl, ip, unshare,
# nsenter, setpriv, mount, ps, rsync). The other programs come from the other .ci/install-*.sh scripts.
# Idempotent: when everything is there it installs nothing and needs no network (well under a second).
# Usage: bash .ci/install-tools.sh     (sudo used when not root)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=$(python3 tests/helpers/tools.py debian-packages)
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    packages="$packages python3-venv"
fi
if [ -z "${packages// /}" ]; then
    echo "install-tools: every tool installed; nothing to do"
    exit 0
fi
# shellcheck disable=SC2086  # one word per package
bash .ci/apt-install.sh install-tools $packages
