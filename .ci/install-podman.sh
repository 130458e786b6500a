#!/usr/bin/env bash
# Install Podman from Debian (4.3, with runc and the CNI network backend) and make it run containers on this
# kind of machine (docs/IMAGES.md, "Podman"):
#   - podman runc: runc named so that apt never picks crun, which refuses this VM's hybrid cgroups;
#   - golang-github-containernetworking-plugin-dnsname: containers on a `podman network create` network
#     resolve each other's names and --network-alias (without it they do not);
#   - uidmap, slirp4netns: rootless Podman (subordinate ids, user-mode networking);
#   - /etc/containers/containers.conf.d/50-osmo.conf: default_ulimits nofile 16384 and nproc 32768, and runtime
#     runc. The VM drops CAP_SYS_RESOURCE even for root, so the limits Podman asks for by default (nofile
#     1048576) fail every container with "error setting rlimit type 7: operation not permitted".
# Idempotent: when all is there it changes nothing and needs no network (well under a second).
# Usage: bash .ci/install-podman.sh     (sudo used when not root)
set -euo pipefail

start=$(date +%s)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
CONF=/etc/containers/containers.conf.d/50-osmo.conf
WANTED='# Written by .ci/install-podman.sh (docs/IMAGES.md): this VM refuses raising RLIMIT_NOFILE beyond its hard
# limit (no CAP_SYS_RESOURCE), so containers get limits it allows; crun cannot run on its hybrid cgroups.
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=32768:32768"]

[engine]
runtime = "runc"'

missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman runc)
command -v runc >/dev/null 2>&1 || missing+=(runc)
[ -x /usr/lib/cni/dnsname ] || missing+=(golang-github-containernetworking-plugin-dnsname)
command -v newuidmap >/dev/null 2>&1 || missing+=(uidmap)
command -v slirp4netns >/dev/null 2>&1 || missing+=(slirp4netns)
if [ ${#missing[@]} -gt 0 ]; then
    # shellcheck disable=SC2046  # one word per package
    bash "$(dirname "$0")/apt-install.sh" install-podman $(printf '%s\n' "${missing[@]}" | sort -u)
fi

if [ "$(cat "$CONF" 2>/dev/null)" != "$WANTED" ]; then
    $SUDO mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$WANTED" | $SUDO tee "$CONF" >/dev/null
    echo "install-podman: wrote $CONF"
fi
echo "install-podman: $(podman --version) with $(runc --version | head -1) ready ($(( $(date +%s) - start )) s)"
