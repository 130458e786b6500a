"""The local pool's config file and the runner settings it carries.

Location: ``$OSMO_POOL_CONFIG`` if set, else ``$XDG_CONFIG_HOME/osmo/pool.yaml`` (by default
``~/.config/osmo/pool.yaml``). Every key is optional::

    name: local                  # the pool's name, shown in task logs
    capacity:                    # default: this machine's CPUs, memory and GPUs (nvidia-smi)
      cpu: 8
      memory: 32Gi
      gpu: 1
    platforms: [ovx-a40, agx-orin-jp6]  # accepted platform names (default: any name is accepted),
    # or a mapping that also binds a platform to a GPU model (its tasks get GPUs of that model only):
    # platforms: {ovx-a40: {gpu_model: A40}, agx-orin-jp6: {}}
    gpu_command: nvidia-smi      # lists the GPUs (gpus.py; $OSMO_NVIDIA_SMI overrides; default: PATH's)
    strict: false                # true: refuse at submit a group that can never fit the pool
    isolation: auto              # auto | namespaces | none   ($OSMO_ISOLATION overrides)
    engine: auto                 # auto | podman | docker | none: run tasks in their images ($OSMO_ENGINE
                                 # overrides; engine.py)
    network: isolated            # isolated (own address per task) | host (share the host's network)
    grace_period: 10s            # SIGTERM -> SIGKILL when the runner stops a task
    lead_head_start: 1s          # the lead's command starts first; the others once it listens on a
                                 # TCP port, or after this long (0: all at once)
    reschedule_limit: 3          # RESCHEDULE exit actions allowed per task
    exec_timeout: 1d             # defaults for specs that set none
    queue_timeout: 1h
    sidecar: [python3, -m, sidecar.main]  # how to run the sidecar (default: this Python)
    kubernetes: {...}            # the Kubernetes pool (docs/KUBERNETES.md, osmo_run/kube/pool.py)
    runner: local                # local | kubernetes: where ``submit`` runs workflows (--runner overrides)
    credentials:                 # where the values of tasks' credentials: come from (credentials.py)
      my_s3: {file: ~/.config/osmo/credentials/my_s3.yaml}
      other: {env: {access_key: MY_SECRET_VAR}}

``submit`` reads the file once; the workflow keeps that snapshot (``Settings.to_json``).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from osmo_run.local.credentials import parse_sources
from osmo_run.local.errors import RunnerError
from osmo_run.spec import parse_bytes, parse_cpu, parse_duration

ISOLATION_MODES = ("auto", "namespaces", "none")
ENGINE_MODES = ("auto", "podman", "docker", "none")
NETWORK_MODES = ("isolated", "host")
KEYS = {"name", "capacity", "platforms", "gpu_command", "strict", "isolation", "engine", "network", "grace_period", "lead_head_start",
        "reschedule_limit", "exec_timeout", "queue_timeout", "sidecar", "kubernetes", "runner", "credentials"}
RUNNERS = ("local", "kubernetes")


def config_path() -> str:
    if os.environ.get("OSMO_POOL_CONFIG"):
        return os.environ["OSMO_POOL_CONFIG"]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "osmo", "pool.yaml")


_SECONDS = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_seconds(value: Any) -> float:
    """``10s``, ``0.5s``, ``500ms``, ``2m``, ``1h30m`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration must not be negative, got {value!r}")
        return float(value)
    match = _SECONDS.match(str(value).strip())
    if match:
        return float(match.group(1)) * _UNIT[match.group(2)]
    return float(parse_duration(str(value).strip()).seconds)


@dataclass(frozen=True)
class Capacity:
    cpu: float
    memory: int
    gpu: int


@dataclass(frozen=True)
class Settings:
    name: str = "local"
    capacity: dict[str, Any] = field(default_factory=dict)  # overrides of the detected capacity
    platforms: tuple[str, ...] | None = None
    platform_models: dict[str, str] = field(default_factory=dict)  # platform -> GPU model (gpus.py)
    gpu_command: str | None = None  # the nvidia-smi to run (gpus.gpu_command)
    strict: bool = False
    isolation: str = "auto"
    engine: str = "auto"
    network: str = "isolated"
    grace_period: float = 10.0
    lead_head_start: float = 1.0
    reschedule_limit: int = 3
    exec_timeout: float | None = None
    queue_timeout: float | None = None
    sidecar: tuple[str, ...] = ()
    source: str | None = None  # the file read, if any
    kubernetes: dict[str, Any] | None = None  # the raw ``kubernetes:`` section (osmo_run/kube/pool.py)
    runner: str = "local"  # which runner a workflow was submitted to (set at submit)
    credentials: dict[str, Any] = field(default_factory=dict)  # declarations only, never values
    labels: dict[str, str] = field(default_factory=dict)  # the workflow's labels (submit --label; not a config key)

    @property
    def sidecar_argv(self) -> list[str]:
        return list(self.sidecar) or [sys.executable, "-m", "sidecar.main"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Settings":
        raw = dict(raw)
        if raw.get("platforms") is not None:
            raw["platforms"] = tuple(raw["platforms"])
        raw["sidecar"] = tuple(raw.get("sidecar") or ())
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


def _fail(path: str, key: str, message: str) -> RunnerError:
    return RunnerError(f"{path}: {key}: {message}")


def _platforms(path: str, raw: Any) -> tuple[tuple[str, ...], dict[str, str]]:
    """``platforms:`` as a list of names, or a mapping name -> ``{gpu_model: MODEL}`` (or nothing)."""
    if isinstance(raw, list):
        return tuple(str(p) for p in raw), {}
    if not isinstance(raw, dict):
        raise _fail(path, "platforms", "expected a list of platform names or a mapping name -> {gpu_model: MODEL}")
    models = {}
    for name, spec in raw.items():
        if spec is None:
            continue
        if not isinstance(spec, dict) or set(spec) - {"gpu_model"}:
            raise _fail(path, f"platforms.{name}", "expected a mapping with gpu_model (or nothing)")
        if spec.get("gpu_model") is not None:
            models[str(name)] = str(spec["gpu_model"])
    return tuple(str(p) for p in raw), models


def load_settings(path: str | None = None) -> Settings:
    """Read the pool config (absent file: defaults). ``$OSMO_ISOLATION`` overrides ``isolation``,
    ``$OSMO_ENGINE`` ``engine``."""
    path = path or config_path()
    raw: dict[str, Any] = {}
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RunnerError(f"{path}: cannot read the pool config: {exc}") from None
        if not isinstance(raw, dict):
            raise RunnerError(f"{path}: the pool config must be a mapping")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise _fail(path, unknown[0], f"unknown key (known: {', '.join(sorted(KEYS))})")
    values: dict[str, Any] = {"source": path if raw else None}
    try:
        if "name" in raw:
            values["name"] = str(raw["name"])
        if raw.get("capacity") is not None:
            cap = raw["capacity"]
            if not isinstance(cap, dict) or set(cap) - {"cpu", "memory", "gpu"}:
                raise _fail(path, "capacity", "expected a mapping with cpu, memory and/or gpu")
            parsed = {}
            if "cpu" in cap:
                parsed["cpu"] = parse_cpu(cap["cpu"])
            if "memory" in cap:
                parsed["memory"] = parse_bytes(cap["memory"])
            if "gpu" in cap:
                parsed["gpu"] = int(cap["gpu"])
            values["capacity"] = parsed
        if raw.get("platforms") is not None:
            values["platforms"], values["platform_models"] = _platforms(path, raw["platforms"])
        if raw.get("gpu_command") is not None:
            values["gpu_command"] = str(raw["gpu_command"])
        if "strict" in raw:
            values["strict"] = bool(raw["strict"])
        for key, allowed in (("isolation", ISOLATION_MODES), ("engine", ENGINE_MODES), ("network", NETWORK_MODES)):
            if key in raw:
                if str(raw[key]) not in allowed:
                    raise _fail(path, key, f"expected one of {', '.join(allowed)}, got {raw[key]!r}")
                values[key] = str(raw[key])
        for key in ("grace_period", "lead_head_start"):
            if key in raw:
                values[key] = parse_seconds(raw[key])
        if "reschedule_limit" in raw:
            limit = raw["reschedule_limit"]
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise _fail(path, "reschedule_limit", f"expected a whole number >= 0, got {limit!r}")
            values["reschedule_limit"] = limit
        for key in ("exec_timeout", "queue_timeout"):
            if raw.get(key) is not None:
                values[key] = parse_seconds(raw[key])
        if raw.get("sidecar") is not None:
            if not isinstance(raw["sidecar"], list) or not raw["sidecar"]:
                raise _fail(path, "sidecar", "expected a command as a non-empty list")
            values["sidecar"] = tuple(str(a) for a in raw["sidecar"])
        if "runner" in raw:
            if raw["runner"] not in RUNNERS:
                raise _fail(path, "runner", f"expected one of {', '.join(RUNNERS)}, got {raw['runner']!r}")
            values["runner"] = raw["runner"]
        if raw.get("credentials") is not None:
            values["credentials"] = parse_sources(raw["credentials"], path)
        if raw.get("kubernetes") is not None:
            if not isinstance(raw["kubernetes"], dict):
                raise _fail(path, "kubernetes", "expected a mapping (see docs/KUBERNETES.md)")
            values["kubernetes"] = dict(raw["kubernetes"])
    except ValueError as exc:
        raise RunnerError(f"{path}: {exc}") from None
    for key, variable, allowed in (("isolation", "OSMO_ISOLATION", ISOLATION_MODES),
                                   ("engine", "OSMO_ENGINE", ENGINE_MODES)):
        env = os.environ.get(variable)
        if env:
            if env not in allowed:
                raise RunnerError(f"${variable}: expected one of {', '.join(allowed)}, got {env!r}")
            values[key] = env
    return Settings(**values)
