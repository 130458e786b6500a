"""``python -m osmo_run.kube.supervisor WORKFLOW_ID``: runs one workflow's DAG on a Kubernetes cluster.

The local supervisor's loop (group order, FAILED_UPSTREAM, cancel, the workflow's final status,
the same state database, so ``list``, ``query``, ``logs`` and ``cancel`` work unchanged) with three
differences: a group is admitted at once (the cluster's scheduler does the gang admission, not a
local ledger), its tasks are pods (``group.py``), and at the end every object the workflow created
is deleted by label. The cluster comes from the pool's ``kubernetes:`` section, snapshotted at
submit: kubeconfig context (``$KUBECONFIG`` or ~/.kube/config), else the in-cluster config.
"""

from __future__ import annotations

import json
import signal
import sys

from kubernetes import client, config

from osmo_run.kube.apply import delete_workflow
from osmo_run.kube.group import KubeContext, KubeGroupRun
from osmo_run.kube.objects import LABEL_WORKFLOW, label_value
from osmo_run.kube.podexec import PodExec
from osmo_run.kube.pool import PoolConfigError, parse_pool
from osmo_run.kube.watch import PodWatcher
from osmo_run.local import supervisor as local
from osmo_run.local.context import RunContext
from osmo_run.local.credentials import resolve_workflow
from osmo_run.local.errors import RunnerError
from osmo_run.local.isolation import Isolation
from osmo_run.local.settings import Settings
from osmo_run.spec import Dag, load_rendered

SYNC_TIMEOUT = 30.0


def api_client(context: str | None) -> client.ApiClient:
    """An API client for the kubeconfig ``context`` (default: the current one), else in-cluster."""
    try:
        return config.new_client_from_config(context=context)
    except config.ConfigException as exc:
        if context is not None:
            raise RunnerError(f"kubeconfig context {context!r}: {exc}") from None
        try:
            config.load_incluster_config()
        except config.ConfigException:
            raise RunnerError(f"no Kubernetes cluster configured: {exc}") from None
        return client.ApiClient()


class KubeSupervisor(local.Supervisor):
    kube: KubeContext | None = None

    def prepare(self) -> RunContext:
        self.state.set_supervisor(self.id, self.me)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        settings = Settings.from_json(json.loads(self.row["settings"] or "{}"))
        workflow = load_rendered(self.row["spec"], file=self.row["file"])
        try:
            pool = parse_pool(settings.kubernetes)
        except PoolConfigError as exc:
            raise RunnerError(str(exc)) from None
        # the values (from the submitting environment it inherited) go into each attempt's Secret only
        credentials = self.credentials_for(workflow, settings)
        api = api_client(pool.context)
        watcher = PodWatcher(api, pool.namespace, f"{LABEL_WORKFLOW}={label_value(self.id)}",
                             on_event=lambda line: print(f"workflow {self.id}: {line}", flush=True)).start()
        if not watcher.wait_synced(SYNC_TIMEOUT):
            watcher.stop()
            raise RunnerError(f"cannot list pods in namespace {pool.namespace!r} within {SYNC_TIMEOUT:g} s")
        self.kube = KubeContext(api, pool, watcher, settings.grace_period, PodExec(api, pool.namespace))
        isolation = Isolation("plain", f"Kubernetes namespace {pool.namespace}")
        print(f"workflow {self.id}: Kubernetes namespace {pool.namespace}, scheduler {pool.scheduler}", flush=True)
        self.state.update_workflow(self.id, isolation=f"kubernetes: namespace {pool.namespace}, "
                                                      f"scheduler {pool.scheduler}")
        self.dag = Dag.from_workflow(workflow)
        return RunContext(self.id, workflow, self.state, self.paths, settings, isolation, None, self.row["store"],
                          credentials=credentials)

    def credentials_for(self, workflow, settings: Settings):
        """Every task's credentials, resolved from this process's environment (inherited from the submit)."""
        return resolve_workflow(workflow, settings.credentials, config=settings.source)

    def _admit(self, group) -> KubeGroupRun:
        return KubeGroupRun(self.ctx, group, self.kube)

    def _release(self, group: str | None = None) -> None:
        if group is not None or self.kube is None:
            return
        try:
            delete_workflow(self.kube.api, self.kube.pool.namespace, self.id)
        finally:
            self.kube.watcher.stop()
            self.kube.exec.shutdown()

    def _reap_orphans(self) -> None:
        pass  # nothing runs on this machine


if __name__ == "__main__":
    sys.exit(local.main(sys.argv[1:], KubeSupervisor))
