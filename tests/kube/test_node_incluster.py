"""A workflow whose supervisor runs in the cluster (``supervisor: cluster``) on the real node: it runs on
without the submitting machine, and any machine with the kubeconfig and the pool config sees it.

The submitting ``osmo`` returns once the record and the supervisor pod exist; its state folder is then
wiped. A second ``osmo`` with an empty state folder (a fresh HOME) lists the workflow, waits for it, queries
it, reads its logs (the credential masked) and its output dataset, and cancels another workflow. The
supervisor pod reaches the API server through the node's relay on the bridge's gateway and authenticates
with the token of the ServiceAccount that deploy/rbac/osmo-supervisor.yaml makes: the Role in that file is
what it may do, and the API server enforces it (RBAC)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import pytest
from kubernetes import client

from helpers.waiting import wait_for
from kube.node_osmo import NodeOsmo
from run.conftest import tasks_of

NAMESPACE = "osmo-incluster"
TOKEN = "tok-incluster-7d1e0b"  # a credential's value: never in a log

SPEC = """\
    workflow:
      name: kincluster
      groups:
      - name: make
        tasks:
        - name: produce
          lead: true
          image: ubuntu:24.04
          credentials:
            robot: {ROBOT_TOKEN: token}
          command: [sh, -c]
          args: ['echo "token=$ROBOT_TOKEN"; sleep 8; echo "made in the cluster" > {{output}}/a.txt']
      - name: consume
        tasks:
        - name: use
          lead: true
          image: ubuntu:24.04
          inputs: [{task: produce}]
          command: [sh, -c]
          args: ['echo "got: $(cat {{input:0}}/a.txt)"; cp {{input:0}}/a.txt {{output}}/b.txt']
    """
SLEEPER = """\
    workflow:
      name: kinclustersleep
      tasks:
      - name: sleeper
        image: ubuntu:24.04
        command: [sh, -c, "echo sleeping; sleep 300"]
    """


def _osmo(root, node, store) -> NodeOsmo:
    osmo = NodeOsmo(root, KUBECONFIG=node.kubeconfig, **node.store_env(), OSMO_STORE=store,
                    OSMO_TEST_ROBOT_TOKEN=TOKEN)
    osmo.pool(grace_period="2s", runner="kubernetes", credentials={"robot": {"env": {"token": "OSMO_TEST_ROBOT_TOKEN"}}},
              kubernetes={**node.pool_section(NAMESPACE), "store": store, "supervisor": "cluster"})
    return osmo


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, kube_node):
    kube_node.prepare_namespace(NAMESPACE)
    store = kube_node.init_store(f"{kube_node.store_url}/incluster")
    root = tmp_path_factory.mktemp("incluster")
    submitter = _osmo(root / "laptop", kube_node, store)
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(SPEC))
    t0 = time.monotonic()
    workflow_id = submitter.submit(spec, wait=False)
    returned_after = time.monotonic() - t0
    assert not (submitter.root / "state").exists()  # nothing of it is kept on the submitting machine
    shutil.rmtree(submitter.root, ignore_errors=True)  # and the machine is gone: its config too
    other = _osmo(root / "elsewhere", kube_node, store)
    return kube_node, other, workflow_id, returned_after, root


def test_the_workflow_runs_on_without_the_submitting_machine(cluster_run):
    node, other, workflow_id, returned_after, _ = cluster_run
    assert returned_after < 60
    listed = {w["id"]: w for w in other("list", "--json").json()}
    assert workflow_id in listed and listed[workflow_id]["status"] in ("PENDING", "WAITING", "RUNNING")
    info = other.wait(workflow_id, 300)
    assert info["status"] == "COMPLETED", other.logs(workflow_id)
    assert info["runner"]["supervisor"] == "cluster" and info["runner"]["namespace"] == NAMESPACE
    tasks = tasks_of(info)
    assert tasks["produce"]["status"] == tasks["use"]["status"] == "COMPLETED"
    assert [(d["dataset"], d["version"]) for d in tasks["use"]["datasets_read"]] == [(f"{workflow_id}--produce", 1)]
    logs = other.logs(workflow_id)
    assert "produce | token=***" in logs and TOKEN not in logs
    assert "use | got: made in the cluster" in logs
    assert other("query", workflow_id).out.count("COMPLETED") >= 3  # the text view reads the record too
    assert "name: kincluster" in other("spec", workflow_id).out
    out = other.root / "download"
    other("dataset", "download", f"{workflow_id}--use", str(out), group="")
    assert (out / "b.txt").read_text() == "made in the cluster\n"
    core = client.CoreV1Api(node.api_client())
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"osmo.workflow={workflow_id}").items
    assert pods == []  # the task pods are gone; the supervisor's stays, Succeeded
    supervisor = core.read_namespaced_pod(info["runner"]["pod"], NAMESPACE)
    assert supervisor.status.phase == "Succeeded"
    with pytest.raises(client.ApiException):  # the credentials it was given are deleted at the end
        core.read_namespaced_secret(info["runner"]["pod"], NAMESPACE)


def test_the_web_ui_of_a_fresh_machine_shows_the_clusters_workflow_its_graph_and_masked_logs(cluster_run):
    """``osmo ui`` on the machine that did not submit: the list, the page and the logs come from the cluster's record."""
    from servers.osmo_ui import OsmoUiServer

    _, other, workflow_id, _, _ = cluster_run
    info = other.wait(workflow_id, 300)

    def get(server: OsmoUiServer, path: str) -> str:
        with urllib.request.urlopen(server.url + path, timeout=30) as response:
            return response.read().decode()

    with OsmoUiServer(other.env) as ui:
        listing = get(ui, "/workflows")
        shown = listing[listing.find("<main>"):]
        assert f'<tr data-id="{workflow_id}" data-status="COMPLETED" data-pool="kubernetes">' in listing, shown
        page = get(ui, f"/workflows/{workflow_id}")
        assert set(re.findall(r'<g class="task ok" data-task="([^"]+)"', page)) == set(tasks_of(info))
        assert "supervisor in the cluster" in page and 'data-from="make" data-to="consume"' in page
        lines = json.loads(get(ui, f"/api/workflows/{workflow_id}/logs"))["lines"]
        assert ["produce", 1, "task", "token=***"] in lines and ["use", 1, "task", "got: made in the cluster"] in lines
        assert TOKEN not in page and TOKEN not in json.dumps(lines)


