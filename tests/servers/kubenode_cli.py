"""``.ci/kube-node.sh``: the real one-node Kubernetes (``kubenode.py``) for people, one command.

Run from the ``tests`` folder with the project's virtualenv (the script does that)::

    python -m servers.kubenode_cli up [--alias IMAGE]...   start it in the background, print the exports
    python -m servers.kubenode_cli down                    stop it; exit 1 if anything of it is left
    python -m servers.kubenode_cli status                  print the exports of the running node

``up`` builds the images first (``.ci/build-images.sh``, cached), then starts a keeper process (``serve``,
its own session, log in ``/tmp/osmo-kube-node.log``) that runs the node, the S3 store the pods use and
the namespace ``default`` with the store's Secret, writes a pool config into the node's folder and the
state file ``/tmp/osmo-kube-node.json`` (owner-only; ``OSMO_KUBE_NODE_STATE`` moves it), and stays until
``down`` sends it SIGTERM. ``--alias IMAGE`` tags the test task image under one more name (repeatable).
The printed ``AWS_*`` values are the fixed credentials of the test S3 server (moto), not secrets.
Exit codes: 0 done, 1 the node did not start or something was left behind, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import yaml

from .kubenode import KubeNode, Image, leftovers, read_info
from .kube import write_private

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATE = os.environ.get("OSMO_KUBE_NODE_STATE") or "/tmp/osmo-kube-node.json"
LOG = os.path.splitext(STATE)[0] + ".log"
NAMESPACE = "default"
UP_TIMEOUT = 300.0
DOWN_TIMEOUT = 60.0


def _state() -> dict | None:
    try:
        with open(STATE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if _keeper_alive(state.get("pid")) else None


def _keeper_alive(pid) -> bool:
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            return b"servers.kubenode_cli\0serve" in f.read()
    except (OSError, TypeError, ValueError):
        return False


def _archives() -> dict[str, Image]:
    """Build (or find cached) the images, and read their manifest."""
    from helpers.images import default_output, read_manifest

    done = subprocess.run(["bash", os.path.join(ROOT, ".ci", "build-images.sh")], stdout=sys.stderr,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"kube-node: bash .ci/build-images.sh failed ({done.returncode})")
    return {name: Image(name, str(a.path), a.tags) for name, a in read_manifest(default_output()).items()}


def exports(node: KubeNode) -> list[str]:
    values = {"KUBECONFIG": node.kubeconfig, "OSMO_POOL_CONFIG": os.path.join(node.dir, "pool.yaml"),
              "OSMO_STORE": node.store_url, **node.store_env()}
    return [f"export {k}={v}" for k, v in values.items()]


def serve(aliases: list[str]) -> int:
    """The keeper: run the node until SIGTERM or SIGINT."""
    node = KubeNode(_archives_from_env(), tuple(aliases))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    try:
        node.start()
        node.prepare_namespace(NAMESPACE)
        with open(os.path.join(node.dir, "pool.yaml"), "w") as f:
            yaml.safe_dump({"runner": "kubernetes", "grace_period": "5s",
                            "kubernetes": node.pool_section(NAMESPACE)}, f, sort_keys=False)
        write_private(STATE, json.dumps({"pid": os.getpid(), "dir": node.dir, "exports": exports(node),
                                         "timings": node.timings, "seconds": node.start_seconds}))
        print(f"node up in {node.start_seconds:.1f} s: {json.dumps(node.timings)}", flush=True)
        while all(p.poll() is None for p in node.procs.values()):
            time.sleep(1)
        print("a daemon exited:\n" + node.log_tails(), file=sys.stderr, flush=True)
        return 1
    finally:
        node.stop()
        try:
            if json.load(open(STATE)).get("pid") == os.getpid():
                os.unlink(STATE)
        except (OSError, ValueError):
            pass


def _archives_from_env() -> dict[str, Image]:
    raw = json.loads(os.environ["OSMO_KUBE_NODE_IMAGES"])
    return {name: Image(name, entry["path"], tuple(entry["tags"])) for name, entry in raw.items()}


def up(aliases: list[str]) -> int:
    state = _state()
    if state:
        print(f"# a node is already up (keeper {state['pid']}, {state['dir']})", file=sys.stderr)
        print("\n".join(state["exports"]))
        return 0
    t0 = time.monotonic()
    images = _archives()
    env = {**os.environ, "OSMO_KUBE_NODE_IMAGES": json.dumps(
        {name: {"path": i.path, "tags": list(i.tags)} for name, i in images.items()})}
    t1 = time.monotonic()
    with open(LOG, "ab") as log:
        keeper = subprocess.Popen([sys.executable, "-m", "servers.kubenode_cli", "serve", *sum(
            (["--alias", a] for a in aliases), [])], cwd=os.path.join(ROOT, "tests"), env=env, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        state = _state()
        if state and state["pid"] == keeper.pid:
            print(f"# node up in {time.monotonic() - t1:.1f} s (images checked in {t1 - t0:.1f} s); "
                  f"stop it with: bash .ci/kube-node.sh down", file=sys.stderr)
            print("\n".join(state["exports"]))
            return 0
        if keeper.poll() is not None:
            break
        time.sleep(0.2)
    else:
        keeper.terminate()
    keeper.wait()
    with open(LOG, errors="replace") as f:
        tail = f.readlines()[-30:]
    print(f"kube-node: the node did not start (see {LOG}):\n{''.join(tail)}", file=sys.stderr)
    return 1


def down() -> int:
    t0 = time.monotonic()
    try:
        with open(STATE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = None
    info = read_info(state["dir"]) if state else {}
    if state and _keeper_alive(state.get("pid")):
        os.kill(state["pid"], signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT
        while _keeper_alive(state["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _keeper_alive(state["pid"]):
            os.kill(state["pid"], signal.SIGKILL)
            time.sleep(0.5)
    if state and info and os.path.isdir(state["dir"]):
        KubeNode.remove_dir(state["dir"])  # a keeper that died without stopping the node
    KubeNode._remove_stale_dirs()
    try:
        os.unlink(STATE)
    except OSError:
        pass
    left = leftovers(info) if info else []
    if left:
        print("kube-node: left behind: " + "; ".join(left), file=sys.stderr)
        return 1
    print(f"# node down in {time.monotonic() - t0:.1f} s, nothing left" if state else "# no node was up",
          file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bash .ci/kube-node.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "serve"])
    parser.add_argument("--alias", action="append", default=[], metavar="IMAGE",
                        help="tag the test task image under this name too (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.alias)
    if args.command == "serve":
        return serve(args.alias)
    if args.command == "down":
        return down()
    state = _state()
    if not state:
        print("# no node is up", file=sys.stderr)
        return 1
    print("\n".join(state["exports"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
