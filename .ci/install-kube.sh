#!/usr/bin/env bash
# Build the Kubernetes test servers (tests/servers/kube.py, tests/servers/kubenode.py) from Debian's
# `kubernetes` source package.
#
# No Debian binary package ships kube-apiserver or kubelet, so this script takes the Debian source (which
# vendors every Go dependency: the build needs no module download), applies two changes, builds
# kube-apiserver, kube-controller-manager, kube-scheduler, kubemark, kubelet, kubectl and kube-proxy in one
# `make` with Debian's Go, and caches them under
#   ${XDG_CACHE_HOME:-~/.cache}/osmo-kube/<debian-version>/bin/   (and the symlink osmo-kube/current)
# A cache that lacks any of these binaries (an older, smaller build) is rebuilt. It also installs etcd
# (Debian `etcd-server`, `etcd-client`) and what the real node needs: containerd, runc, the CNI plugins,
# iptables, conntrack, socat, ebtables, ethtool, iproute2 and dnsmasq-base (the cluster DNS of the node).
# See docs/KUBE-TEST-SERVERS.md.
#
# Idempotent: when the cached binaries and the packages are there it does nothing and needs no network (well
# under a second). The first run takes ~7-10 minutes on 2 cores; the sources and the Go build cache live in a
# temporary directory that is removed afterwards. Usage: bash .ci/install-kube.sh   (sudo used when not root)
# KUBE_DEB_VERSION=<version> builds that Debian version instead of the candidate of the apt lists.
set -euo pipefail

start=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/osmo-kube"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubemark kubelet kubectl kube-proxy)
# The Debian packages the real node runs (tests/servers/kubenode.py); each command proves its package.
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack socat ebtables ethtool iproute2
               dnsmasq-base)
NODE_COMMANDS=(etcd containerd ctr runc /usr/lib/cni/bridge iptables conntrack socat ebtables ethtool ip dnsmasq)
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

have_bins() {  # have_bins DIR: every binary is there and executable
    local b
    for b in "${BINARIES[@]}"; do [ -x "$1/$b" ] || return 1; done
}

have_node_commands() {  # every command of the node packages is installed (PATH has /usr/sbin for root)
    local c
    for c in "${NODE_COMMANDS[@]}"; do
        [ -x "$c" ] || command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || return 1
    done
}

if have_bins "$cache_root/current/bin" && have_node_commands; then
    echo "install-kube: cached in $(readlink -f "$cache_root/current") and the node packages installed;" \
         "nothing to do ($(( $(date +%s) - start )) s)"
    exit 0
fi

# --------------------------------------------------------------------------------------- deb-src lines
# `apt-get source` needs deb-src entries. Add a copy of the Debian deb entries as deb-src when there are
# none (deb822 *.sources files and one-line *.list files); other repositories are left alone.
if ! grep -rqsE '^(Types:.*deb-src|deb-src[[:space:]])' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    src822=$(for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush() {
                if (n && is_deb && is_debian) { for (i = 1; i <= n; i++) print buf[i]; print "" }
                n = 0; is_deb = 0; is_debian = 0
            }
            /^[ \t]*$/ { flush(); next }
            {
                line = $0
                if (line ~ /^Types:/) { if ((" " line " ") ~ / deb /) is_deb = 1; line = "Types: deb-src" }
                if (line ~ /^URIs:/ && line ~ /\/debian(-security)?\/?([ \t]|$)/) is_debian = 1
                buf[++n] = line
            }
            END { flush() }' "$f"
    done)
    srclist=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -E '^deb[[:space:]].*/debian(-security)?/?[[:space:]]' | sed -E 's/^deb[[:space:]]/deb-src /' || true)
    if [ -n "$src822" ]; then
        printf '%s\n' "$src822" | $SUDO tee /etc/apt/sources.list.d/osmo-deb-src.sources >/dev/null
    fi
    if [ -n "$srclist" ]; then
        printf '%s\n' "$srclist" | $SUDO tee /etc/apt/sources.list.d/osmo-deb-src.list >/dev/null
    fi
    if [ -z "$src822$srclist" ]; then
        echo "install-kube: no Debian entries in the apt sources to derive deb-src lines from" >&2
        exit 1
    fi
    echo "install-kube: added deb-src entries for the Debian archive"
fi

# ------------------------------------------------------------------------------------------ packages
# golang-go 1.19, make, rsync, jq: the Debian build's needs; dpkg-dev: `apt-get source` unpacks with it;
# golang-github-modern-go-reflect2-dev: the reflect2 1.0.2 sources that replace the vendored 1.0.1.
bash "$here/apt-install.sh" install-kube golang-go make rsync jq dpkg-dev \
    golang-github-modern-go-reflect2-dev etcd-server etcd-client "${NODE_PACKAGES[@]}"
