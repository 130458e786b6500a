#!/usr/bin/env bash
# Install the Debian packages the Ceph radosgw test tier needs (tests/servers/radosgw.py).
# Idempotent: does nothing (and needs no network) when every binary is already there.
# Usage: sudo .ci/install-radosgw.sh     (root on CI; prints how long the install took)
set -euo pipefail

PACKAGES=(radosgw ceph-mon ceph-osd ceph-common ceph-base)
BINARIES=(ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool)

missing=0
for b in "${BINARIES[@]}"; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/bin/$b" ] || missing=1
done
if [ "$missing" = 0 ]; then
    echo "install-radosgw: Ceph binaries already installed ($(ceph-mon --version 2>/dev/null | head -1))"
    exit 0
fi

bash "$(dirname "$0")/apt-install.sh" install-radosgw "${PACKAGES[@]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# The packages may enable and start system services; the tests start their own daemons instead.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now ceph.target ceph-mon.target ceph-osd.target ceph-radosgw.target \
        >/dev/null 2>&1 || true
fi

ceph-mon --version | head -1
