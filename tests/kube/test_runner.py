"""``osmo workflow submit --runner kubernetes`` against a real kube-apiserver, the test playing the
kubelet: it binds the runner's pods to a node and patches their container states. Success across
groups, a failing task and FAILED_UPSTREAM, the lead ending its group, RESCHEDULE, an upload
failure, cancel, the exec and queue timeouts, and an API server restart in the middle of a run."""

from __future__ import annotations

import textwrap
import threading
import time
from datetime import datetime, timezone

import pytest
import yaml
from kubernetes import client

from run.conftest import Osmo

TERMINAL = {"COMPLETED", "FAILED", "FAILED_EXEC_TIMEOUT", "FAILED_QUEUE_TIMEOUT", "FAILED_CANCELED"}


@pytest.fixture
def kosmo(tmp_path, kube_server, kube_namespace):
    """``osmo workflow`` with a pool whose kubernetes: section names the test namespace; a thread
    plays the kubelet's part of pod deletion (a pod marked for deletion is removed)."""
    osmo = Osmo(tmp_path, KUBECONFIG=kube_server.kubeconfig)
    osmo.pool(grace_period="1s", kubernetes={"namespace": kube_namespace, "scheduler": "none", "supervisor": "local",
                                             "sidecar_image": "osmo-sidecar:test", "store": "s3://bucket/osmo"})
    osmo.namespace = kube_namespace
    osmo.core = client.CoreV1Api(kube_server.api_client())
    stop = threading.Event()

    def reap() -> None:
        core = client.CoreV1Api(kube_server.api_client())
        while not stop.wait(0.2):
            try:
                for pod in core.list_namespaced_pod(kube_namespace).items:
                    if pod.metadata.deletion_timestamp is not None:
                        core.delete_namespaced_pod(pod.metadata.name, kube_namespace, grace_period_seconds=0)
            except Exception:  # noqa: BLE001 - the API server may be restarting; try again
                continue

    reaper = threading.Thread(target=reap, daemon=True)
    reaper.start()
    yield osmo
    stop.set()
    reaper.join(5)


def spec_file(tmp_path, text: str) -> str:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def pods(osmo, workflow_id: str) -> dict[str, client.V1Pod]:
    found = osmo.core.list_namespaced_pod(osmo.namespace, label_selector=f"osmo.workflow={workflow_id}").items
    return {p.metadata.labels["osmo.task"] + "#" + p.metadata.labels["osmo.attempt"]: p for p in found
            if p.metadata.deletion_timestamp is None}


def wait_pod(osmo, workflow_id: str, key: str, timeout: float = 30) -> client.V1Pod:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pods(osmo, workflow_id).get(key)
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no pod {key} of {workflow_id}: {sorted(pods(osmo, workflow_id))}")


