"""The local runner: workflows run on this machine by a detached supervisor process.

Modules, one responsibility each (nothing here imports ``osmo_store`` or ``sidecar``: all data work
is done by the sidecar, run as a subprocess around each task exactly as a pod would run it):

``paths``       where state, logs and run directories live (``$OSMO_STATE_DIR``, XDG state dir)
``statuses``    OSMO's workflow, group and task statuses and how they combine
``db``          the SQLite database (WAL mode): schema and connections
``state``       workflow, group, task and attempt records on top of ``db``
``procs``       process identity (pid + start time + boot id), process trees, prctl helpers
``settings``    the local pool config file (capacity, platforms, isolation, grace period, retries)
``pool``        machine capacity, resource requests and gang admission (a ledger in the database)
``gpus``        this machine's GPUs (nvidia-smi), picking GPUs for a gang, telling a task its GPUs
``holdings``    who holds what in the ledger (live rows only), and why a group must wait
``resources``   the local pool's report for ``osmo resource list`` / ``osmo pool list``
``isolation``   can tasks get Linux namespaces here? the per-group network hub
``taskinit``    the small "pod init" each task command runs under (namespaces, mounts, files, signals)
``engine``      is a container engine (Podman, Docker) usable here, and what it can enforce
``engine_cli``  the engine's command lines, built from one ``ContainerSpec`` per container
``engine_objects``  the group's engine network, and removing what dead supervisors left (by label)
``limits``      a task's cpu, memory and storage as limits (container options, log lines)
``cgroups``     cgroup limits (cpu, memory) for tasks that run as host processes
``engineplan``  one attempt as a container: containerinit's config and the task log's lines
``containerinit``  the host process each container runs under (create, files, start, stop, remove)
``prepare``     one attempt's run directory, sidecar contract, tokens and taskinit config
``attempt``     one task attempt: download -> command -> upload, as a non-blocking state machine
``group_run``   a gang-scheduled group: barrier, lead rules, exit actions, timeouts
``supervisor``  the detached process that runs one workflow's DAG (``python -m ...supervisor ID``)
``service``     what the CLI calls: submit, wait, cancel, reconcile dead supervisors, query
``logs``        task log files: runner notices, reading and following
``report``      text rendering of ``list`` and ``query``
"""
