#!/usr/bin/env bash
# Install Debian packages non-interactively and say how long it took; sudo when not root.
# Usage: .ci/apt-install.sh LABEL PACKAGE...   (used by the install-*.sh scripts)
set -euo pipefail
label=$1
shift
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends: only what the packages need (no desktop integration, no ceph-mgr...).
$SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
echo "$label: installed $* in $(( $(date +%s) - start )) s"
