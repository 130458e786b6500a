"""Where the UI's data comes from: the runtime's public face and the dataset store's facade.

``Sources`` is what every route reads through; tests may give it another runtime module (same
functions as ``osmo_run.api``) or a store URL. The store is opened per request (``Repository.open``
reads the newest events first), so versions uploaded while the UI runs show on the next page load.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Iterator

from osmo_run import api as runtime_api
from osmo_store.repository import Repository


@dataclass
class Sources:
    store_url: str | None = None
    runtime: ModuleType = field(default=runtime_api)
    poll_seconds: float = 1.0  # how often live views look for changes

    @contextmanager
    def repository(self) -> Iterator[Repository]:
        repo = Repository.open(self.store_url)
        try:
            yield repo
        finally:
            repo.close()
