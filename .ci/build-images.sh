#!/usr/bin/env bash
# Build the project's container images without a container engine or a registry (docs/IMAGES.md):
#   pause         localhost/osmo-pause:1: a static sandbox process for a pod (sleeps, reaps, exits 0 on TERM/INT)
#   osmo-task     localhost/osmo-task:bookworm and every name in tests/data/image-aliases.txt: Debian bookworm
#                 minbase with bash, coreutils, curl, netcat-openbsd, python3, iproute2, procps, ca-certificates,
#                 rsync
#   osmo-sidecar  localhost/osmo-sidecar:VERSION and :VERSION-KEY: what sidecar/Dockerfile describes (Python 3.11,
#                 this checkout installed in a venv at /opt/osmo from wheels built on the host, user 10001)
# as docker-archive tarballs that `podman load -i`, `ctr -n k8s.io images import` and skopeo read, plus a
# manifest.json naming each file, its tags, its image id and its cache key. Recipe: mmdebstrap (Debian's mirror)
# -> a rootfs tarball -> `umoci raw add-layer` into an OCI layout -> `umoci config` -> `skopeo copy` to
# docker-archive. The pause program is Go, built with Debian's golang-go.
#
# Cache: each image lives in ${XDG_CACHE_HOME:-~/.cache}/osmo-images/NAME-KEY/, KEY a hash of its recipe (this
# script's functions and settings for it) and, for the sidecar, of the project files that go into it. A warm run
# (every output up to date) does nothing, needs neither root nor network, and takes well under a second. The
# sidecar has three layers, each cached: Debian + Python + user (sidecar-base-KEY), the venv with the project's
# dependencies (sidecar-deps-KEY, keyed by pyproject's dependency list), and the project itself, so a change of
# the code rebuilds only that last small layer. The two newest entries of each kind are kept.
#
# Usage: bash .ci/build-images.sh [--out DIR] [--keys] [IMAGE...]     (IMAGE: pause, osmo-task, osmo-sidecar;
#        default all three; --out default ${XDG_CACHE_HOME:-~/.cache}/osmo-images/out; --keys prints each
#        image's cache key and builds nothing)
# Building needs root (mmdebstrap --mode=root, chroot, an overlay mount, files owned by root in the layers): as
# another user the script runs itself again with sudo and gives the results back to that user. Missing tools
# (mmdebstrap, umoci, skopeo, golang-go) are installed through .ci/apt-install.sh. OSMO_IMAGES_MIRROR overrides
# the Debian mirror. Exit codes: 0 built or up to date, 1 a build failed, 2 bad arguments.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRIPT="$ROOT/.ci/build-images.sh"
ALL_IMAGES=(pause osmo-task osmo-sidecar)
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/osmo-images"
ALIASES_FILE="$ROOT/tests/data/image-aliases.txt"

SUITE=bookworm
MIRROR=${OSMO_IMAGES_MIRROR:-http://deb.debian.org/debian}
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PAUSE_TAG=localhost/osmo-pause:1
TASK_TAG=localhost/osmo-task:$SUITE
TASK_PACKAGES=bash,coreutils,curl,netcat-openbsd,python3,iproute2,procps,ca-certificates,rsync
SIDECAR_BASE_PACKAGES=python3,python3-venv
# The project files that go into the sidecar (as in the root .dockerignore), caches and build leftovers excepted.
PROJECT_PATHS=(pyproject.toml README.md osmo_store osmo_run sidecar)

fail_usage() {
    echo "build-images: $1 (usage: bash .ci/build-images.sh [--out DIR] [--keys] [IMAGE...]; images: ${ALL_IMAGES[*]})" >&2
    exit 2
}

out=""
keys_only=0
requested=()
while [ $# -gt 0 ]; do
    case $1 in
        --out) [ $# -ge 2 ] && [ -n "$2" ] || fail_usage "--out needs a folder"; out=$2; shift 2 ;;
        --out=*) out=${1#--out=}; [ -n "$out" ] || fail_usage "--out needs a folder"; shift ;;
        --keys) keys_only=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$SCRIPT" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) fail_usage "unknown option $1" ;;
        *) case " ${ALL_IMAGES[*]} " in
               *" $1 "*) requested+=("$1"); shift ;;
               *) fail_usage "unknown image '$1'" ;;
           esac ;;
    esac
