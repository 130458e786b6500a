"""Workflow records in the cluster (``osmo_run/kube/records.py``) and what the commands read from them, on a
real API server (no kubelet: the supervisor pod never starts here; tests/kube/test_node_incluster.py runs
it on the real node)."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from osmo_run.kube.incluster import credentials_from_json, credentials_to_json, supervisor_name
from osmo_run.kube.records import LOG_LIMIT, ClusterRecords, record_name
from osmo_run.local.credentials import CredentialFile, TaskCredentials
from run.conftest import Osmo, write_spec

GROUPS = [("g", [("a", True), ("b", False)])]


@pytest.fixture
def records(kube_server, kube_namespace) -> ClusterRecords:
    return ClusterRecords(kube_server.api_client(), kube_namespace)


def _create(records: ClusterRecords, name: str = "rec") -> str:
    return records.create(name, "workflow: {}\n", {"runner": "kubernetes"}, GROUPS, file="/x/w.yaml",
                          store="s3://b/s", submitted="2026-12-06T00:00:00.000Z")


def test_ids_are_allocated_in_the_cluster_and_never_collide(records):
    assert [_create(records), _create(records)] == ["rec-1", "rec-2"]
    # another submitter took rec-3 a moment ago (its object exists, our listing missed it): the next is used
    records.core.create_namespaced_config_map(records.namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=record_name("rec-3"))))
    assert _create(records) == "rec-4"
    assert _create(records, "other") == "other-1"
    record = records.get("rec-1")
    assert (record.name, record.file, record.store, record.spec) == ("rec", "/x/w.yaml", "s3://b/s", "workflow: {}\n")
    state = record.state
    assert state["status"] == "PENDING" and [t["name"] for t in state["groups"][0]["tasks"]] == ["a", "b"]
    assert state["groups"][0]["tasks"][0]["lead"] is True and state["groups"][0]["status"] == "WAITING"
    assert [r.id for r in records.all()] == ["rec-1", "rec-2", "rec-4", "other-1"]
    assert records.get("rec-9") is None


def test_state_logs_and_cancel_round_trip(records):
    workflow_id = _create(records)
    records.publish_state(workflow_id, {"id": workflow_id, "status": "RUNNING", "groups": []})
    records.publish_log(workflow_id, "a", "line 1\n")
    records.publish_log(workflow_id, "a", "line 1\nline 2\n")  # replaced, not added
    records.publish_log(workflow_id, "b", "x" * (LOG_LIMIT + 10))
    assert records.get(workflow_id).state["status"] == "RUNNING"
    logs = records.logs(workflow_id)
    assert logs["a"] == "line 1\nline 2\n"
    assert logs["b"].startswith("[osmo] (the first 10 bytes of this log are not kept in the cluster)\n")
    assert logs["b"].endswith("x" * LOG_LIMIT)
    assert not records.get(workflow_id).cancel_requested
    records.request_cancel(workflow_id)
    assert records.get(workflow_id).cancel_requested


def test_credentials_travel_to_the_supervisor_unchanged():
    creds = {"t": TaskCredentials({"K": "v"}, (CredentialFile("/root/.k/key", "line1\nline2"),), ("v", "line1"),
                                  ("credentials: k as variables K",))}
    assert credentials_from_json(credentials_to_json(creds)) == creds


def test_submit_records_the_workflow_and_a_fresh_machine_sees_and_cancels_it(kube_server, kube_namespace, tmp_path):
    section = {"namespace": kube_namespace, "scheduler": "none", "sidecar_image": "osmo-sidecar:test",
               "store": "s3://bucket/osmo", "supervisor": "cluster"}
    laptop = Osmo(tmp_path / "laptop", KUBECONFIG=kube_server.kubeconfig, OSMO_TEST_TOKEN="s3cr3t-value")
    laptop.pool(grace_period="1s", runner="kubernetes", kubernetes=section,
                credentials={"robot": {"env": {"token": "OSMO_TEST_TOKEN"}}})
    spec = write_spec(tmp_path, """
        workflow:
          name: recorded
          tasks:
          - name: t
            image: ubuntu:24.04
            credentials: {robot: {TOKEN: token}}
            command: [sh, -c, "echo hi"]
        """)
    workflow_id = laptop.submit(spec, wait=False)
    assert workflow_id == "recorded-1"
    assert laptop("list", "--json").json()[0]["id"] == workflow_id  # this machine has no row of it: the record
    core = client.CoreV1Api(kube_server.api_client())
    pod = core.read_namespaced_pod(supervisor_name(workflow_id), kube_namespace)
    assert pod.spec.containers[0].command == ["python", "-m", "osmo_run.kube.incluster", workflow_id]
    assert pod.spec.service_account_name == "osmo-supervisor" and pod.spec.restart_policy == "Never"
    secret = core.read_namespaced_secret(supervisor_name(workflow_id), kube_namespace)
    import base64
    values = json.loads(base64.b64decode(secret.data["credentials.json"]))
    assert values["t"]["env"] == {"TOKEN": "s3cr3t-value"}  # resolved on the submitting machine
    assert core.list_namespaced_pod(kube_namespace, label_selector=f"osmo.workflow={workflow_id}").items == []

    fresh = Osmo(tmp_path / "fresh", KUBECONFIG=kube_server.kubeconfig)
    fresh.pool(grace_period="1s", kubernetes=section)
    info = fresh.query(workflow_id)
    assert info["status"] == "PENDING" and info["runner"] == {
        "supervisor": "cluster", "namespace": kube_namespace, "pod": supervisor_name(workflow_id)}
    assert "name: recorded" in fresh("spec", workflow_id).out
    assert "recorded-1" in fresh("list").out
    wrong = fresh("query", "recorded-2", check=False)
    assert wrong.code == 3 and "did you mean 'recorded-1'" in wrong.err
    # the supervisor never started (no kubelet here): cancel ends it without it
    assert fresh("cancel", workflow_id, "--json").json() == {"id": workflow_id, "status": "FAILED_CANCELED"}
    assert fresh("cancel", workflow_id, check=False).code == 4
    with pytest.raises(client.ApiException):
        core.read_namespaced_secret(supervisor_name(workflow_id), kube_namespace)


def test_a_supervisor_pod_that_ended_early_reads_as_failed(kube_server, kube_namespace, tmp_path, records):
    workflow_id = _create(records, "orphan")
    section = {"namespace": kube_namespace, "supervisor": "cluster"}
    fresh = Osmo(tmp_path / "fresh", KUBECONFIG=kube_server.kubeconfig)
    fresh.pool(kubernetes=section)
    assert fresh.query(workflow_id)["status"] == "PENDING"  # no pod yet, within its start grace
    records.core.patch_namespaced_config_map(record_name(workflow_id), kube_namespace,
                                             {"data": {"submitted_at": "1000.0"}})  # long ago
    info = fresh.query(workflow_id)
    assert info["status"] == "FAILED" and "its supervisor pod is gone" in info["reason"]


def test_list_says_when_the_cluster_cannot_be_reached_and_still_lists_this_machine(tmp_path, kube_server):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(open(kube_server.kubeconfig).read().replace(kube_server.server, "https://127.0.0.1:1"))
    osmo = Osmo(tmp_path / "osmo", KUBECONFIG=str(kubeconfig))
    osmo.pool(kubernetes={"namespace": "nowhere", "supervisor": "cluster"})
    done = osmo("list", "--json")
    assert done.json() == [] and "osmo: warning: the cluster's workflows are not listed: the cluster:" in done.err
    missing = osmo("query", "gone-1", check=False)
    assert missing.code != 0 and missing.err.startswith("osmo: error: the cluster:") and "Traceback" not in missing.err
