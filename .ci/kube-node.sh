#!/usr/bin/env bash
# A real one-node Kubernetes on this machine for people (docs/KUBE-TEST-SERVERS.md, docs/KUBERNETES.md):
#   bash .ci/kube-node.sh up [--alias IMAGE]...   start it (etcd, control plane, containerd, a real kubelet,
#                                                 a host-only bridge with cluster DNS, the test images, an S3
#                                                 store the pods reach, a pool config) and print the `export`
#                                                 lines to paste; --alias tags the test task image under
#                                                 another name (repeatable)
#   bash .ci/kube-node.sh down                    stop it, leaving no process, mount, network namespace,
#                                                 bridge, cgroup, iptables rule or folder behind
#   bash .ci/kube-node.sh status                  print the export lines of the running node again
# Needs root, the binaries of .ci/install-kube.sh and the project's virtualenv (.venv, made by .ci/run).
# The same harness as the test suite's: tests/servers/kubenode.py (one implementation), run by
# tests/servers/kubenode_cli.py. Exit codes: 0 done, 1 failed or something left behind, 2 bad arguments.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY="$ROOT/.venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "kube-node: no virtualenv at $ROOT/.venv; make it with:" \
         "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[test]'" >&2
    exit 1
fi
cd "$ROOT/tests"
exec "$PY" -m servers.kubenode_cli "$@"
