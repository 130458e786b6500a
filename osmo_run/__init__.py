"""osmo_run: the workflow runtime, compatible with NVIDIA OSMO's version 2 workflow YAML.

Subpackages:
  ``osmo_run.spec``  the spec: templates, typed models, validation, tokens, the group DAG, workflow ids.
  ``osmo_run.cli``   the ``osmo workflow`` command group (validate, submit).
  ``osmo_run.api``   the runtime's public face for other programs (the web UI): workflows, logs, actions.

``osmo_run`` never imports ``osmo_store`` internals: data work is handed to the sidecar.
"""

from __future__ import annotations

__all__: list[str] = []
