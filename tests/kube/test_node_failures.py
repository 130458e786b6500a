"""Failure paths of ``--runner kubernetes`` on real pods (the real one-node cluster, ``kube_node``): a failing
task and FAILED_UPSTREAM, RESCHEDULE making a new pod, the exec timeout, the queue timeout of a group the
node cannot fit, cancel leaving no object, a memory limit exceeded (137), an input failure (2010), an
output failure (2012), the lead ending its group while the other tasks' outputs are still uploaded, and a
task container whose wrapper the node killed (no exit code recorded for the sidecar).

The workflows are submitted together when the first test needs them and run side by side on the node."""

from __future__ import annotations

import os
import signal
import textwrap
import time

import pytest
from kubernetes import client

from helpers.workerprocs import workers
from kube.node_osmo import NodeOsmo
from run.conftest import tasks_of

FAILING = """\
    workflow:
      name: kfail
      groups:
      - name: first
        tasks:
        - {name: breaks, lead: true, image: ubuntu:24.04, command: [sh, -c, "echo about to fail; exit 3"]}
      - name: second
        tasks:
        - {name: after, lead: true, image: ubuntu:24.04, command: [sh, -c, "cat {{input:0}}/x"], inputs: [{task: breaks}]}
    """
RESCHEDULE = """\
    workflow:
      name: kagain
      tasks:
      - {name: flaky, image: ubuntu:24.04, command: [sh, -c, "hostname; exit 42"], exitActions: {RESCHEDULE: "42"}}
    """
EXEC_TIMEOUT = """\
    workflow:
      name: kslow
      timeout: {exec_timeout: 6s}
      tasks:
      - name: sleeper
        image: ubuntu:24.04
        command: [sh, -c, "echo partial > {{output}}/partial.txt; echo sleeping; sleep 300"]
    """


def unplaceable(name: str, queue_timeout: str) -> str:
    """A workflow of one task asking more memory than the node has: it waits for the cluster until its
    queue timeout."""
    return f"""\
    workflow:
      name: {name}
      timeout: {{queue_timeout: {queue_timeout}}}
      resources:
        huge: {{cpu: 1, memory: 4000Gi}}
      tasks:
      - {{name: whale, image: ubuntu:24.04, resource: huge, command: [sh, -c, "echo never"]}}
    """


QUEUE_TIMEOUT = unplaceable("kbig", "5s")
CANCEL = """\
    workflow:
      name: kcancel
      tasks:
      - {name: forever, image: ubuntu:24.04, command: [sh, -c, "echo up; sleep 600"]}
    """
OOM = """\
    workflow:
      name: koom
      resources:
        small: {cpu: 1, memory: 64Mi}
      tasks:
      - name: hog
        image: ubuntu:24.04
        resource: small
        command: [python3, -c, "import time; print('allocating', flush=True); x = bytearray(512 * 2**20); time.sleep(5)"]
    """
INPUT_FAILURE = """\
    workflow:
      name: kinput
      tasks:
      - {name: reader, image: ubuntu:24.04, command: [sh, -c, "ls {{input:0}}"], inputs: [{dataset: {name: no_such_dataset}}]}
    """
OUTPUT_FAILURE = """\
    workflow:
      name: koutput
      tasks:
      - name: writer
        image: ubuntu:24.04
        command: [sh, -c, "echo data > {{output}}/a.txt"]
        outputs: [{url: "s3://no-such-bucket-here/out/"}]
    """
LEAD_ENDS = """\
    workflow:
      name: kleader
      groups:
      - name: gang
        tasks:
        - {name: boss, lead: true, image: ubuntu:24.04, command: [sh, -c, "sleep 4; echo boss done"]}
        - name: worker
          image: ubuntu:24.04
          command: [sh, -c, "echo worked > {{output}}/result.txt; trap 'echo worker got TERM; exit 0' TERM; while true; do sleep 0.2; done"]
    """
LOST_EXIT_CODE = """\
    workflow:
      name: klost
      tasks:
      - name: orphan
        image: ubuntu:24.04
        command: [sh, -c, "echo kept > {{output}}/kept.txt; echo osmo-lost-exit-code; sleep 600"]
    """
SPECS = {"failing": FAILING, "reschedule": RESCHEDULE, "exec_timeout": EXEC_TIMEOUT, "queue_timeout": QUEUE_TIMEOUT,
         "cancel": CANCEL, "oom": OOM, "input": INPUT_FAILURE, "output": OUTPUT_FAILURE, "lead": LEAD_ENDS,
         "lost": LOST_EXIT_CODE}
