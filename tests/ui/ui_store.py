"""A real local store for the ``osmo ui`` page tests, in a private environment (HOME, XDG_*, OSMO_* in the test
folder): ``osmo(...)`` runs the CLI on it as a user would, ``client(monkeypatch)`` serves the UI on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from osmo_ui.app import create_app
from osmo_ui.security import Guard
from osmo_ui.sources import Sources

TINY_STORE = ("--chunk-min", "256", "--chunk-avg", "1024", "--chunk-max", "4096", "--pack-size", "16384")


class Store:
    """A store folder and a private environment; ``osmo(...)`` runs the CLI on it as a user would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = str(root / "store")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("OSMO_", "XDG_"))}
        for var, sub in (("HOME", "home"), ("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"),
                         ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state"), ("OSMO_CACHE_DIR", "osmo-cache"),
                         ("OSMO_STATE_DIR", "osmo-state")):
            (root / sub).mkdir(exist_ok=True)
            self.env[var] = str(root / sub)
        self.env["OSMO_CONFIG"] = str(root / "config" / "osmo.yaml")

    def osmo(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "osmo_store.cli.main", "--store", self.path, *args],
                              env=self.env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"osmo {' '.join(args)} failed ({proc.returncode}): {proc.stderr}"
        return proc.stdout

    def json(self, *args: str):
        return json.loads(self.osmo(*args, "--json"))

    def init(self) -> "Store":
        self.osmo("store", "init", *TINY_STORE)
        return self

    def client(self, monkeypatch: pytest.MonkeyPatch, runtime=None) -> TestClient:
        for key in [k for k in os.environ if k.startswith(("OSMO_", "XDG_"))]:
            monkeypatch.delenv(key)
        for key, value in self.env.items():
            if key.startswith(("OSMO_", "XDG_")) or key == "HOME":
                monkeypatch.setenv(key, value)
        sources = Sources(store_url=self.path) if runtime is None else Sources(store_url=self.path, runtime=runtime)
        app = create_app(sources, Guard.for_host("127.0.0.1"))
        return TestClient(app, headers={"Host": "127.0.0.1"})


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
