#!/bin/sh
# Install the peer backup tools used by benchmarks/compare.py (restic, borg)
# from the distribution's packages. Idempotent: does nothing when both are
# already on PATH. Needs root (or sudo) on a Debian/Ubuntu machine.
set -eu

if command -v restic >/dev/null 2>&1 && command -v borg >/dev/null 2>&1; then
    echo "restic and borg already installed:"
    restic version
    borg --version
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends restic borgbackup

restic version
borg --version
