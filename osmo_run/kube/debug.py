"""``osmo workflow exec --debug`` on Kubernetes: a shell in a copy of a task attempt that has ended.

The copy is a pod made as the runner made the attempt's (``objects.task_pod``/``task_secret``) from the
workflow's recorded spec and settings: the same image, environment, ``files:``, resources, volumeMounts
and credentials (resolved from the calling shell's environment, as the supervisor resolves them from the
submitting one), and its init container downloads the inputs again, pinned to the dataset versions the
attempt read. The attempt's output folder went with its pod: when the attempt uploaded it (its task
output version in ``datasets_written``), that version is one more input of the copy's contract, moved
into ``/osmo/data/output`` by the init container, so the shell sees the outputs as they were uploaded.
Only the command differs: the task container runs ``KEEPER`` instead, there is no upload sidecar
container (the copy writes nothing to the store), and nothing starts it through the group's barrier.

The pod and its Secret are named ``<attempt pod>-debug-<random>``, carry the workflow's labels plus
``osmo.debug`` (``kubectl delete pod,secret -l osmo.debug`` removes a copy a killed command left), and
are deleted when ``debug_pod`` exits, however it exits. The builders (``choose_attempt``,
``pinned_inputs``, ``debug_objects``) talk to no cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import time
from contextlib import contextmanager
from typing import Any, Iterator

from kubernetes import client
from kubernetes.client.rest import ApiException

from osmo_run.contract import InputSpec, TaskContract, task_output_dataset
from osmo_run.kube.apply import create
from osmo_run.kube.execstream import api_reason
from osmo_run.kube.interactive import PodRef
from osmo_run.kube.objects import (DATA_DIR, INIT_CONTAINER, RUN_DIR, SCHEDULERS, TASK_CONTAINER, KAI_QUEUE_LABEL,
                                   TaskPod, dns_label, host_name, names, pod_name, task_pod, task_secret)
from osmo_run.kube.pool import KubePool
from osmo_run.kube.supervisor import api_client
from osmo_run.kube.volumes import host_mounts
from osmo_run.local.credentials import CredentialError, TaskCredentials, resolve_task
from osmo_run.local.debug import ended_attempt
from osmo_run.local.errors import CONFLICT, RunnerError
from osmo_run.local.prepare import contract_inputs
from osmo_run.local.reach import find_task
from osmo_run.local.settings import Settings
from osmo_run.spec import SpecError, load_rendered, substitute_task

LABEL_DEBUG = "osmo.debug"
# PID 1 of the copy's task container instead of the wrapper and the task's command: it waits, and ends at once
# on SIGTERM (the pod's deletion)
KEEPER = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"
START_WAIT = 180.0  # seconds for the copy's task container to run (image pull, inputs)
# the init container's reasons that will not go away by waiting
STUCK = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
         "CreateContainerError", "RunContainerError", "ErrImageNeverPull"}


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What the workflow's record keeps: its spec (rendered), settings, spec file and store."""

    spec: str
    settings: Settings
    file: str | None
    store: str | None


def choose_attempt(info: dict[str, Any], task: str, retry: int | None) -> dict[str, Any]:
    """The attempt of ``task`` to copy (``retry``, default the last) from a ``query``; it must have ended."""
    return ended_attempt(find_task(info, task).get("attempts") or [], info["id"], task, retry)


def pinned_inputs(inputs: tuple[InputSpec, ...], read: list[dict[str, Any]]) -> tuple[InputSpec, ...]:
    """``inputs`` with each store input the attempt read pinned to the version it read (``datasets_read``)."""
    versions = {int(d["input"]): f"{d['dataset']}:{d['version']}" for d in read
                if d.get("input") is not None and d.get("version") is not None}
    return tuple(dataclasses.replace(spec, ref=versions[n]) if spec.kind != "url" and n in versions else spec
                 for n, spec in enumerate(inputs))


def written_output(written: list[dict[str, Any]], workflow_id: str, task: str) -> InputSpec | None:
    """The input that brings back the attempt's output folder: the version of the task's output dataset it
    uploaded (``datasets_written``), or None when it uploaded none."""
    dataset = task_output_dataset(workflow_id, task)
    for d in written:
        if d.get("dataset") == dataset and d.get("version") is not None:
            return InputSpec("task", ref=f"{dataset}:{d['version']}", task=task)
    return None


def debug_name(attempt_pod: str, suffix: str) -> str:
    return dns_label(attempt_pod, "debug", suffix)


def _restore_output(index: int) -> str:
    """The init container's shell step that moves input ``index`` (the attempt's outputs) into the output folder."""
    source = f"{RUN_DIR}/data/input/{index}"
    return (f" && cp -a {source}/. {RUN_DIR}/data/output/ && rm -rf {source}"
            f" && chmod -R a+rwX {RUN_DIR}/data/output")