done
[ ${#requested[@]} -gt 0 ] || requested=("${ALL_IMAGES[@]}")
OUT=$(realpath -m "${out:-$CACHE/out}")

task_aliases() {  # the names the conformance workflows use, one a line (comments and blank lines left out)
    [ -f "$ALIASES_FILE" ] || { echo "build-images: $ALIASES_FILE is missing" >&2; exit 1; }
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$ALIASES_FILE" | grep -v '^$' || true
}

project_version() {
    sed -n 's/^version *= *"\([^"]*\)".*/\1/p' "$ROOT/pyproject.toml" | head -1
}

project_files() {  # the files copied into the sidecar build, sorted, relative to the checkout
    (cd "$ROOT" && find "${PROJECT_PATHS[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.py[co]' \
        ! -path '*.egg-info/*' ! -path '*/.pytest_cache/*' ! -path '*/.hypothesis/*' | LC_ALL=C sort)
}

dependencies_text() {  # pyproject's dependency list as written (for the key: no Python started when warm)
    awk '/^dependencies *= *\[/ { inside = 1 } inside { print } inside && /^\]/ { exit }' "$ROOT/pyproject.toml"
}

pyproject_list() {  # pyproject_list dependencies|build-requires: that list of pyproject.toml, one a line
    python3 -c 'import sys, tomllib
data = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(data["project"]["dependencies"] if sys.argv[2] == "dependencies" else data["build-system"]["requires"]))
' "$ROOT/pyproject.toml" "$1"
}

# ------------------------------------------------------------------------------------------------ recipes
# Each function here decides what an image holds; its text (declare -f) is part of that image's cache key.

debian_rootfs() {  # debian_rootfs TARBALL PACKAGES [--customize-hook=...]: a bookworm minbase rootfs as a tarball
    local tarball=$1 packages=$2
    shift 2
    # The host's resolv.conf and hostname, which mmdebstrap copies in, stay out of the image; so do the device
    # nodes mmdebstrap creates in /dev (a runtime mounts its own /dev; rootless engines cannot create them).
    mmdebstrap --quiet --mode=root --variant=minbase --format=tar --include="$packages" \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' "$@" \
        "$SUITE" - "$MIRROR" </dev/null | tar --delete --wildcards './dev/?*' >"$tarball"
}

new_oci() {  # new_oci LAYOUT LAYER.tar...: an OCI layout whose image "build" has these layers, in order
    local layout=$1 layer
    shift
    umoci init --layout "$layout" >/dev/null
    umoci new --image "$layout:build"
    for layer in "$@"; do
        umoci raw add-layer --image "$layout:build" --history.created_by ".ci/build-images.sh $(basename "$layer")" "$layer"
    done
}

write_archive() {  # write_archive LAYOUT ARCHIVE TAG...: the image as a docker-archive tagged with every TAG
    local layout=$1 archive=$2 first=$3 extra=() tag
    shift 3
    for tag in "$@"; do extra+=(--additional-tag "$tag"); done
    rm -f "$archive"
    skopeo --insecure-policy copy -q "oci:$layout:build" "docker-archive:$archive:$first" "${extra[@]}"
}

in_chroot() {  # in_chroot ROOTFS SCRIPT: sh -ec SCRIPT in ROOTFS, with nothing of the host's environment
    env -i PATH="$IMAGE_PATH" HOME=/root LANG=C.UTF-8 chroot "$1" sh -ec "$2"
}

host_pip() {  # host_pip ARGS...: pip of a cached venv of the host's Python 3.11, which builds the image's wheels
    local env=$CACHE/wheel-env-3.11
    python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
        echo "build-images: the sidecar's wheels need a Python 3.11 host (the image's is Debian's 3.11); python3 is $(python3 --version 2>&1)" >&2
        return 1
    }
    if ! "$env/bin/python" -c 'import setuptools' 2>/dev/null; then
        rm -rf "$env"
        python3 -m venv "$env"
    fi
    mapfile -t requires < <(pyproject_list build-requires)
    "$env/bin/pip" -q --disable-pip-version-check install "${requires[@]}"
    "$env/bin/pip" -q --disable-pip-version-check "$@" 2>&1 \
        | { grep -v '^WARNING: Location' || true; } >&2
}

build_pause() {  # build_pause WORK ARCHIVE TAG...
    local work=$1 archive=$2
    shift 2
    mkdir -p "$work/pause-src" "$work/pause-root"
    cat >"$work/pause-src/pause.go" <<'GO'
// pause: the first process of a pod's sandbox. It holds the pod's namespaces open and sleeps; as PID 1 of
// the pod it reaps every orphan handed to it (SIGCHLD), and it exits 0 on SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func reapOrphans() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	for received := range signals {
		if received != syscall.SIGCHLD {
			os.Exit(0)
		}
		reapOrphans()
	}
}
GO
    (cd "$work/pause-src" && env HOME="$work" GOPATH="$work/gopath" GOCACHE="$work/gocache" GOPROXY=off \
        GO111MODULE=off GOFLAGS= CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/pause-root/pause" pause.go)
    tar -C "$work/pause-root" --numeric-owner --owner=0 --group=0 -cf "$work/pause.tar" ./pause
    new_oci "$work/oci" "$work/pause.tar"
    umoci config --image "$work/oci:build" --os linux --architecture "$ARCH" --config.workingdir / \
        --config.entrypoint /pause --config.label org.opencontainers.image.title=osmo-pause
    write_archive "$work/oci" "$archive" "$@"
}