# The packages may enable etcd and containerd system services; the tests start their own.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now etcd.service containerd.service >/dev/null 2>&1 || true
fi

# The newest source version in the apt lists (madison lists the highest first).
version=${KUBE_DEB_VERSION:-$(apt-cache madison kubernetes | awk -F'|' '$3 ~ /Sources/ { gsub(/ /, "", $2); print $2; exit }')}
if [ -z "$version" ]; then
    echo "install-kube: no source package 'kubernetes' in the apt lists (deb-src entries?)" >&2
    exit 1
fi
dest="$cache_root/$version"
if have_bins "$dest/bin"; then
    ln -sfn "$version" "$cache_root/current"
    echo "install-kube: $version already built in $dest ($(( $(date +%s) - start )) s)"
    exit 0
fi

# ------------------------------------------------------------------------------------- source + patches
work=$(mktemp -d "${TMPDIR:-/tmp}/osmo-kube-build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
apt-get source -qq "kubernetes=$version" >/dev/null 2>"$work/apt-source.log" \
    || { cat "$work/apt-source.log" >&2; exit 1; }
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
cd "$src"

# 1. reflect2: the vendored 1.0.1 reads Go runtime internals that changed after Go 1.17; built with Go 1.19
#    the apiserver dies with SIGSEGV on the first custom-object request. Debian's 1.0.2 sources fix that
#    (go_above_118.go). go -mod=vendor does not hash vendored files, so swapping the files is enough.
reflect2_src=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -f "$reflect2_src/go_above_118.go" ] || { echo "install-kube: $reflect2_src is not reflect2 >= 1.0.2" >&2; exit 1; }
rm -f vendor/github.com/modern-go/reflect2/*.go vendor/github.com/modern-go/reflect2/*.s
cp "$reflect2_src"/*.go "$reflect2_src"/*.s vendor/github.com/modern-go/reflect2/

# 2. kubemark: the hollow kubelet serves its API on 0.0.0.0; tests must only listen on loopback.
hollow=pkg/kubemark/hollow_kubelet.go
grep -q 'c.Address = "0.0.0.0"' "$hollow" || { echo "install-kube: bind address not found in $hollow" >&2; exit 1; }
sed -i 's/c.Address = "0.0.0.0"/c.Address = "127.0.0.1"/' "$hollow"

# ------------------------------------------------------------------------------------------------ build
# Everything Go writes (GOPATH, build cache) stays in $work; GOPROXY=off: the vendored sources must do.
# The Kubernetes build links with -s -w by default (no symbol tables, no DWARF).
echo "install-kube: building ${BINARIES[*]} from kubernetes $version ($(go version | awk '{print $3}'))"
build_start=$(date +%s)
mkdir -p "$work/gopath/src/k8s.io"
ln -s "$src" "$work/gopath/src/k8s.io/kubernetes"
env HOME="$work/home" GOPATH="$work/gopath" GOCACHE="$work/gocache" GOPROXY=off GOFLAGS=-mod=vendor \
    CGO_ENABLED=0 \
    make WHAT="${BINARIES[*]/#/cmd/}" >"$work/build.log" 2>&1 \
    || { tail -50 "$work/build.log" >&2; echo "install-kube: build failed" >&2; exit 1; }
build_seconds=$(( $(date +%s) - build_start ))

mkdir -p "$dest"
rm -rf "$dest/bin.tmp"
mkdir "$dest/bin.tmp"
for b in "${BINARIES[@]}"; do cp "_output/bin/$b" "$dest/bin.tmp/$b"; done
{
    echo "kubernetes Debian source $version, built $(date -u +%Y-%m-%dT%H:%M:%SZ) in ${build_seconds} s"
    echo "go: $(go version)"
    echo "changes: vendored reflect2 replaced by Debian's golang-github-modern-go-reflect2-dev $(dpkg-query -W -f '${Version}' golang-github-modern-go-reflect2-dev);"
    echo "         kubemark hollow kubelet binds 127.0.0.1 instead of 0.0.0.0"
} >"$dest/BUILD-INFO"
rm -rf "$dest/bin"
mv "$dest/bin.tmp" "$dest/bin"
ln -sfn "$version" "$cache_root/current"
echo "install-kube: built in ${build_seconds} s, $(du -sh "$dest/bin" | cut -f1) in $dest/bin;" \
     "total $(( $(date +%s) - start )) s"
