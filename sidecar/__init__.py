"""The osmo task sidecar: moves a task's data around the task command.

``osmo-sidecar download`` fills the task's inputs before it starts, ``osmo-sidecar exec`` runs the
command and records its exit code, ``osmo-sidecar upload`` stores its outputs afterwards. The runner
and the sidecar talk only through files in the task's run directory (``osmo_run/contract.py``); the
local runner runs these commands as processes around the task and the Kubernetes runner as an init
container, the task container's wrapper and a sidecar container (docs/SIDECAR.md).

Modules: ``main`` (the command line), ``taskfile`` (reading and checking task.json), ``download``,
``upload`` and ``execute`` (the three commands), ``store`` (opening the dataset store), ``remote``
(URLs through fsspec), ``selection`` (regex to the store's globs), ``retry`` (bounded retries of one
item), ``errors`` and ``console`` (one-line messages, every line prefixed ``[osmo-sidecar] ``).

The sidecar imports only ``osmo_store.repository``, ``osmo_store.errors``, ``osmo_store.ids`` and
``osmo_run.contract`` from this project.
"""

from __future__ import annotations

__all__: list[str] = []