def debug_objects(workflow_id: str, group: str, task: TaskPod, pool: KubePool, name: str,
                  output_input: int | None) -> tuple[dict, dict]:
    """(Secret, Pod) of the copy: the attempt's (``objects.py``) renamed to ``name``, labelled
    ``osmo.debug``, with ``KEEPER`` as the task container's command, no sidecar container, no gang and no
    DNS name in the group's Service; ``output_input``: the contract's input that is the attempt's output."""
    secret, pod = task_secret(workflow_id, group, task, pool), task_pod(workflow_id, group, task, pool)
    original = secret["metadata"]["name"]
    for obj in (secret, pod):
        obj["metadata"]["name"] = name
        obj["metadata"]["labels"][LABEL_DEBUG] = "true"
        obj["metadata"].pop("annotations", None)  # the gang's annotation: the copy is no member
    _, _, link = SCHEDULERS[pool.scheduler]
    if link is not None and link[0] == "label":
        pod["metadata"]["labels"].pop(link[1], None)
    spec = pod["spec"]
    spec.pop("subdomain", None)
    spec["containers"] = [c for c in spec["containers"] if c["name"] == TASK_CONTAINER]
    main = spec["containers"][0]
    main["command"] = ["/bin/sh", "-c", KEEPER, "osmo-debug"]
    for env in main.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] == original:
            ref["name"] = name
    for volume in spec["volumes"]:
        if volume.get("secret", {}).get("secretName") == original:
            volume["secret"]["secretName"] = name
    if output_input is not None:
        init = spec["initContainers"][0]
        script = init["command"][2].replace(" && exec osmo-sidecar", " && osmo-sidecar")
        init["command"][2] = script + _restore_output(output_input)
    if pool.scheduler == "kai":
        pod["metadata"]["labels"].setdefault(KAI_QUEUE_LABEL, pool.queue or "default")
    return secret, pod


def _recorded(workflow_id: str, in_cluster: bool, pool: KubePool) -> Recorded:
    if in_cluster:
        from osmo_run.kube import remote
        record = remote.record(workflow_id, pool)
        return Recorded(record.spec, Settings.from_json(record.settings), record.file, record.store)
    from osmo_run.local import service
    state = service.open_state()
    try:
        row = state.workflow(workflow_id)
    finally:
        state.close()
    return Recorded(row["spec"], Settings.from_json(json.loads(row["settings"] or "{}")), row["file"], row["store"])


def _copy_pod(workflow_id: str, recorded: Recorded, pool: KubePool, task_name: str,
              attempt: dict[str, Any]) -> tuple[str, TaskPod, int | None]:
    """(group, the copy's ``TaskPod``, the contract input that restores the outputs) as ``group.py`` builds
    the attempt's, from the recorded spec."""
    try:
        workflow = load_rendered(recorded.spec, file=recorded.file)
        group = next(g for g in workflow.groups if any(t.name == task_name for t in g.tasks))
        task = workflow.task(task_name)
        service = names(workflow_id, group.name)["service"]
        done = substitute_task(task, output=f"{DATA_DIR}/output",
                               inputs=[f"{DATA_DIR}/input/{n}" for n in range(len(task.inputs))],
                               hosts={t.name: f"{host_name(t.name)}.{service}" for t in group.tasks},
                               workflow_id=workflow_id)
        creds = (resolve_task(task, recorded.settings.credentials, config=recorded.settings.source,
                              environ=os.environ) if task.credentials else TaskCredentials({}, (), (), ()))
        mounts = host_mounts(done, pool)
    except SpecError as exc:
        raise RunnerError(f"the workflow's recorded spec: {exc}") from None
    except CredentialError as exc:
        raise RunnerError(f"the task's credentials: {exc}", task=task_name) from None
    except ValueError as exc:  # a volumeMount the pool does not allow
        raise RunnerError(f"task {task_name}: {exc}", task=task_name) from None
    inputs = pinned_inputs(contract_inputs(workflow_id, done, {}), attempt.get("datasets_read") or [])
    restore = written_output(attempt.get("datasets_written") or [], workflow_id, task_name)
    contract = TaskContract(
        workflow_id=workflow_id, task=task_name, group=group.name, attempt=attempt["attempt"],
        store=pool.store or recorded.store, data_dir=DATA_DIR,
        inputs=inputs + ((restore,) if restore else ()), outputs=(),
        metadata={"workflow_id": workflow_id, "task": task_name, "group": group.name,
                  "attempt": str(attempt["attempt"]), "debug": "true"})
    res = workflow.resources_for(done)
    pod = TaskPod(name=task_name, image=done.image, argv=[], env=dict(done.environment),
                  contract_json=json.dumps(contract.to_json()), attempt=attempt["attempt"],
                  files=[(f.path, f.data()) for f in done.files], cpu=res.cpu, memory=res.memory, gpu=res.gpu,
                  storage=res.storage, platform=res.platform, privileged=bool(done.privileged),
                  host_network=bool(done.host_network), credential_env=dict(creds.env),
                  credential_files=[(f.path, f.value) for f in creds.files],
                  host_mounts=[(m.host, m.container) for m in mounts])
    return group.name, pod, len(inputs) if restore else None


