"""Task credentials: where their values come from, how a task receives them, what logs must mask.

The spec's ``credentials:`` of a task follows OSMO: each key names a credential; the value is either
a folder (``registry: /root/.creds``: one file per key of the credential in it, mode 0600) or a
mapping ``{ENV_VAR: key}`` (each variable gets that key's value). Locally there is no credential
service, so the pool config's ``credentials:`` declares where each credential's values come from::

    credentials:
      my_s3:
        file: ~/.config/osmo/credentials/my_s3.yaml   # a YAML/JSON mapping key -> value, mode 0600
      other:
        env: {access_key_id: MY_KEY_VAR, access_key: MY_SECRET_VAR}   # key -> a variable of the
                                                                       # submitting environment

Values are resolved at ``submit`` (so every mistake is a one-line error before anything runs) and
again by the supervisor, which inherited the submitting environment; they are never stored: the
database and ``spec.yaml`` hold only the declarations. ``secrets`` lists what task logs mask.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from osmo_run.local.errors import USAGE, RunnerError
from osmo_run.spec import TASK_DATA, normalise_file_path

MIN_MASKED = 4  # shorter values are not masked: masking "ab" would mangle every log line
MAX_FILE = 1024 * 1024
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a key is also a file name in the file form
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CredentialError(RunnerError):
    def __init__(self, message: str) -> None:
        super().__init__(message, USAGE)


@dataclass(frozen=True)
class CredentialFile:
    path: str  # where the task sees it: the declared folder / key, normalised (spec.filepaths)
    value: str


@dataclass(frozen=True)
class TaskCredentials:
    """What one task receives: variables, files, and the values its log must not show."""

    env: dict[str, str]
    files: tuple[CredentialFile, ...]
    secrets: tuple[str, ...]
    notes: tuple[str, ...]  # names only, for the task log


def parse_sources(raw: Any, config: str) -> dict[str, dict[str, Any]]:
    """Validate the pool config's ``credentials:`` section; returns it with ``~`` expanded in files."""
    if not isinstance(raw, dict):
        raise CredentialError(f"{config}: credentials: expected a mapping of credential names")
    sources: dict[str, dict[str, Any]] = {}
    for name, source in raw.items():
        where = f"{config}: credentials.{name}"
        if not isinstance(source, dict) or len(source) != 1 or set(source) - {"file", "env"}:
            raise CredentialError(f"{where}: expected {{file: PATH}} or {{env: {{KEY: VARIABLE}}}}")
        if "file" in source:
            if not isinstance(source["file"], str) or not source["file"].strip():
                raise CredentialError(f"{where}.file: expected the path of a YAML or JSON file")
            sources[str(name)] = {"file": os.path.abspath(os.path.expanduser(source["file"]))}
            continue
        env = source["env"]
        if not isinstance(env, dict) or not env:
            raise CredentialError(f"{where}.env: expected a mapping of keys to variable names")
        for key, variable in env.items():
            if not _KEY.match(str(key)):
                raise CredentialError(f"{where}.env: bad key {key!r} (letters, digits, '_', '.', '-')")
            if not isinstance(variable, str) or not _VARIABLE.match(variable):
                raise CredentialError(f"{where}.env.{key}: expected a variable name, got {variable!r}")
        sources[str(name)] = {"env": {str(k): v for k, v in env.items()}}
    return sources


