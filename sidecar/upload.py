"""``osmo-sidecar upload``: store the task's outputs after the command ended (whatever its code;
``--wait`` first waits for that end, see ``wait.py``).

Outputs, in contract order (each retried on its own, see ``retry.py``; a failed one does not stop
the others, so everything that can be kept is kept):

- ``task_output``: the whole ``data/output/`` as a new version of ``dataset``
  (``<workflow_id>--<task>``), also when it is empty: downstream tasks always find a version to read;
- ``dataset``: ``data/output/<path>`` (default: the whole folder; a single file is stored under its
  base name) as a new version of a user dataset, with ``tag``, ``labels`` and metadata;
- ``url``: the files of ``data/output/`` whose relative path matches ``regex`` (``re.search``;
  default: all), copied below the URL with their relative paths.

Every version written carries metadata (``VERSION_METADATA``): the sidecar's defaults, then the
contract's ``metadata``, then the output's own metadata (later wins):

    workflow_id, task, attempt     from the contract
    exit_code                      the task command's exit code, when ``status/exit_code`` exists
    input.<N>                      for each input: NAME:VERSION read from the store (download.json),
                                   or the URL

Symbolic links and special files in the output are not stored (the store skips them; the log says
how many). Any failure ends the phase with code 2012 and one line naming each failed output.
"""

from __future__ import annotations

import os
from typing import Any

from osmo_store.transfer.upload import UploadRequest
from osmo_store.report.render import plural
from osmo_run.contract import (DOWNLOAD_STATUS, OUTPUT_FAILED, DataStatus, OutputSpec, RunDir,
                               TaskContract)

from sidecar.console import say
from sidecar.errors import DataError, one_line
from sidecar.remote import Remote
from sidecar.retry import RetryPolicy, with_retry
from sidecar.store import StoreHandle
from sidecar.taskfile import check_output_path, compile_regex
from sidecar.wait import exit_code_or_none


def describe_output(i: int, spec: OutputSpec) -> str:
    if spec.kind == "task_output":
        return f"output {i} (task output {spec.dataset})"
    if spec.kind == "dataset":
        return f"output {i} (dataset {spec.dataset})"
    return f"output {i} (url {spec.url})"


def version_metadata(contract: TaskContract, run: RunDir, exit_code: int | None) -> dict[str, str]:
    """The metadata every version written by this task carries (before the output's own)."""
    meta = {"workflow_id": contract.workflow_id, "task": contract.task, "attempt": str(contract.attempt)}
    if exit_code is not None:
        meta["exit_code"] = str(exit_code)
    read = {int(d["input"]): d for d in _download_datasets(run) if "input" in d}
    for n, spec in enumerate(contract.inputs):
        if spec.kind == "url":
            meta[f"input.{n}"] = spec.url or ""
        elif n in read:
            meta[f"input.{n}"] = f"{read[n]['dataset']}:{read[n]['version']}"
    meta.update(contract.metadata)
    return meta


def _download_datasets(run: RunDir) -> tuple[dict[str, Any], ...]:
    try:
        status = run.read_status(DOWNLOAD_STATUS)
    except (ValueError, KeyError, TypeError, OSError):
        return ()
    return status.datasets if status is not None else ()


def run_upload(run: RunDir, contract: TaskContract, policy: RetryPolicy) -> DataStatus:
    exit_code = exit_code_or_none(run)
    if exit_code not in (None, 0):
        say(f"the task exited with code {exit_code}; uploading its outputs anyway")
    if not os.path.isdir(run.output_dir):
        say(f"{run.output_dir} does not exist; treating the task's output as empty")
        os.makedirs(run.output_dir, exist_ok=True)
    base_meta = version_metadata(contract, run, exit_code)
    written: list[dict[str, Any]] = []
    failures: list[str] = []
    with StoreHandle(contract.store, policy) as store:
        for i, spec in enumerate(contract.outputs):
            what = describe_output(i, spec)
            try:
                if spec.kind == "url":
                    _url_output(what, spec, run.output_dir, policy)
                else:
                    written.append(_store_output(what, i, spec, run.output_dir, base_meta, store, policy))
            except DataError as exc:
                say(f"{what}: failed: {exc}")
                failures.append(f"{what}: {exc}")
    if failures:
        return DataStatus(OUTPUT_FAILED, "; ".join(failures), tuple(written))
    return DataStatus(0, f"{plural(len(contract.outputs), 'output')} uploaded", tuple(written))


def _source(spec: OutputSpec, output_dir: str) -> str:
    if spec.path is None:
        return output_dir
    rel = check_output_path(spec.path)
    source = os.path.normpath(os.path.join(output_dir, *rel.split("/")))
    real_root = os.path.realpath(output_dir)
    real = os.path.realpath(source)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise DataError(f"path {spec.path!r} leads outside the task's output folder")
    if not os.path.lexists(source):
        raise DataError(f"path {spec.path!r}: no such file or folder in the task's output")
    return source


def _store_output(what: str, i: int, spec: OutputSpec, output_dir: str, base_meta: dict[str, str],
                  store: StoreHandle, policy: RetryPolicy) -> dict[str, Any]:
    assert spec.dataset is not None
    source = _source(spec, output_dir)
    request = UploadRequest(spec.dataset, [source], tags=[spec.tag] if spec.tag else [],
                            description=f"{base_meta.get('workflow_id', '')} {base_meta.get('task', '')}".strip(),
                            metadata={**base_meta, **spec.metadata}, labels=dict(spec.labels))
    result = with_retry(what, lambda _: store.get().upload(request), policy)
    if result.skipped:
        say(f"{what}: {plural(len(result.skipped), 'symbolic link or special file', 'symbolic links or special files')} not stored, "
            f"e.g. {result.skipped[0][0]} ({result.skipped[0][1]})")
    say(f"{what}: {spec.dataset}:{result.version}, {plural(result.files, 'file')}, {result.logical_bytes} bytes "
        f"({result.stored_bytes} new bytes stored)")
    return {"output": i, "kind": spec.kind, "dataset": spec.dataset, "version": result.version,
            "files": result.files, "logical_bytes": result.logical_bytes,
            "stored_bytes": result.stored_bytes, "checksum": result.checksum,
            **({"tag": spec.tag} if spec.tag else {}), **({"path": spec.path} if spec.path else {})}


def _url_output(what: str, spec: OutputSpec, output_dir: str, policy: RetryPolicy) -> None:
    assert spec.url is not None
    regex = compile_regex(spec.regex)
    files = [(rel, path) for rel, path in local_files(output_dir) if regex is None or regex.search(rel)]

    def copy(attempt: int) -> int:
        return Remote(spec.url).upload(files, resume=attempt > 1)

    nbytes = with_retry(what, copy, policy)
    filtered = f" matching regex {spec.regex}" if spec.regex else ""
    say(f"{what}: {plural(len(files), 'file')}{filtered}, {nbytes} bytes copied")


def local_files(root: str) -> list[tuple[str, str]]:
    """``(relative POSIX path, absolute path)`` of the regular files below ``root``, sorted;
    symbolic links are not followed."""
    out = []

    def fail(exc: OSError) -> None:
        raise DataError(one_line(exc))

    for folder, _dirs, names in os.walk(root, onerror=fail, followlinks=False):
        rel_folder = os.path.relpath(folder, root)
        for name in names:
            path = os.path.join(folder, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            rel = name if rel_folder == "." else f"{rel_folder}/{name}".replace(os.sep, "/")
            out.append((rel, path))
    return sorted(out)
