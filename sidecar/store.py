"""Opening the dataset store a task reads from and writes to.

``contract.store`` is what ``--store`` takes on the command line: a configured store name, a URL or a
path; ``None`` is the user's default store (``$OSMO_STORE``, the config file's ``default_store``, else
the per-user store, created on first use). The local index lives under ``$OSMO_CACHE_DIR`` as for the
CLI. Opening is retried like any other item (the store may be briefly unreachable).
"""

from __future__ import annotations

from osmo_store.repository import Repository

from sidecar.retry import RetryPolicy, with_retry


class StoreHandle:
    """Opens the repository on first use and closes it at the end of a phase."""

    def __init__(self, spec: str | None, policy: RetryPolicy) -> None:
        self.spec = spec
        self.policy = policy
        self._repo: Repository | None = None

    @property
    def label(self) -> str:
        return self.spec if self.spec is not None else "the default store"

    def get(self) -> Repository:
        if self._repo is None:
            self._repo = with_retry(f"opening {self.label}", lambda _: Repository.open(self.spec), self.policy)
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            try:
                self._repo.close()
            finally:
                self._repo = None

    def __enter__(self) -> "StoreHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