NAMESPACE = "osmo-failures"


class Failures:
    def __init__(self, root, node) -> None:
        node.prepare_namespace(NAMESPACE)
        store = node.init_store(f"{node.store_url}/failures")
        self.osmo = NodeOsmo(root, KUBECONFIG=node.kubeconfig, **node.store_env(), OSMO_STORE=store)
        self.osmo.pool(grace_period="2s", reschedule_limit=1,
                       kubernetes={**node.pool_section(NAMESPACE), "store": store})
        self.core = client.CoreV1Api(node.api_client())
        self.ids = {}
        for key, text in SPECS.items():
            path = root / f"{key}.yaml"
            path.write_text(textwrap.dedent(text))
            self.ids[key] = self.osmo.submit(path, "--runner", "kubernetes", wait=False)

    def ended(self, key: str, timeout: float = 180) -> tuple[dict, dict]:
        info = self.osmo.wait(self.ids[key], timeout)
        return info, tasks_of(info)

    def objects(self, workflow_id: str) -> list[str]:
        selector = f"osmo.workflow={workflow_id}"
        found = []
        for kind, lister in (("pod", self.core.list_namespaced_pod), ("service", self.core.list_namespaced_service),
                             ("secret", self.core.list_namespaced_secret)):
            found += [f"{kind} {o.metadata.name}" for o in lister(NAMESPACE, label_selector=selector).items]
        return found


@pytest.fixture(scope="module")
def failures(tmp_path_factory, kube_node) -> Failures:
    return Failures(tmp_path_factory.mktemp("node-failures"), kube_node)


def test_a_failing_task_fails_its_group_and_the_next_is_failed_upstream(failures):
    info, tasks = failures.ended("failing")
    assert info["status"] == "FAILED"
    assert tasks["breaks"]["status"] == "FAILED" and tasks["breaks"]["exit_code"] == 3
    assert tasks["after"]["status"] == "FAILED_UPSTREAM" and tasks["after"]["exit_code"] == 3000
    assert "breaks | about to fail" in failures.osmo.logs(info["id"])


def test_reschedule_makes_a_new_pod(failures):
    info, tasks = failures.ended("reschedule")
    flaky = tasks["flaky"]
    assert info["status"] == "FAILED" and len(flaky["attempts"]) == 2
    assert "RESCHEDULE limit (1) reached" in flaky["reason"]
    logs = failures.osmo.logs(info["id"])
    first, second = (f"{info['id']}-flaky-{n}" for n in (1, 2))
    assert f"pod {first} in namespace" in logs and f"pod {second} in namespace" in logs
    assert "flaky | flaky\n" in logs  # the command ran in each pod (its hostname is the task's name)


def test_the_exec_timeout_stops_the_task_and_still_uploads(failures):
    info, tasks = failures.ended("exec_timeout")
    assert info["status"] == "FAILED_EXEC_TIMEOUT" and tasks["sleeper"]["status"] == "FAILED_EXEC_TIMEOUT"
    logs = failures.osmo.logs(info["id"])
    assert "the task finished with exit code 143" in logs and "upload: 1 output uploaded" in logs


def test_a_group_the_node_cannot_fit_ends_with_the_queue_timeout(failures):
    info, tasks = failures.ended("queue_timeout")
    assert info["status"] == "FAILED_QUEUE_TIMEOUT" and tasks["whale"]["status"] == "FAILED_QUEUE_TIMEOUT"
    assert "queue timeout" in info["groups"][0]["reason"]


def test_a_group_waiting_for_the_cluster_says_why_in_query_and_in_osmo_ui(failures, tmp_path):
    """The scheduler's word on an unplaceable pod is the group's reason while it waits (as the local pool's)."""
    import re
    import urllib.request

    from servers.osmo_ui import OsmoUiServer

    spec = tmp_path / "wait.yaml"
    spec.write_text(textwrap.dedent(unplaceable("kwait", "10m")))
    osmo = failures.osmo
    workflow_id = osmo.submit(spec, "--runner", "kubernetes", wait=False)
    try:
        deadline = time.monotonic() + 120
        while "Insufficient memory" not in (osmo.query(workflow_id)["groups"][0]["reason"] or ""):
            assert time.monotonic() < deadline, osmo.query(workflow_id)
            time.sleep(0.5)
        reason = osmo.query(workflow_id)["groups"][0]["reason"]
        assert reason.startswith(f"waiting for the cluster to schedule pod {workflow_id}-whale-1: Unschedulable: ")
        with OsmoUiServer(osmo.env) as ui, urllib.request.urlopen(f"{ui.url}/workflows/{workflow_id}", timeout=30) as got:
            page = got.read().decode()
        shown = re.search(r'<span class="waiting-for">waiting: ([^<]+)</span>', page)
        assert shown and "Insufficient memory" in shown[1], page[page.find("<table id=\"tasks\""):][:2000]
    finally:
        osmo("cancel", workflow_id, check=False)
    assert osmo.query(workflow_id)["status"] == "FAILED_CANCELED"


