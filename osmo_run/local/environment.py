"""The environment a task's command starts with: a pod's, not the submitting shell's.

A task sees exactly (later lines win):

- ``PATH``: the submitting environment's ``PATH`` (tasks run with this machine's programs, the image
  is not pulled, so its PATH is the closest thing to the image's), else ``DEFAULT_PATH``;
- ``HOME``: the task's working folder (``/osmo/work`` when isolated), so tools that read or write
  ``~`` (``~/.aws``, ``~/.cache``) see the task's own folder, never the submitting user's home;
- ``LANG=C.UTF-8``; ``HOSTNAME``: the task's hostname;
- OSMO's variables: ``OSMO_WORKFLOW_ID``, ``OSMO_GROUP_NAME``, ``OSMO_TASK_NAME``, ``OSMO_ATTEMPT``;
- host processes on a pool with GPUs: ``NVIDIA_VISIBLE_DEVICES`` and ``CUDA_VISIBLE_DEVICES``, the
  UUIDs of the GPUs assigned to the task (``gpus.host_environment``; none visible if it has none);
- the spec's ``environment:``;
- the variables of the task's ``credentials:`` (``credentials.py``; a name also in ``environment:``
  is refused at submit).

Nothing else of the submitting environment reaches the command (no ``AWS_*``, ``OSMO_*``, ``TERM``,
``SSH_*``, ...). The runner's own processes (supervisor, sidecar, taskinit) keep the submitting
environment: the sidecar needs the store's credentials.
"""

from __future__ import annotations

import os
from typing import Mapping

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LANG = "C.UTF-8"


def task_environment(*, workflow_id: str, group: str, task: str, attempt: int, home: str, hostname: str,
                     spec: Mapping[str, str], credentials: Mapping[str, str],
                     host: Mapping[str, str] | None = None, gpus: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's whole environment (see the module docstring); ``host``: the submitting
    environment (default: this process's, which the supervisor inherited from ``submit``)."""
    host = os.environ if host is None else host
    env = {
        "PATH": host.get("PATH") or DEFAULT_PATH,
        "HOME": home,
        "LANG": LANG,
        "HOSTNAME": hostname,
        "OSMO_WORKFLOW_ID": workflow_id,
        "OSMO_GROUP_NAME": group,
        "OSMO_TASK_NAME": task,
        "OSMO_ATTEMPT": str(attempt),
    }
    env.update(gpus or {})
    env.update(spec)
    env.update(credentials)
    return env
