"""Watch the pods of one workflow from a background thread, for a supervisor loop that must never block.

``PodWatcher(api, namespace, "osmo/workflow=wf-1").start()`` runs a daemon thread that lists the pods matching
the label selector, remembers the list's resourceVersion and then watches from it (with bookmarks), keeping an
in-memory snapshot. The supervisor reads it every few milliseconds: ``snapshot()``, ``deleted()``,
``generation`` and ``relists`` only take a lock and copy, they never touch the network.

What it guarantees:

- **Eventually exact.** ``snapshot()`` holds every pod that matched the selector at the last list or watch event
  applied, as ``api.sanitize_for_serialization(V1Pod)`` (camelCase keys, like the API's JSON). Pods are never
  invented or lost: whatever happens on the wire, the thread ends up with a fresh list and watches from there.
- **Resumes, relists only when it must.** Each watch resumes from the last resourceVersion seen (pod events and
  BOOKMARKs). A watch the server ends (``timeout_seconds``) is restarted from that version without a list.
  410 Gone (an ERROR event or an ``ApiException``) means history was lost: it relists at once. Any other
  failure (API server restarting, connection refused or reset, 5xx, 429, timeouts, even a bug) is retried
  with exponential backoff from ``retry_delay`` to ``max_retry_delay`` and then relists. A relist replaces the
  snapshot: pods missing from the new list count as deleted. ``relists`` counts completed relists.
- **Deletions are kept.** ``deleted()`` names every pod seen and since deleted (its last state is kept too,
  ``deleted_pod()``) until ``forget()``. A name is never in both ``snapshot()`` and ``deleted()``: a pod
  created again under a deleted name leaves ``deleted()``.
- **Never dies.** Every exception is caught and reported through ``on_event`` (one line each); only
  ``stop()`` ends the thread. ``generation`` grows with every change applied (callers compare it to skip work).
- **Stops promptly.** ``stop()`` shuts the watch's socket down and returns within ~1.5 s, even with the API
  server down; a thread still stuck in a request by then is a daemon and applies nothing after ``stop()``.

The pod dicts ``snapshot()`` returns are shared with the watcher (replaced, never changed in place by it):
treat them as read-only.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import kubernetes
import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

CONNECT_TIMEOUT = 5.0
LIST_READ_TIMEOUT = 30.0
WATCH_READ_SLACK = 30.0  # read timeout beyond watch_timeout: a silent, half-open connection is given up
LIST_PAGE = 500
STOP_WAIT = 1.5


class PodWatcher:
    """The pods of one workflow (namespace + label selector), kept up to date by a daemon thread."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, label_selector: str,
                 on_event: Callable[[str], None] | None = None,
                 retry_delay: float = 0.5, max_retry_delay: float = 5.0, watch_timeout: int = 60) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        self.label_selector = label_selector
        self._on_event = on_event
        self._retry_delay = retry_delay
        self._max_retry_delay = max(max_retry_delay, retry_delay)
        self._watch_timeout = int(watch_timeout)
        self._lock = threading.Lock()
        self._pods: dict[str, dict] = {}
        self._deleted: dict[str, dict] = {}
        self._generation = 0
        self._relists = 0
        self._rv: str | None = None
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch = watch.Watch()
        # Test hook: called with the resourceVersion a watch is about to resume from, returns the one to use.
        self._before_watch: Callable[[str], str] | None = None

    # ------------------------------------------------------------------------------------------ public
    def start(self) -> "PodWatcher":
        with self._lock:
            if self._stopping.is_set():
                raise RuntimeError("PodWatcher was stopped; make a new one")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"pod-watch {self.namespace} {self.label_selector}")
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        deadline = time.monotonic() + STOP_WAIT
        while thread.is_alive() and time.monotonic() < deadline:
            self._watch.stop()  # again and again: a watch request may be answered only after the first call
            thread.join(0.05)

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return dict(self._pods)

    def deleted(self) -> set[str]:
        with self._lock:
            return set(self._deleted)

    def deleted_pod(self, name: str) -> dict | None:
        """The last state seen of a deleted pod (until ``forget(name)``)."""
        with self._lock:
            return self._deleted.get(name)

    def forget(self, name: str) -> None:
        with self._lock:
            self._deleted.pop(name, None)

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    @property
    def relists(self) -> int:
        with self._lock:
            return self._relists

    @property
    def resource_version(self) -> str | None:
        with self._lock:
            return self._rv

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------------------------------ the thread
    def _run(self) -> None:
        delay = self._retry_delay
        need_list = True
        while not self._stopping.is_set():
            phase = "list"
            try:
                if need_list:
                    self._list()
                    need_list, delay = False, self._retry_delay
                phase = "watch"
                t0 = time.monotonic()
                if not self._watch_once() and time.monotonic() - t0 < min(1.0, self._watch_timeout / 2):
                    self._stopping.wait(self._retry_delay)  # watches closed at once by a server or proxy: no hot loop
                continue  # the server ended the watch: resume from the last resourceVersion, no relist
            except ApiException as exc:
                if self._stopping.is_set():
                    break
                if exc.status == 410 and phase == "watch":
                    self._log(f"watch expired (410): relisting ({_reason(exc)})")
                    need_list = True
                    continue
                why = f"{phase} failed: API error {exc.status} ({_reason(exc)})"
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive any failure
                if self._stopping.is_set():
                    break
                why = f"{phase} failed: {_describe(exc)}"
            self._log(f"{why}; retrying in {delay:.1f} s, then relisting")
            need_list = True
            self._stopping.wait(delay)
            delay = min(delay * 2, self._max_retry_delay)

    def _list(self) -> None:
        items: list[Any] = []
        rv, cont = None, None
        while True:
            kwargs: dict[str, Any] = {"label_selector": self.label_selector, "limit": LIST_PAGE,
                                      "_request_timeout": (CONNECT_TIMEOUT, LIST_READ_TIMEOUT)}
            if cont:
                kwargs["_continue"] = cont
            page = self._core.list_namespaced_pod(self.namespace, **kwargs)
            rv = rv or page.metadata.resource_version  # every page is of the first page's snapshot
            items.extend(page.items or [])
            cont = page.metadata._continue
            if not cont:
                break
        fresh = {}
        for item in items:
            pod = self._api.sanitize_for_serialization(item)
            fresh[pod["metadata"]["name"]] = pod
        with self._lock:
            if self._stopping.is_set():
                return
            relist = self._synced.is_set()
            gone = set(self._pods) - set(fresh)
            for name in gone:
                self._deleted[name] = self._pods[name]
            for name in fresh:
                self._deleted.pop(name, None)
            if not relist or fresh != self._pods:
                self._generation += 1
            self._pods, self._rv = fresh, rv
            self._relists += relist
        self._synced.set()
        self._log(f"{'relisted' if relist else 'listed'} {len(fresh)} pods at resourceVersion {rv}"
                  + (f"; gone since: {', '.join(sorted(gone))}" if gone else ""))

    def _watch_once(self) -> bool:
        """One watch from the last resourceVersion until the server ends it; True if any event came."""
        rv = self.resource_version
        if self._before_watch is not None:
            rv = self._before_watch(rv)
        if self._stopping.is_set():
            return True
        got = False
        for event in self._watch.stream(
                self._core.list_namespaced_pod, self.namespace, label_selector=self.label_selector,
                resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=self._watch_timeout,
                _request_timeout=(CONNECT_TIMEOUT, self._watch_timeout + WATCH_READ_SLACK)):
            if self._stopping.is_set():
                return True
            got = True
            self._apply(event)
        return got

    def _apply(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "BOOKMARK":
            rv = ((event.get("raw_object") or {}).get("metadata") or {}).get("resourceVersion")
            if rv:
                with self._lock:
                    self._rv = rv
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            self._log(f"ignored watch event of type {kind!r}")
            return
        pod = self._api.sanitize_for_serialization(event["object"])
        meta = pod.get("metadata") or {}
        name = meta.get("name")
        with self._lock:
            if self._stopping.is_set():
                return
            if kind == "DELETED":
                self._pods.pop(name, None)
                self._deleted[name] = pod
            else:
                self._pods[name] = pod
                self._deleted.pop(name, None)
            self._rv = meta.get("resourceVersion") or self._rv
            self._generation += 1

    def _log(self, line: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(line)
        except Exception:  # noqa: BLE001 - a failing log callback must not kill the watcher
            pass


def _reason(exc: ApiException) -> str:
    return _short(exc.reason or exc.body or "")


def _describe(exc: BaseException) -> str:
    """One line for an exception; urllib3's MaxRetryError is described by its cause (connection refused...)."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    return f"{type(exc).__name__}: {_short(exc)}"


def _short(value: object, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