def wait_status(osmo, workflow_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = osmo.query(workflow_id)
        if row["status"] in TERMINAL:
            return row
        time.sleep(0.2)
    raise AssertionError(f"{workflow_id} did not end: {osmo.query(workflow_id)}")


def task_map(row: dict) -> dict[str, dict]:
    return {t["name"]: t for g in row["groups"] for t in g["tasks"]}


def _state(code: int | None, message: str = "") -> dict:
    now = datetime.now(timezone.utc).isoformat()
    if code is None:
        return {"running": {"startedAt": now}}
    return {"terminated": {"exitCode": code, "message": message, "startedAt": now, "finishedAt": now}}


def kubelet(osmo, pod: client.V1Pod, *, init: int | None = 0, task: int | None = 0, sidecar: int | None = 0,
            sidecar_message: str = "", bind: bool = True) -> None:
    """Play the kubelet: bind the pod to a node, then report its containers' states."""
    name = pod.metadata.name
    pod = osmo.core.read_namespaced_pod(name, osmo.namespace)
    if bind and not pod.spec.node_name:
        osmo.core.create_namespaced_pod_binding(name, osmo.namespace, client.V1Binding(
            metadata=client.V1ObjectMeta(name=name), target=client.V1ObjectReference(kind="Node", name="node-1")),
            _preload_content=False)
    statuses = [{"name": "task", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                 "state": _state(task) if task is not None or init == 0 else {"waiting": {"reason": "PodInitializing"}}},
                {"name": "osmo-sidecar", "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                 "state": _state(sidecar, sidecar_message) if sidecar is not None else _state(None)}]
    done = task is not None and sidecar is not None
    phase = "Running"
    if init not in (0, None):
        phase = "Failed"
    elif done:
        phase = "Succeeded" if task == 0 and sidecar == 0 else "Failed"
    body = {"status": {"phase": phase, "initContainerStatuses": [
        {"name": "osmo-download", "image": "x", "imageID": "", "ready": init == 0, "restartCount": 0,
         "state": _state(init, "download failed: no such dataset" if init else "")}],
        "containerStatuses": statuses if init == 0 else []}}
    osmo.core.patch_namespaced_pod_status(name, osmo.namespace, body)


TWO_GROUPS = """\
    workflow:
      name: kpipe
      groups:
      - name: sim
        tasks:
        - name: simulate
          lead: true
          image: python:3.11-slim
          command: [sh, -c, "echo episodes > {{output}}/data.txt"]
      - name: learn
        tasks:
        - name: train
          lead: true
          image: python:3.11-slim
          command: [sh, -c, "cat {{input:0}}/data.txt"]
          inputs:
          - task: simulate
    """


def test_a_two_group_workflow_completes_and_leaves_nothing(kosmo, tmp_path):
    wf = kosmo.submit(spec_file(tmp_path, TWO_GROUPS), "--runner", "kubernetes", wait=False)
    sim = wait_pod(kosmo, wf, "simulate#1")
    assert "train#1" not in pods(kosmo, wf)  # the second group waits for the first
    main = sim.spec.containers[0]
    assert main.command[-1].endswith("/osmo/data/output/data.txt") or "/osmo/data/output" in " ".join(main.command)
    kubelet(kosmo, sim, task=None, sidecar=None)
    time.sleep(0.5)
    assert kosmo.query(wf)["groups"][0]["status"] == "RUNNING"
    live = kosmo("logs", wf, "--task", "simulate").out  # while the pod runs (no kubelet here: no live lines)
    assert "of task simulate" in live and "container task" not in live
    kubelet(kosmo, sim)
    train = wait_pod(kosmo, wf, "train#1")
    assert "/osmo/data/input/0/data.txt" in " ".join(train.spec.containers[0].command)
    kubelet(kosmo, train)
    row = wait_status(kosmo, wf)
    assert row["status"] == "COMPLETED", row
    assert {n: t["status"] for n, t in task_map(row).items()} == {"simulate": "COMPLETED", "train": "COMPLETED"}
    log = kosmo("logs", wf, "--task", "simulate").out  # the pod's containers' logs, copied at the end
    assert "pod kpipe" in log and "container task" in log and "container osmo-sidecar" in log
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (pods(kosmo, wf) or kosmo.core.list_namespaced_secret(
            kosmo.namespace, label_selector=f"osmo.workflow={wf}").items):
        time.sleep(0.2)
    assert not pods(kosmo, wf)
    assert not kosmo.core.list_namespaced_service(kosmo.namespace, label_selector=f"osmo.workflow={wf}").items


def test_a_failing_task_fails_its_group_and_the_ones_downstream(kosmo, tmp_path):
    wf = kosmo.submit(spec_file(tmp_path, TWO_GROUPS), "--runner", "kubernetes", wait=False)
    kubelet(kosmo, wait_pod(kosmo, wf, "simulate#1"), task=3)
    row = wait_status(kosmo, wf)
    tasks = task_map(row)
    assert row["status"] == "FAILED" and tasks["simulate"]["status"] == "FAILED"
    assert tasks["simulate"]["exit_code"] == 3 and tasks["train"]["status"] == "FAILED_UPSTREAM"
    assert tasks["train"]["exit_code"] == 3000 and row["exit_code"] == 3000


def test_data_failures_carry_osmos_codes(kosmo, tmp_path):
    wf = kosmo.submit(spec_file(tmp_path, TWO_GROUPS), "--runner", "kubernetes", wait=False)
    kubelet(kosmo, wait_pod(kosmo, wf, "simulate#1"), sidecar=1, sidecar_message="[osmo-sidecar] upload: disk full")
    tasks = task_map(wait_status(kosmo, wf))
    assert tasks["simulate"]["exit_code"] == 2012 and "disk full" in tasks["simulate"]["reason"]
    wf = kosmo.submit(spec_file(tmp_path, TWO_GROUPS), "--runner", "kubernetes", wait=False)
    kubelet(kosmo, wait_pod(kosmo, wf, "simulate#1"), init=1, task=None, sidecar=None)
    tasks = task_map(wait_status(kosmo, wf))
    assert tasks["simulate"]["exit_code"] == 2010 and "no such dataset" in tasks["simulate"]["reason"]


LEAD_AND_WORKER = """\
    workflow:
      name: kgang
      groups:
      - name: gang
        tasks:
        - name: server
          lead: true
          image: python:3.11-slim
          command: [sh, -c, "serve"]
          exitActions: {RESCHEDULE: "42"}
        - name: client
          image: python:3.11-slim
          command: [sh, -c, "ping {{host:server}}"]
    """


def test_the_lead_ending_deletes_the_other_pods(kosmo, tmp_path):
    wf = kosmo.submit(spec_file(tmp_path, LEAD_AND_WORKER), "--runner", "kubernetes", wait=False)
    server, client_pod = wait_pod(kosmo, wf, "server#1"), wait_pod(kosmo, wf, "client#1")
    assert client_pod.spec.subdomain == server.spec.subdomain and server.spec.hostname == "server"
    assert f"server.{server.spec.subdomain}" in " ".join(client_pod.spec.containers[0].command)
    kubelet(kosmo, client_pod, task=None, sidecar=None)
    kubelet(kosmo, server)
    row = wait_status(kosmo, wf)
    assert row["status"] == "COMPLETED", row
    assert "client#1" not in pods(kosmo, wf)


def test_reschedule_makes_a_new_pod(kosmo, tmp_path):
    wf = kosmo.submit(spec_file(tmp_path, LEAD_AND_WORKER), "--runner", "kubernetes", wait=False)
    kubelet(kosmo, wait_pod(kosmo, wf, "client#1"), task=None, sidecar=None)
    kubelet(kosmo, wait_pod(kosmo, wf, "server#1"), task=42)
    server2 = wait_pod(kosmo, wf, "server#2")  # a lead's RESCHEDULE restarts the whole group
    client2 = wait_pod(kosmo, wf, "client#2")
    kubelet(kosmo, client2, task=None, sidecar=None)
    kubelet(kosmo, server2)
    row = wait_status(kosmo, wf)
    assert row["status"] == "COMPLETED"
    assert {n: len(t["attempts"]) for n, t in task_map(row).items()} == {"server": 2, "client": 2}


def test_cancel_deletes_everything(kosmo, tmp_path):
    wf = kosmo.submit(spec_file(tmp_path, LEAD_AND_WORKER), "--runner", "kubernetes", wait=False)
    kubelet(kosmo, wait_pod(kosmo, wf, "server#1"), task=None, sidecar=None)
    kosmo("cancel", wf)
    row = wait_status(kosmo, wf)
    assert row["status"] == "FAILED_CANCELED"
    assert not kosmo.core.list_namespaced_secret(kosmo.namespace, label_selector=f"osmo.workflow={wf}").items


def test_exec_and_queue_timeouts(kosmo, tmp_path):
    spec = yaml.safe_load(textwrap.dedent(LEAD_AND_WORKER))
    spec["workflow"]["timeout"] = {"exec_timeout": "2s", "queue_timeout": "60s"}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    wf = kosmo.submit(str(path), "--runner", "kubernetes", wait=False)
    for key in ("server#1", "client#1"):
        kubelet(kosmo, wait_pod(kosmo, wf, key), task=None, sidecar=None)
    assert wait_status(kosmo, wf)["status"] == "FAILED_EXEC_TIMEOUT"
    spec["workflow"]["timeout"] = {"queue_timeout": "2s"}
    path.write_text(yaml.safe_dump(spec))
    wf = kosmo.submit(str(path), "--runner", "kubernetes", wait=False)  # nobody binds its pods
    row = wait_status(kosmo, wf)
    assert row["status"] == "FAILED_QUEUE_TIMEOUT", row
    assert "queue timeout" in row["groups"][0]["reason"]


def test_an_api_server_restart_in_the_middle_of_a_run(kosmo, tmp_path, kube_server):
    wf = kosmo.submit(spec_file(tmp_path, TWO_GROUPS), "--runner", "kubernetes", wait=False)
    sim = wait_pod(kosmo, wf, "simulate#1")
    kubelet(kosmo, sim, task=None, sidecar=None)
    kube_server.restart_apiserver(graceful=False)
    kosmo.core = client.CoreV1Api(kube_server.api_client())
    kubelet(kosmo, wait_pod(kosmo, wf, "simulate#1"))
    kubelet(kosmo, wait_pod(kosmo, wf, "train#1"))
    assert wait_status(kosmo, wf)["status"] == "COMPLETED"


def test_submit_without_a_kubernetes_pool_is_one_line(tmp_path):
    osmo = Osmo(tmp_path)
    result = osmo("submit", spec_file(tmp_path, TWO_GROUPS), "--runner", "kubernetes", check=False)
    assert result.code != 0 and "kubernetes" in result.err and "Traceback" not in result.err


def test_the_pool_config_can_make_kubernetes_the_default_and_bad_sections_are_one_line(kosmo, tmp_path):
    pool = yaml.safe_load(open(kosmo.env["OSMO_POOL_CONFIG"]))
    kosmo.pool(**pool, runner="kubernetes")
    wf = kosmo.submit(spec_file(tmp_path, TWO_GROUPS), wait=False)  # no --runner
    assert wait_pod(kosmo, wf, "simulate#1").spec.subdomain  # it made a pod: it runs on the cluster
    kosmo("cancel", wf)
    kosmo.pool(**{**pool, "kubernetes": {**pool["kubernetes"], "scheduler": "slurm"}})
    result = kosmo("submit", spec_file(tmp_path, TWO_GROUPS), "--runner", "kubernetes", check=False)
    assert result.code != 0 and "kubernetes.scheduler" in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
