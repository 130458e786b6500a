#!/usr/bin/env bash
# Check the local pool's GPU assignment on a real GPU machine (issue 14; docs/WORKFLOWS.md "GPUs").
#
#   bash scripts/gpu-check.sh            # tasks as host processes
#   OSMO_ENGINE=podman bash scripts/gpu-check.sh   # tasks in containers (needs the NVIDIA CDI spec:
#                                                  # nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)
#
# Needs nvidia-smi and at least two GPUs, and osmo on PATH (or OSMO="python -m osmo_store.cli.main").
# Uses a private state directory and store under a temporary folder, removed at the end; the machine's
# own workflows are not touched. Checks, printing PASS or FAIL for each (exit 1 if one fails):
#   1. two 1-GPU tasks running at once are told different GPUs (NVIDIA_VISIBLE_DEVICES and
#      CUDA_VISIBLE_DEVICES), and nvidia-smi inside each task, restricted to them, names its GPU;
#   2. with every GPU but one taken, a 2-GPU group waits (SCHEDULING) and says why, and runs once
#      the GPUs are given back.
set -euo pipefail

OSMO=${OSMO:-osmo}
IMAGE=${IMAGE:-nvidia/cuda:12.4.1-base-ubuntu22.04}
command -v nvidia-smi >/dev/null || { echo "gpu-check: nvidia-smi not found (install the NVIDIA driver)" >&2; exit 2; }
count=$(nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits | grep -c .)
if [ "$count" -lt 2 ]; then
    echo "gpu-check: this machine has $count GPU(s); the checks need at least 2" >&2
    exit 2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/osmo-gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
export OSMO_STATE_DIR=$work/state OSMO_STORE=$work/store OSMO_CACHE_DIR=$work/cache OSMO_POOL_CONFIG=$work/pool.yaml
export OSMO_ENGINE=${OSMO_ENGINE:-none}
printf 'grace_period: 2s\n' > "$work/pool.yaml"
failed=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failed=1; }
osmo() { $OSMO "$@"; }

spec() {  # spec NAME GPUS SECONDS: one task asking for GPUS GPUs that shows them, then sleeps
    cat > "$work/$1.yaml" <<SPEC
workflow:
  name: $1
  resources:
    default: {gpu: $2}
  tasks:
  - name: show
    image: $IMAGE
    command: [sh, -c, 'echo "seen: \$CUDA_VISIBLE_DEVICES"; nvidia-smi -L | grep -F "\${CUDA_VISIBLE_DEVICES%%,*}" || true; sleep $3']
SPEC
    echo "$work/$1.yaml"
}

seen() {  # the UUIDs a workflow's task was told, once it printed them
    for _ in $(seq 1 300); do
        line=$(osmo workflow logs "$1" --task show 2>/dev/null | grep '^seen: ' || true)
        [ -n "$line" ] && { echo "${line#seen: }"; return; }
        sleep 0.2
    done
    echo "(nothing)"
}

echo "GPUs of this machine:"
nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits
a=$(osmo workflow submit "$(spec one-a 1 20)")
b=$(osmo workflow submit "$(spec one-b 1 20)")
ga=$(seen "$a"); gb=$(seen "$b")
echo "$a was told: $ga"; echo "$b was told: $gb"
if [ "$ga" != "(nothing)" ] && [ "$gb" != "(nothing)" ] && [ "$ga" != "$gb" ]; then
    pass "two 1-GPU tasks at once see different GPUs"
else
    fail "two 1-GPU tasks at once: $ga / $gb"
fi
osmo workflow logs "$a" --task show | grep -F "GPU " | sed 's/^/  /' || true
osmo resource list
osmo workflow cancel "$a" >/dev/null & osmo workflow cancel "$b" >/dev/null; wait

hold=$(osmo workflow submit "$(spec hold $((count - 1)) 60)")
seen "$hold" >/dev/null
two=$(osmo workflow submit "$(spec two 2 0)")
for _ in $(seq 1 60); do  # until the group says why it waits (the supervisor tries every 0.2 s)
    state=$(osmo workflow query "$two")
    grep -q "waiting for the pool" <<<"$state" && break
    sleep 0.5
done
echo "$state" | sed 's/^/  /'
# (here-strings, not `echo | grep -q`: with pipefail an echo that grep -q's early exit cuts off fails the test)
if grep -q "SCHEDULING" <<<"$state" && grep -q "waiting for the pool: needs 2 GPUs, 1 free" <<<"$state"; then
    pass "a 2-GPU group waits while $((count - 1)) of $count GPUs are taken, and says why"
else
    fail "the 2-GPU group did not wait with a reason"
fi
osmo workflow cancel "$hold" >/dev/null
status=$(for _ in $(seq 1 150); do
    s=$(osmo workflow query "$two" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    case $s in COMPLETED|FAILED*) echo "$s"; break;; esac; sleep 0.4; done)
told=$(seen "$two")
if [ "$status" = COMPLETED ] && [ "$(echo "$told" | tr ',' '\n' | wc -l)" -eq 2 ]; then
    pass "the 2-GPU group ran once the GPUs were free: $told"
else
    fail "the 2-GPU group ended $status, told: $told"
fi
exit $failed