def test_a_fresh_machine_cancels_a_workflow_running_in_the_cluster(cluster_run):
    node, other, _, _, root = cluster_run
    spec = root / "sleeper.yaml"
    spec.write_text(textwrap.dedent(SLEEPER))
    workflow_id = other.submit(spec, wait=False)
    follow = subprocess.Popen([sys.executable, "-m", "osmo_store.cli.main", "workflow", "logs", workflow_id,
                               "--follow"], env=other.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(follow.stdout), daemon=True)
    reader.start()
    wait_for(lambda: any("sleeper | sleeping" in line for line in seen), 180,
             "the running command's line in logs --follow", interval=0.5)  # live, while the pod runs
    third = _osmo(root / "third", node, other.env["OSMO_STORE"])
    done = third("cancel", workflow_id, "--json").json()
    assert done == {"id": workflow_id, "status": "FAILED_CANCELED"}
    assert follow.wait(30) == 0, follow.stderr.read()  # --follow ends with the workflow
    reader.join(10)
    assert sum("sleeper | sleeping" in line for line in seen) == 1, seen  # each line once
    assert third("cancel", workflow_id, check=False).code == 4  # already ended
    core = client.CoreV1Api(node.api_client())
    assert core.list_namespaced_pod(NAMESPACE, label_selector=f"osmo.workflow={workflow_id}").items == []
    missing = third("query", "kinclustersleep-99", check=False)
    assert missing.code == 3 and "did you mean" in missing.err
