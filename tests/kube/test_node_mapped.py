"""What ``--runner kubernetes`` maps beyond the basics, on real pods (the real one-node cluster, ``kube_node``):

- ``credentials:`` from the pool config's sources reach the task as a variable and as a 0400 file, and
  their value never shows in ``osmo workflow logs``: neither in a running pod's live lines nor in the
  task log once the pod is gone;
- ``volumeMounts`` of a host folder the pool allows (``kubernetes.host_paths``);
- ``checkpoint:``: a folder outside ``/osmo/data`` (shared with the upload container) copied to S3 while the
  task runs and once at the end, and one inside ``{{output}}`` with a regex;
- the dataset versions each attempt read and wrote, in ``osmo workflow query``.

Both workflows are submitted together when the first test needs them and run side by side."""

from __future__ import annotations

import textwrap

import pytest

from helpers.waiting import wait_for
from kube.node_osmo import NodeOsmo
from run.conftest import tasks_of

NAMESPACE = "osmo-mapped"
TOKEN = "tok-3f9a7c51e2"  # the credential's value: never in a log
CHECKPOINT_BUCKET = "osmo-checkpoints"

CREDS = """\
    workflow:
      name: kmapcreds
      tasks:
      - name: secretive
        image: ubuntu:24.04
        credentials:
          robot_env: {ROBOT_TOKEN: token}
          robot_file: /root/.robot
        volumeMounts: ["{hostdir}:/hostdir"]
        command:
        - sh
        - -c
        - |
          echo "token=$ROBOT_TOKEN"
          echo "file=$(cat /root/.robot/token) mode=$(stat -L -c %a /root/.robot/token)"
          [ "$ROBOT_TOKEN" = "$(cat /root/.robot/token)" ] && echo "the variable and the file agree"
          cat /hostdir/hello.txt
          i=0; while [ ! -e /hostdir/release ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
          echo "released, token=$ROBOT_TOKEN"
    """
DATA = """\
    workflow:
      name: kmapdata
      groups:
      - name: make
        tasks:
        - name: produce
          lead: true
          image: ubuntu:24.04
          checkpoint:
          - {path: /workspace/ckpt, url: "s3://osmo-checkpoints/{key}/work", frequency: 1s}
          - {path: "{{output}}/models", url: "s3://osmo-checkpoints/{key}/models", frequency: 1s, regex: '\\.pt$'}
          command:
          - sh
          - -c
          - |
            mkdir -p /workspace/ckpt {{output}}/models
            for step in 1 2 3 4 5; do echo "step $step" > /workspace/ckpt/step-$step.txt; sleep 1; done
            echo weights > {{output}}/models/final.pt; echo notes > {{output}}/models/notes.txt
            echo made > {{output}}/made.txt
      - name: use
        tasks:
        - name: consume
          lead: true
          image: ubuntu:24.04
          command: [sh, -c, "cp {{input:0}}/made.txt {{output}}/"]
          inputs: [{task: produce}]
          outputs: [{dataset: {name: kmapped_trained}}]
    """


