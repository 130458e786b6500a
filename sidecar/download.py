"""``osmo-sidecar download``: fill ``data/input/<N>/`` for every input, before the task starts.

Where each input lands (the layout OSMO's tutorials rely on):

- ``task`` (an upstream task's output dataset): its files directly in ``input/<N>/``;
- ``dataset`` (``NAME``, ``NAME:TAG`` or ``NAME:VERSION``): its files in ``input/<N>/<NAME>/``;
- ``url``: a folder's (prefix's) files directly in ``input/<N>/``; a single file as
  ``input/<N>/<base name>``.

``regex`` keeps the files whose POSIX path relative to the dataset root, or to the URL, matches it
(``re.search``). A dataset reference is resolved once to an exact version; that version is what is
downloaded and what ``download.json`` records. The empty ``data/output/`` is created too.

Inputs are fetched in order; the first one that fails (after its retries) ends the phase with code
2010 and a message naming the input and the reason, and later inputs are not fetched.
"""

from __future__ import annotations

import os
from typing import Any

from osmo_store.ids import parse_ref
from osmo_store.report.render import plural
from osmo_run.contract import INPUT_FAILED, DataStatus, InputSpec, RunDir, TaskContract

from sidecar.console import say
from sidecar.errors import DataError
from sidecar.remote import Remote
from sidecar.retry import RetryPolicy, with_retry
from sidecar.selection import select
from sidecar.store import StoreHandle
from sidecar.taskfile import compile_regex


def describe_input(n: int, spec: InputSpec) -> str:
    if spec.kind == "task":
        return f"input {n} (task {spec.task or spec.ref})"
    if spec.kind == "dataset":
        return f"input {n} (dataset {spec.ref})"
    return f"input {n} (url {spec.url})"


def run_download(run: RunDir, contract: TaskContract, policy: RetryPolicy) -> DataStatus:
    os.makedirs(run.output_dir, exist_ok=True)
    datasets: list[dict[str, Any]] = []
    with StoreHandle(contract.store, policy) as store:
        for n, spec in enumerate(contract.inputs):
            what = describe_input(n, spec)
            dest = run.input_dir(n)
            os.makedirs(dest, exist_ok=True)
            try:
                if spec.kind == "url":
                    _url_input(what, spec, dest, policy)
                else:
                    datasets.append(_store_input(what, n, spec, dest, store, policy))
            except DataError as exc:
                return DataStatus(INPUT_FAILED, f"{what}: {exc}", tuple(datasets))
    return DataStatus(0, f"{plural(len(contract.inputs), 'input')} downloaded", tuple(datasets))


def _store_input(what: str, n: int, spec: InputSpec, dest: str, store: StoreHandle,
                 policy: RetryPolicy) -> dict[str, Any]:
    assert spec.ref is not None  # checked with the contract
    ref = parse_ref(spec.ref)
    regex = compile_regex(spec.regex)
    target = os.path.join(dest, ref.name) if spec.kind == "dataset" else dest

    def fetch(attempt: int) -> dict[str, Any]:
        repo = store.get()
        _, rec = repo.log.resolve(ref)
        exact = f"{ref.name}:{rec['version']}"
        os.makedirs(target, exist_ok=True)
        if regex is None:
            _, result = repo.download(exact, target)
            files, nbytes = result.files, result.bytes
        else:
            _, entries = repo.entries(exact)
            sizes = {e.path: e.size for e in entries}
            chosen = select([e.path for e in entries], regex)
            if not chosen.empty:
                repo.download(exact, target, include=chosen.include, exclude=chosen.exclude)
            files, nbytes = len(chosen.paths), sum(sizes[p] for p in chosen.paths)
        return {"input": n, "kind": spec.kind, "ref": spec.ref, "dataset": ref.name,
                "version": rec["version"], "files": files, "bytes": nbytes,
                **({"task": spec.task} if spec.task else {}), **({"regex": spec.regex} if spec.regex else {})}

    entry = with_retry(what, fetch, policy)
    filtered = f" matching regex {spec.regex}" if spec.regex else ""
    say(f"{what}: {entry['dataset']}:{entry['version']}, {plural(entry['files'], 'file')}{filtered}, "
        f"{entry['bytes']} bytes -> {target}")
    return entry


def _url_input(what: str, spec: InputSpec, dest: str, policy: RetryPolicy) -> None:
    assert spec.url is not None
    regex = compile_regex(spec.regex)

    def fetch(attempt: int) -> tuple[int, int]:
        remote = Remote(spec.url)
        files = [f for f in remote.list_files() if regex is None or regex.search(f.rel)]
        return len(files), remote.download(files, dest, resume=attempt > 1)

    count, nbytes = with_retry(what, fetch, policy)
    filtered = f" matching regex {spec.regex}" if spec.regex else ""
    say(f"{what}: {plural(count, 'file')}{filtered}, {nbytes} bytes -> {dest}")
