"""PodWatcher (osmo_run/kube/watch.py) against a real kube-apiserver: it sees creations, kubelet status patches
and deletions of the selected pods only; a watch the server ends is resumed without a relist; a real 410 Gone
relists and catches up with what changed in the gap; it survives API server restarts (graceful and crash) and
stops promptly even while the API server is down.

Order matters for time only: the restart tests run before the 410 test, whose probe then finds the pods watch
cache already restarted (see ``_make_410_possible``) instead of restarting the API server itself."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from helpers.waiting import wait_for as wait_until
from osmo_run.kube.watch import PodWatcher

FAST = {"retry_delay": 0.1, "max_retry_delay": 0.5}


def pod(name: str, workflow: str = "wf1") -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"osmo/workflow": workflow}),
        spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(
            name="main", image="busybox", command=["true"])]))


def terminated(core: client.CoreV1Api, ns: str, name: str, exit_code: int) -> None:
    """Play the kubelet: the main container terminated with ``exit_code``."""
    core.patch_namespaced_pod_status(name, ns, {"status": {
        "phase": "Failed" if exit_code else "Succeeded",
        "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "", "ready": False, "restartCount": 0,
                               "state": {"terminated": {"exitCode": exit_code, "reason": "Error",
                                                        "startedAt": "2025-01-01T00:00:00Z",
                                                        "finishedAt": "2025-01-01T00:00:05Z"}}}]}})


def exit_code(p: dict | None) -> int | None:
    try:
        return p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
    except (KeyError, IndexError, TypeError):
        return None


def wait_for(check, timeout: float, what: str):
    return wait_until(check, timeout, what, interval=0.05)  # watch events arrive within milliseconds


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def has(self, text: str) -> bool:
        return any(text in line for line in list(self))


@pytest.fixture
def make_watcher(kube_server, kube_namespace):
    made: list[PodWatcher] = []

    def make(selector: str = "osmo/workflow=wf1", **kwargs) -> tuple[PodWatcher, Log]:
        log = Log()
        w = PodWatcher(kube_server.api_client(), kube_namespace, selector, on_event=log, **{**FAST, **kwargs})
        made.append(w)
        return w, log

    yield make
    for w in made:
        w.stop()


def test_snapshot_follows_creations_status_and_deletions(kube_server, kube_namespace, make_watcher):
    core = client.CoreV1Api(kube_server.api_client())
    core.create_namespaced_pod(kube_namespace, pod("w-0"))
    core.create_namespaced_pod(kube_namespace, pod("other-0", workflow="wf2"))
    w, log = make_watcher(watch_timeout=1)  # the server ends each watch after 1 s: resumed, never relisted
    w.start()
    assert w.wait_synced(10)
    assert set(w.snapshot()) == {"w-0"} and w.deleted() == set()
    gen = w.generation

    core.create_namespaced_pod(kube_namespace, pod("w-1"))
    core.create_namespaced_pod(kube_namespace, pod("other-1", workflow="wf2"))
    wait_for(lambda: "w-1" in w.snapshot(), 10, "w-1 in the snapshot")
    assert w.generation > gen
    snap = w.snapshot()["w-1"]
    assert snap["metadata"]["labels"] == {"osmo/workflow": "wf1"} and snap["spec"]["restartPolicy"] == "Never"

    terminated(core, kube_namespace, "w-1", 3)
    wait_for(lambda: exit_code(w.snapshot().get("w-1")) == 3, 10, "w-1 terminated with exit code 3")
    assert w.snapshot()["w-1"]["status"]["phase"] == "Failed"

    core.delete_namespaced_pod("w-0", kube_namespace, grace_period_seconds=0)
    wait_for(lambda: "w-0" in w.deleted(), 10, "w-0 deleted")
    assert set(w.snapshot()) == {"w-1"}
    assert w.deleted_pod("w-0")["metadata"]["name"] == "w-0"
    w.forget("w-0")
    assert w.deleted() == set()

    time.sleep(1.5)  # at least one more server-side watch timeout
    assert w.relists == 0 and not log.has("failed"), log
    assert not any("other" in name for name in w.snapshot())
    t0 = time.monotonic()
    w.stop()
    w.stop()  # idempotent
    assert time.monotonic() - t0 < 3 and not w.alive


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "crash"])
def test_survives_apiserver_restart(kube_server, kube_namespace, make_watcher, graceful):
    core = client.CoreV1Api(kube_server.api_client())
    core.create_namespaced_pod(kube_namespace, pod("w-0"))
    core.create_namespaced_pod(kube_namespace, pod("w-1"))
    w, log = make_watcher()
    w.start()
    assert w.wait_synced(10)
    wait_for(lambda: set(w.snapshot()) == {"w-0", "w-1"}, 10, "both pods")

    kube_server.restart_apiserver(graceful=graceful)
    core.delete_namespaced_pod("w-0", kube_namespace, grace_period_seconds=0)
    core.create_namespaced_pod(kube_namespace, pod("w-2"))
    terminated(core, kube_namespace, "w-1", 3)
    wait_for(lambda: set(w.snapshot()) == {"w-1", "w-2"} and exit_code(w.snapshot()["w-1"]) == 3, 15,
             "the changes made after the restart")
    assert w.deleted() == {"w-0"}
    assert w.relists >= 1 and w.alive
    assert log.has("relisted") and log.has("retrying in"), log


def _make_410_possible(kube_server, core: client.CoreV1Api, ns: str) -> None:
    """A pods watch from resourceVersion "1" gets a real 410 only once the API server's pods watch cache starts
    later than revision 1, i.e. after an API server restart (compacting etcd does not do it: watches are served
    from the watch cache, which keeps its own history). Restart it (crash: faster) unless a test did already."""
    def gone() -> bool:
        try:
            for _ in watch.Watch().stream(core.list_namespaced_pod, ns, resource_version="1", timeout_seconds=1):
                pass
        except ApiException as exc:
            return exc.status == 410
        return False

    if not gone():
        kube_server.restart_apiserver(graceful=False)
        assert gone(), "a watch from resourceVersion 1 is still not 410 Gone after an API server restart"


def test_410_gone_relists_and_sees_the_gap(kube_server, kube_namespace, make_watcher):
    core = client.CoreV1Api(kube_server.api_client())
    _make_410_possible(kube_server, core, kube_namespace)
    core.create_namespaced_pod(kube_namespace, pod("w-0"))
    core.create_namespaced_pod(kube_namespace, pod("w-1"))
    w, log = make_watcher(watch_timeout=1)
    gap = threading.Event()
    resumed_from: list[str] = []

    def before_watch(rv: str) -> str:
        """Between two watches (not watching): change things, then resume from a version long compacted."""
        resumed_from.append(rv)
        if not gap.is_set():
            return rv
        gap.clear()
        core.delete_namespaced_pod("w-0", kube_namespace, grace_period_seconds=0)
        core.create_namespaced_pod(kube_namespace, pod("w-2"))
        terminated(core, kube_namespace, "w-1", 3)
        return "1"

    w._before_watch = before_watch
    w.start()
    assert w.wait_synced(10)
    wait_for(lambda: set(w.snapshot()) == {"w-0", "w-1"}, 10, "both pods")
    wait_for(lambda: len(resumed_from) >= 2, 10, "a watch the server ended, resumed")
    assert w.relists == 0 and resumed_from[-1] == w.resource_version

    gap.set()
    wait_for(lambda: w.relists == 1, 10, "a relist")
    assert log.has("watch expired (410): relisting"), log
    wait_for(lambda: set(w.snapshot()) == {"w-1", "w-2"}, 5, "the snapshot after the relist")
    assert exit_code(w.snapshot()["w-1"]) == 3
    assert w.deleted() == {"w-0"}
    assert int(w.resource_version) > 1 and w.alive

    core.create_namespaced_pod(kube_namespace, pod("w-3"))  # and the watch goes on from the new list
    wait_for(lambda: "w-3" in w.snapshot(), 10, "w-3 after the relist")
    assert w.relists == 1


def test_stop_is_prompt_while_apiserver_is_down(kube_server, kube_namespace, make_watcher):
    w, log = make_watcher(retry_delay=2.0, max_retry_delay=5.0)
    w.start()
    assert w.wait_synced(10)
    kube_server.stop_apiserver(graceful=False)
    try:
        wait_for(lambda: log.has("retrying in 2.0 s"), 10, "a failure, then a 2 s backoff")
        time.sleep(0.2)
        assert w.alive and not w.snapshot()
        t0 = time.monotonic()
        w.stop()
        took = time.monotonic() - t0
        assert took < 3, f"stop() took {took:.1f} s"
        print(f"stop() while the API server is down: {took:.3f} s")
        assert not w.alive
        assert any("Connection refused" in line or "ProtocolError" in line for line in log), log
    finally:
        kube_server.start_apiserver()