def test_cancel_leaves_no_object(failures):
    osmo, workflow_id = failures.osmo, failures.ids["cancel"]
    _wait_running(osmo, workflow_id)
    osmo("cancel", workflow_id)
    info, tasks = failures.ended("cancel")
    assert info["status"] == "FAILED_CANCELED" and tasks["forever"]["status"] == "FAILED_CANCELED"
    deadline = time.monotonic() + 30
    while failures.objects(workflow_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert failures.objects(workflow_id) == []


def _wait_running(osmo: NodeOsmo, workflow_id: str, task: str = "forever", timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tasks_of(osmo.query(workflow_id))[task]["status"] == "RUNNING":
            return
        time.sleep(0.3)
    raise AssertionError(f"{workflow_id} never ran: {osmo.query(workflow_id)}")


def test_a_memory_limit_exceeded_gives_137(failures):
    info, tasks = failures.ended("oom")
    assert info["status"] == "FAILED" and tasks["hog"]["exit_code"] == 137
    assert "hog | allocating" in failures.osmo.logs(info["id"])


def test_an_input_that_cannot_be_downloaded_gives_2010(failures):
    info, tasks = failures.ended("input")
    assert tasks["reader"]["exit_code"] == 2010 and "no_such_dataset" in tasks["reader"]["reason"]


def test_an_output_that_cannot_be_uploaded_gives_2012(failures):
    info, tasks = failures.ended("output")
    assert tasks["writer"]["exit_code"] == 2012 and "no-such-bucket-here" in tasks["writer"]["reason"]


def test_the_lead_ends_its_group_and_the_other_outputs_are_still_uploaded(failures, tmp_path):
    info, tasks = failures.ended("lead")
    assert info["status"] == "COMPLETED"
    assert tasks["worker"]["reason"] == "stopped when the lead task 'boss' ended"
    logs = failures.osmo.logs(info["id"], "worker")
    assert "worker got TERM" in logs and "upload: 1 output uploaded" in logs
    failures.osmo("dataset", "download", f"{info['id']}--worker", str(tmp_path / "out"), group="")
    assert (tmp_path / "out" / "result.txt").read_text() == "worked\n"


def _wrapper_pids(marker: str) -> list[int]:
    """The host PIDs of task wrappers (PID 1 of a task container) whose command line holds ``marker``: of the
    live processes naming it (the wrapper, its command, a subshell), those whose parent is not one of them."""
    found = dict(workers(marker))
    return [pid for pid, parent in found.items() if parent not in found]


def test_a_task_container_that_ends_without_recording_its_exit_code_is_not_waited_for_forever(failures, tmp_path):
    """The node kills the task's wrapper (SIGKILL from outside the container, as the OOM killer or a node's
    agent could): the container ends with 137 and no exit code for the sidecar, which would wait forever; the
    runner records the container's exit code for it, and the outputs are uploaded."""
    osmo, workflow_id = failures.osmo, failures.ids["lost"]
    _wait_running(osmo, workflow_id, "orphan")
    deadline = time.monotonic() + 60
    while "osmo-lost-exit-code" not in osmo.logs(workflow_id, "orphan"):
        assert time.monotonic() < deadline, osmo.logs(workflow_id, "orphan")
        time.sleep(0.5)
    wrappers = _wrapper_pids("osmo-lost-exit-code")
    assert len(wrappers) == 1, wrappers
    os.kill(wrappers[0], signal.SIGKILL)
    info, tasks = failures.ended("lost", timeout=120)
    logs = osmo.logs(workflow_id, "orphan")
    assert info["status"] == "FAILED" and tasks["orphan"]["exit_code"] == 137, logs
    assert "without recording its exit code for the upload; the runner recorded it" in logs
    assert "the task finished with exit code 137" in logs and "upload: 1 output uploaded" in logs
    osmo("dataset", "download", f"{workflow_id}--orphan", str(tmp_path / "out"), group="")
    assert (tmp_path / "out" / "kept.txt").read_text() == "kept\n"
