"""The user's configuration file: named stores with their URLs and options.

Location: ``$OSMO_CONFIG`` if set, else ``$XDG_CONFIG_HOME/osmo/config.yaml`` (by default
``~/.config/osmo/config.yaml``). The file is YAML::

    default_store: team            # optional: used when neither --store nor $OSMO_STORE is given
    stores:
      team:
        url: s3://robot-data/osmo
        options:                   # backend options (see README, "Remote stores")
          endpoint_url: https://s3.example.internal
          region: eu-central-1

The file may hold secrets (keys, SAS tokens), so it is written with mode 0600, atomically, and
``redact`` hides those options whenever they are shown.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any

from osmo_store.errors import AlreadyExistsError, NotFoundError, UsageError

STORE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
SECRET_WORDS = ("secret", "key", "token", "password", "connection_string", "sas", "credential")


def config_path() -> str:
    if os.environ.get("OSMO_CONFIG"):
        return os.environ["OSMO_CONFIG"]
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "osmo", "config.yaml")


def is_secret(option: str) -> bool:
    name = option.lower()
    return any(word in name for word in SECRET_WORDS) and name not in ("endpoint_url",)


def redact(options: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if is_secret(k) else v) for k, v in options.items()}


def parse_options(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings into a dict; a malformed pair is a one-line usage error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"option {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


@dataclass(frozen=True)
class StoreLocation:
    """Where a store lives: its URL, backend options, and the configured name it came from."""

    url: str
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


@dataclass
class UserConfig:
    path: str
    stores: dict[str, StoreLocation] = field(default_factory=dict)
    default_store: str | None = None
    # Top-level sections this class does not interpret (``prices:`` of the storage report, ...):
    # kept as read and written back unchanged by ``save``.
    other: dict[str, Any] = field(default_factory=dict)

    @property
    def prices(self) -> dict | None:
        """The ``prices:`` section (storage class -> fields), checked by ``osmo_store.report.load_prices``."""
        return self.other.get("prices")

    @classmethod
    def load(cls, path: str | None = None) -> "UserConfig":
        path = path or config_path()
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"config file {path}: {' '.join(str(exc).split())}") from None
        import yaml  # only when there is a file: most commands on most machines start without it

        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"config file {path}: {' '.join(str(exc).split())}") from None
        if not isinstance(raw, dict):
            raise UsageError(f"config file {path}: expected a mapping at the top level")
        stores = {}
        for name, entry in (raw.get("stores") or {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise UsageError(f"config file {path}: stores.{name}: expected a mapping with a 'url'")
            options = entry.get("options") or {}
            if not isinstance(options, dict):
                raise UsageError(f"config file {path}: stores.{name}.options: expected a mapping")
            stores[str(name)] = StoreLocation(entry["url"], {str(k): v for k, v in options.items()}, str(name))
        default = raw.get("default_store")
        if default is not None and default not in stores:
            raise UsageError(f"config file {path}: default_store {default!r} is not one of the stores")
        other = {str(k): v for k, v in raw.items() if k not in ("stores", "default_store")}
        return cls(path, stores, default, other)

    def save(self) -> None:
        data: dict[str, Any] = {}
        if self.default_store:
            data["default_store"] = self.default_store
        data["stores"] = {name: ({"url": s.url, "options": dict(s.options)} if s.options else {"url": s.url})
                          for name, s in sorted(self.stores.items())}
        data.update(self.other)
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        import yaml

        fd, tmp = tempfile.mkstemp(prefix=".config-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                yaml.safe_dump(data, f, sort_keys=False)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def add(self, name: str, url: str, options: dict[str, Any], replace: bool = False) -> StoreLocation:
        if not STORE_NAME.match(name):
            raise UsageError(f"store name {name!r}: use letters, digits, '_' and '-'")
        if name in self.stores and not replace:
            raise AlreadyExistsError(f"store {name!r} is already configured (use --replace)")
        self.stores[name] = StoreLocation(url, dict(options), name)
        return self.stores[name]

    def remove(self, name: str) -> None:
        if name not in self.stores:
            raise NotFoundError(f"store {name!r} is not configured")
        del self.stores[name]
        if self.default_store == name:
            self.default_store = None

    def resolve(self, spec: str | None) -> StoreLocation | None:
        """A configured name, or a URL/path as given; ``None`` picks the default store (if any)."""
        if spec is None:
            return self.stores.get(self.default_store) if self.default_store else None
        if spec in self.stores:
            return self.stores[spec]
        return StoreLocation(spec)