build_osmo_task() {  # build_osmo_task WORK ARCHIVE TAG...: no entrypoint, so that a runner's command runs as given
    local work=$1 archive=$2
    shift 2
    debian_rootfs "$work/rootfs.tar" "$TASK_PACKAGES"
    new_oci "$work/oci" "$work/rootfs.tar"
    umoci config --image "$work/oci:build" --os linux --architecture "$ARCH" --config.workingdir / \
        --config.env "PATH=$IMAGE_PATH" --config.cmd bash \
        --config.label org.opencontainers.image.title=osmo-task \
        --config.label "org.opencontainers.image.description=osmo test task image: Debian $SUITE with $TASK_PACKAGES"
    write_archive "$work/oci" "$archive" "$@"
}

build_sidecar_base() {  # build_sidecar_base WORK: WORK/layer.tar, Debian's Python 3.11, the osmo user (10001), /osmo/run
    debian_rootfs "$1/layer.tar" "$SIDECAR_BASE_PACKAGES" \
        --customize-hook='chroot "$1" groupadd --gid 10001 osmo' \
        --customize-hook='chroot "$1" useradd --uid 10001 --gid 10001 --no-log-init --create-home --home-dir /home/osmo --shell /usr/sbin/nologin osmo' \
        --customize-hook='mkdir -p "$1/osmo/run" && chown 10001:10001 "$1/osmo/run"'
}