def _why_not_running(pod: Any) -> str | None:
    """Why the copy's task container cannot start (it never will), or None while it may still."""
    status = pod.status
    for c in status.init_container_statuses or []:
        state = c.state
        if state and state.terminated and state.terminated.exit_code != 0:
            said = (state.terminated.message or state.terminated.reason or "").strip().splitlines()
            return f"its init container {INIT_CONTAINER} failed ({state.terminated.exit_code})" + (
                f": {said[-1][:300]}" if said else "")
        if state and state.waiting and state.waiting.reason in STUCK:
            return f"{state.waiting.reason}: {state.waiting.message or c.image}"
    for c in status.container_statuses or []:
        state = c.state
        if state and state.waiting and state.waiting.reason in STUCK:
            return f"{state.waiting.reason}: {state.waiting.message or c.image}"
        if state and state.terminated:
            return f"its task container ended ({state.terminated.reason or state.terminated.exit_code})"
    if status.phase in ("Failed", "Succeeded"):
        return f"the pod {status.phase.lower()}: {status.reason or ''} {status.message or ''}".strip()
    return None


def _wait_running(core: Any, namespace: str, name: str, describe: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "it was not scheduled"
    while True:
        pod = core.read_namespaced_pod(name, namespace, _request_timeout=30)
        running = next((c for c in pod.status.container_statuses or [] if c.name == TASK_CONTAINER), None)
        if running is not None and running.state and running.state.running:
            return
        problem = _why_not_running(pod)
        if problem:
            raise RunnerError(f"{describe} (pod {name}) cannot start: {problem}", CONFLICT)
        waiting = [c.state.waiting.reason for c in (pod.status.init_container_statuses or [])
                   + (pod.status.container_statuses or []) if c.state and c.state.waiting]
        last = f"pod phase {pod.status.phase}" + (f", {', '.join(waiting)}" if waiting else "")
        if time.monotonic() > deadline:
            raise RunnerError(f"{describe} (pod {name}) did not start within {timeout:g} s ({last})", CONFLICT)
        time.sleep(1.0)


class _Terminated(Exception):
    pass


def _on_term(signum, frame) -> None:
    raise _Terminated()


@contextmanager
def debug_pod(workflow_id: str, task: str, retry: int | None, info: dict[str, Any], pool: KubePool,
              in_cluster: bool, timeout: float = START_WAIT) -> Iterator[PodRef]:
    """The running copy of the attempt (see the module docstring) as a ``PodRef``; deleted on exit."""
    attempt = choose_attempt(info, task, retry)
    group, spec, restore = _copy_pod(workflow_id, _recorded(workflow_id, in_cluster, pool), pool, task, attempt)
    name = debug_name(pod_name(workflow_id, task, attempt["attempt"]), secrets.token_hex(3))
    secret_obj, pod_obj = debug_objects(workflow_id, group, spec, pool, name, restore)
    describe = f"the debug copy of attempt {attempt['attempt']} of task {task}"
    api = api_client(pool.context)
    core = client.CoreV1Api(api)
    previous = signal.signal(signal.SIGTERM, _on_term)  # a SIGTERM ends it through the clean-up below
    try:
        create(api, secret_obj)
        create(api, pod_obj)
        _wait_running(core, pool.namespace, name, describe, timeout)
        yield PodRef(pool.namespace, name, TASK_CONTAINER)
    except _Terminated:
        raise RunnerError(f"{describe}: terminated", 143) from None
    except ApiException as exc:
        raise RunnerError(f"{describe} (pod {name}): {api_reason(exc)}", CONFLICT) from None
    finally:
        _delete(core, pool.namespace, name)
        signal.signal(signal.SIGTERM, previous)
        api.close()


def _delete(core: Any, namespace: str, name: str) -> None:
    """The copy's pod and Secret gone, with no Ctrl-C or SIGTERM cutting it short."""
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for delete in (lambda: core.delete_namespaced_pod(name, namespace, grace_period_seconds=0,
                                                          _request_timeout=30),
                       lambda: core.delete_namespaced_secret(name, namespace, _request_timeout=30)):
            try:
                delete()
            except ApiException as exc:
                if exc.status != 404:
                    raise RunnerError(f"the debug copy {name} could not be deleted ({exc.status} {exc.reason}): "
                                      f"kubectl delete pod,secret {name} -n {namespace}", CONFLICT) from None
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