def _read_file(name: str, path: str) -> dict[str, str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise CredentialError(f"credential {name!r}: {path}: cannot read it: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CredentialError(f"credential {name!r}: {path}: not a regular file")
        if info.st_mode & 0o077:
            raise CredentialError(f"credential {name!r}: {path}: group or others may access it "
                                  f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}")
        if info.st_size > MAX_FILE:
            raise CredentialError(f"credential {name!r}: {path}: larger than {MAX_FILE // 1024} KiB")
        with os.fdopen(fd, "rb", closefd=False) as f:
            text = f.read(MAX_FILE + 1)
    finally:
        os.close(fd)
    try:
        loaded = yaml.safe_load(text.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        raise CredentialError(f"credential {name!r}: {path}: not valid YAML or JSON") from None
    if not isinstance(loaded, dict) or not loaded:
        raise CredentialError(f"credential {name!r}: {path}: expected a mapping of key: value")
    values = {}
    for key, value in loaded.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise CredentialError(f"credential {name!r}: key {key} in {path}: expected text, "
                                  f"got {type(value).__name__}")
        values[str(key)] = str(value)
    return values


def load_values(name: str, source: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Every key and value of one declared credential."""
    if "file" in source:
        return _read_file(name, source["file"])
    values = {}
    for key, variable in source["env"].items():
        if variable not in environ:
            raise CredentialError(f"credential {name!r}: key {key}: the variable ${variable} is not set in "
                                  "the submitting environment")
        values[key] = environ[variable]
    return values


def _origin(source: Mapping[str, Any]) -> str:
    return source["file"] if "file" in source else "the pool config's env: mapping"


def masked_values(values) -> tuple[str, ...]:
    """The strings a log must not show: each value, and each line of a value of several lines,
    at least ``MIN_MASKED`` characters long; longest first."""
    found = set()
    for value in values:
        lines = [line.strip() for line in value.splitlines()] if "\n" in value.strip() else []
        found.update(part for part in (value, *lines) if len(part.strip()) >= MIN_MASKED)
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


def resolve_task(task, sources: Mapping[str, Mapping[str, Any]], *, config: str | None,
                 environ: Mapping[str, str]) -> TaskCredentials:
    """What ``task`` receives from its ``credentials:`` (raises ``CredentialError``)."""
    env: dict[str, str] = {}
    files: list[CredentialFile] = []
    values: list[str] = []
    notes: list[str] = []
    for name, use in task.credentials.items():
        where = f"task {task.name!r}: credentials.{name}"
        if name not in sources:
            raise CredentialError(f"{where}: no credential {name!r} in the pool config {config or '(none)'} "
                                  "(declare where its values come from under credentials:)")
        try:
            known = load_values(name, sources[name], environ)
        except CredentialError as exc:
            raise CredentialError(f"task {task.name!r}: {exc}") from None
        if isinstance(use, dict):
            for variable, key in use.items():
                if not _VARIABLE.match(variable):
                    raise CredentialError(f"{where}.{variable}: not a valid variable name")
                if variable in task.environment:
                    raise CredentialError(f"{where}.{variable}: also set in the task's environment:")
                if key not in known:
                    raise CredentialError(f"{where}.{variable}: credential {name!r} has no key {key!r} "
                                          f"(keys in {_origin(sources[name])}: {', '.join(sorted(known))})")
                env[variable] = known[key]
                values.append(known[key])
            notes.append(f"credentials: {name} as variables {', '.join(sorted(use))}")
            continue
        folder = str(use).rstrip("/") or "/"
        for key, value in sorted(known.items()):
            if not _KEY.match(key):
                raise CredentialError(f"{where}: key {key!r} of credential {name!r} cannot be a file name")
            try:
                path = normalise_file_path(f"{folder}/{key}")
            except ValueError as exc:
                raise CredentialError(f"{where}: {exc}") from None
            if path.startswith(TASK_DATA + "/") or "{{" in path:
                raise CredentialError(f"{where}: the folder {use!r} is in the task's data ({TASK_DATA}: "
                                      "inputs and the uploaded output); choose another folder")
            files.append(CredentialFile(path, value))
            values.append(value)
        notes.append(f"credentials: {name} as files in {folder} ({', '.join(sorted(known))})")
    short = sorted({len(v) for v in values if len(v.strip()) < MIN_MASKED})
    if short:
        notes.append(f"credentials: values shorter than {MIN_MASKED} characters are not masked in logs")
    return TaskCredentials(env, tuple(files), masked_values(values), tuple(notes))


def resolve_workflow(workflow, sources: Mapping[str, Mapping[str, Any]], *, config: str | None,
                     environ: Mapping[str, str] | None = None) -> dict[str, TaskCredentials]:
    """Every task's credentials, by task name (tasks without ``credentials:`` are left out)."""
    environ = os.environ if environ is None else environ
    return {task.name: resolve_task(task, sources, config=config, environ=environ)
            for group in workflow.groups for task in group.tasks if task.credentials}