build_sidecar_deps() {  # build_sidecar_deps WORK BASE_LAYER: WORK/oci (base + /opt/osmo, a venv with the project's
    local work=$1 base=$2 rootfs=$1/rootfs  # dependencies) and WORK/rootfs, the two unpacked, for the next layer
    mapfile -t requirements < <(pyproject_list dependencies)
    host_pip wheel -w "$work/wheels" "${requirements[@]}"
    mkdir -p "$rootfs"
    tar -C "$rootfs" --numeric-owner -xpf "$base"
    mkdir "$rootfs/tmp/wheels"
    cp "$work/wheels"/*.whl "$rootfs/tmp/wheels/"
    in_chroot "$rootfs" 'python3 -m venv /opt/osmo
        /opt/osmo/bin/pip install -q --disable-pip-version-check --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl'
    rm -rf "$rootfs/tmp/wheels" "$work/wheels"
    tar -C "$rootfs" --numeric-owner -cf "$work/deps.tar" ./opt
    new_oci "$work/oci" "$base" "$work/deps.tar"
    rm "$work/deps.tar"
}

build_osmo_sidecar() {  # build_osmo_sidecar WORK ARCHIVE DEPS TAG...: DEPS' image + a layer with this checkout
    local work=$1 archive=$2 deps=$3 version
    shift 3
    version=$(project_version)
    # The project's wheel, built on the host from a copy of the files that matter (pip writes build/ into the
    # source), is installed into the dependencies' venv on an overlay of DEPS' rootfs: the overlay's upper
    # folder holds exactly what the install added, which becomes the layer.
    mkdir -p "$work/src" "$work/upper" "$work/overlay-work" "$work/merged"
    project_files | tar -C "$ROOT" -cf - -T - | tar -C "$work/src" -xf -
    host_pip wheel --no-deps --no-build-isolation -w "$work/wheels" "$work/src"
    unshare --mount --propagation private -- sh -ec '
        mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
        mkdir "$4/tmp/wheels"
        cp "$5"/osmo-*.whl "$4/tmp/wheels/"
        env -i PATH="$6" HOME=/root LANG=C.UTF-8 chroot "$4" sh -ec "
            /opt/osmo/bin/pip install -q --disable-pip-version-check --no-cache-dir --no-index --no-deps /tmp/wheels/osmo-*.whl
            /opt/osmo/bin/pip check >/dev/null"' \
        overlay "$deps/rootfs" "$work/upper" "$work/overlay-work" "$work/merged" "$work/wheels" "$IMAGE_PATH"
    if [ -n "$(find "$work/upper/opt" -type c -print -quit)" ]; then
        echo "build-images: installing the project deleted files of the dependencies' layer" >&2
        return 1
    fi
    tar -C "$work/upper" --numeric-owner -cf "$work/project.tar" ./opt
    # The cached layout of the base and dependencies layers, its blobs hard-linked (umoci only adds blobs).
    cp -al "$deps/oci" "$work/oci"
    cp --remove-destination "$deps/oci/index.json" "$work/oci/index.json"
    umoci raw add-layer --image "$work/oci:build" --history.created_by ".ci/build-images.sh project.tar" "$work/project.tar"
    umoci config --image "$work/oci:build" --os linux --architecture "$ARCH" \
        --config.user 10001:10001 --config.workingdir /home/osmo \
        --config.env "PATH=/opt/osmo/bin:$IMAGE_PATH" --config.env PYTHONDONTWRITEBYTECODE=1 \
        --config.env PYTHONUNBUFFERED=1 --config.entrypoint osmo-sidecar --config.cmd=--help \
        --config.label org.opencontainers.image.title=osmo-sidecar \
        --config.label "org.opencontainers.image.description=osmo task sidecar: downloads a task's inputs, runs its command, uploads its outputs" \
        --config.label "org.opencontainers.image.version=$version" \
        --config.label org.opencontainers.image.licenses=Apache-2.0
    write_archive "$work/oci" "$archive" "$@"
}

tags_of() {  # tags_of NAME KEY: the tags an image is written with, one a line (as given to skopeo)
    case $1 in
        pause) echo "$PAUSE_TAG" ;;
        osmo-task) echo "$TASK_TAG"; task_aliases ;;
        osmo-sidecar) echo "localhost/osmo-sidecar:$(project_version)"
                      echo "localhost/osmo-sidecar:$(project_version)-${2:0:12}" ;;
    esac
}

# ------------------------------------------------------------------------------------------------- keys
hash_text() { sha256sum | cut -c1-16; }

recipe_of() {  # recipe_of NAME: the text that decides what the image (or the sidecar's layer) holds
    echo "suite=$SUITE arch=$ARCH path=$IMAGE_PATH"
    case $1 in
        pause) declare -f new_oci write_archive tags_of build_pause ;;
        osmo-task) echo "$TASK_TAG $TASK_PACKAGES"; task_aliases
                   declare -f debian_rootfs new_oci write_archive tags_of task_aliases build_osmo_task ;;
        sidecar-base) echo "$SIDECAR_BASE_PACKAGES"; declare -f debian_rootfs build_sidecar_base ;;
        sidecar-deps) echo "base=$(key_of sidecar-base)"; dependencies_text
                      declare -f new_oci in_chroot host_pip pyproject_list build_sidecar_deps ;;
        osmo-sidecar) echo "deps=$(key_of sidecar-deps) ${PROJECT_PATHS[*]}"
                      declare -f write_archive tags_of host_pip project_files project_version build_osmo_sidecar
                      (cd "$ROOT" && project_files | tr '\n' '\0' | xargs -0 -r sha256sum) ;;
    esac
}

key_of() { recipe_of "$1" | hash_text; }

declare -A KEY
for name in "${requested[@]}"; do KEY[$name]=$(key_of "$name"); done
if [ "$keys_only" = 1 ]; then
    for name in "${requested[@]}"; do echo "$name ${KEY[$name]}"; done
    exit 0
fi

# ---------------------------------------------------------------------------------------- the manifest
MANIFEST=(python3 "$ROOT/tests/helpers/images.py")  # keeps the manifests; the tests read them with it too

manifest_current() {  # manifest_current NAME KEY: OUT holds this image with this key
    [ -z "$("${MANIFEST[@]}" stale "$OUT" "$1=$2")" ]
}

publish() {  # publish NAME ENTRY: OUT/NAME.tar is the cached archive (hard link, else copy); manifest updated
    local name=$1 entry=$2
    mkdir -p "$OUT"
    if [ ! "$entry/$name.tar" -ef "$OUT/$name.tar" ]; then
        ln -f "$entry/$name.tar" "$OUT/.$name.tar.tmp" 2>/dev/null || cp "$entry/$name.tar" "$OUT/.$name.tar.tmp"
        mv -f "$OUT/.$name.tar.tmp" "$OUT/$name.tar"
    fi
    "${MANIFEST[@]}" publish "$OUT" "$entry"
}

prune() {  # prune NAME: keep the two newest cache entries of NAME
    local name=$1
    # shellcheck disable=SC2012  # entry names are NAME-<16 hex digits>
    ls -dt "$CACHE/$name"-???????????????? 2>/dev/null | tail -n +3 | while read -r old; do rm -rf "$old"; done
}

# -------------------------------------------------------------------------------------------- warm path
pairs=()
for name in "${requested[@]}"; do pairs+=("$name=${KEY[$name]}"); done
mapfile -t stale < <("${MANIFEST[@]}" stale "$OUT" "${pairs[@]}")
for name in "${requested[@]}"; do
    case " ${stale[*]} " in
        *" $name "*) ;;
        *) echo "build-images: $name up to date in $OUT/$name.tar (key ${KEY[$name]})" ;;
    esac
done
[ ${#stale[@]} -gt 0 ] || exit 0

if [ "$(id -u)" != 0 ]; then
    echo "build-images: building needs root; running with sudo"
    exec sudo env XDG_CACHE_HOME="${CACHE%/osmo-images}" OSMO_IMAGES_OWNER="$(id -u):$(id -g)" \
        OSMO_IMAGES_MIRROR="$MIRROR" PATH="$PATH" bash "$SCRIPT" --out "$OUT" "${stale[@]}"
fi

# ----------------------------------------------------------------------------------------------- builds
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # one build at a time per cache
work=""
trap '[ -z "$work" ] || rm -rf "$work"' EXIT

ensure_tools() {
    local missing=() tool
    for tool in mmdebstrap:mmdebstrap umoci:umoci skopeo:skopeo go:golang-go; do
        command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
    done
    [ ${#missing[@]} -eq 0 ] || bash "$ROOT/.ci/apt-install.sh" build-images "${missing[@]}"
}

STAGE=""
cached_stage() {  # cached_stage sidecar-base|sidecar-deps: sets STAGE to its cache folder, building it if missing
    local name=$1 start
    STAGE=$CACHE/$name-$(key_of "$name")
    [ ! -f "$STAGE/done" ] || return 0
    local base=""
    if [ "$name" = sidecar-deps ]; then
        cached_stage sidecar-base
        base=$STAGE/layer.tar
        STAGE=$CACHE/$name-$(key_of "$name")
    fi
    start=$(date +%s)
    mkdir -p "$work/$name"
    case $name in
        sidecar-base) build_sidecar_base "$work/$name" ;;
        sidecar-deps) build_sidecar_deps "$work/$name" "$base" ;;
    esac
    touch "$work/$name/done"
    rm -rf "$STAGE"
    mv "$work/$name" "$STAGE"
    echo "build-images: sidecar layer ${name#sidecar-} built in $(( $(date +%s) - start )) s ($(du -sh "$STAGE" | cut -f1))"
    prune "$name"
}

ENTRY=""
build_entry() {  # build_entry NAME KEY: sets ENTRY to the image's cache folder, building it first if missing
    local name=$1 key=$2 start seconds tags
    ENTRY=$CACHE/$name-$key
    if [ -f "$ENTRY/image.json" ] && [ -f "$ENTRY/$name.tar" ]; then return; fi
    ensure_tools
    start=$(date +%s)
    work=$(mktemp -d "${TMPDIR:-/tmp}/osmo-images.XXXXXX")
    mkdir "$work/entry"
    mapfile -t tags < <(tags_of "$name" "$key")
    case $name in
        pause) build_pause "$work" "$work/entry/$name.tar" "${tags[@]}" ;;
        osmo-task) build_osmo_task "$work" "$work/entry/$name.tar" "${tags[@]}" ;;
        osmo-sidecar) cached_stage sidecar-deps
                      build_osmo_sidecar "$work" "$work/entry/$name.tar" "$STAGE" "${tags[@]}" ;;
    esac
    seconds=$(( $(date +%s) - start ))
    "${MANIFEST[@]}" describe "$work/entry" "$name" "$key" "$seconds" "${tags[@]}"
    rm -rf "$ENTRY"
    mv "$work/entry" "$ENTRY"
    rm -rf "$work"
    work=""
    echo "build-images: $name built in $seconds s ($(du -h "$ENTRY/$name.tar" | cut -f1))"
    prune "$name"
}

total_start=$(date +%s)
for name in "${stale[@]}"; do
    if manifest_current "$name" "${KEY[$name]}"; then continue; fi  # another run did it while we waited
    build_entry "$name" "${KEY[$name]}"
    publish "$name" "$ENTRY"
    echo "build-images: $name -> $OUT/$name.tar ($(tags_of "$name" "${KEY[$name]}" | paste -sd' '))"
done
if [ -n "${OSMO_IMAGES_OWNER:-}" ]; then
    # The archives, manifests and layouts go back to the user; the unpacked rootfs keeps its owners (root,
    # 10001), which the next build's layer is made from.
    find "$CACHE" "$OUT" -path "$CACHE/sidecar-deps-*/rootfs" -prune -o -print0 | xargs -0 chown "$OSMO_IMAGES_OWNER"
fi
echo "build-images: done in $(( $(date +%s) - total_start )) s; manifest: $OUT/manifest.json"