class Mapped:
    def __init__(self, root, node) -> None:
        self.node = node
        node.prepare_namespace(NAMESPACE)
        store = node.init_store(f"{node.store_url}/mapped")
        self.hostdir = root / "host-folder"
        self.hostdir.mkdir()
        (self.hostdir / "hello.txt").write_text("hello from the host\n")
        creds = root / "robot.yaml"
        creds.write_text(f"token: {TOKEN}\n")
        creds.chmod(0o600)
        self.osmo = NodeOsmo(root, KUBECONFIG=node.kubeconfig, **node.store_env(), OSMO_STORE=store,
                             OSMO_TEST_ROBOT_TOKEN=TOKEN)
        self.osmo.pool(grace_period="2s", credentials={"robot_env": {"env": {"token": "OSMO_TEST_ROBOT_TOKEN"}},
                                                       "robot_file": {"file": str(creds)}},
                       kubernetes={**node.pool_section(NAMESPACE), "store": store, "host_paths": [str(root)],
                                   "supervisor": "local"})  # the supervisor of the submitting machine, on real pods
        s3 = node.s3.client()
        try:
            s3.create_bucket(Bucket=CHECKPOINT_BUCKET)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        self.key = root.name
        self.ids = {}
        for name, text in (("creds", CREDS), ("data", DATA)):
            path = root / f"{name}.yaml"
            path.write_text(textwrap.dedent(text).replace("{hostdir}", str(self.hostdir)).replace("{key}", self.key))
            self.ids[name] = self.osmo.submit(path, "--runner", "kubernetes", wait=False)

    def checkpoint_objects(self, prefix: str) -> dict[str, bytes]:
        s3 = self.node.s3.client()
        found = s3.list_objects_v2(Bucket=CHECKPOINT_BUCKET, Prefix=f"{self.key}/{prefix}/").get("Contents", [])
        return {o["Key"].split("/", 2)[2]: s3.get_object(Bucket=CHECKPOINT_BUCKET, Key=o["Key"])["Body"].read()
                for o in found}


@pytest.fixture(scope="module")
def mapped(tmp_path_factory, kube_node) -> Mapped:
    return Mapped(tmp_path_factory.mktemp("node-mapped"), kube_node)


def test_credentials_reach_the_task_and_never_show_in_its_logs(mapped):
    osmo, workflow_id = mapped.osmo, mapped.ids["creds"]
    live = wait_for(lambda: (lambda text: text if "the variable and the file agree" in text else None)(
        osmo.logs(workflow_id, "secretive")), 180, "the running pod's live log lines", interval=1.0)
    assert "container task ---" in live and "token=***" in live and TOKEN not in live  # copied as it ran
    assert "file=*** mode=400" in live and "hello from the host" in live  # the credential file; the host folder
    (mapped.hostdir / "release").write_text("")
    info = osmo.wait(workflow_id, 180)
    assert info["status"] == "COMPLETED", osmo.logs(workflow_id)
    logs = osmo.logs(workflow_id)
    assert "secretive | released, token=***" in logs and TOKEN not in logs
    assert "credentials: robot_env as variables ROBOT_TOKEN" in logs
    assert TOKEN not in osmo("query", workflow_id, "--json").out


def test_checkpoints_are_copied_while_the_task_runs_and_at_its_end(mapped):
    info = mapped.osmo.wait(mapped.ids["data"], 240)
    assert info["status"] == "COMPLETED", mapped.osmo.logs(info["id"])
    log = mapped.osmo.logs(info["id"], "produce")  # what the sidecar said of each copy
    work = mapped.checkpoint_objects("work")
    assert work == {f"step-{n}.txt": f"step {n}\n".encode() for n in range(1, 6)}, log
    assert mapped.checkpoint_objects("models") == {"final.pt": b"weights\n"}, log  # the regex left notes.txt out
    sidecar = log[log.index("container osmo-sidecar"):]
    periodic = sidecar.index("checkpoint 0 (s3://")
    assert periodic < sidecar.index("the task finished with exit code 0")  # a copy while the task ran
    assert "checkpoint 0 (s3://" in sidecar[sidecar.index("the task finished"):]  # and the final one


def test_query_shows_the_datasets_each_attempt_read_and_wrote(mapped):
    info = mapped.osmo.wait(mapped.ids["data"], 240)
    tasks = tasks_of(info)
    produced = f"{info['id']}--produce"
    assert [(d["dataset"], d["version"]) for d in tasks["produce"]["datasets_written"]] == [(produced, 1)]
    consume = tasks["consume"]["attempts"][0]
    assert [(d["dataset"], d["version"]) for d in consume["datasets_read"]] == [(produced, 1)]
    assert {(d["dataset"], d["version"]) for d in consume["datasets_written"]} == {
        (f"{info['id']}--consume", 1), ("kmapped_trained", 1)}
    shown = mapped.osmo("query", info["id"]).out
    assert f"read: {produced}:1" in shown and "kmapped_trained:1" in shown
