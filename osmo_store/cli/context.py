"""Per-invocation CLI state: the store URL and the repository, opened lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from osmo_store.repository import Repository


class State:
    def __init__(self, store_url: str | None, debug: bool) -> None:
        self.store_url = store_url
        self.debug = debug
        self.quiet_damage = False  # verify and repair report damage themselves
        self._repo: Repository | None = None

    def repo(self, create: bool = False) -> Repository:
        """The repository; ``create`` makes a new store at an explicit URL if none is there."""
        if self._repo is None:
            from osmo_store.repository import Repository  # only commands that use the store load it
            self._repo = Repository.open(self.store_url, create=create)
        return self._repo

    def damage_note(self) -> str | None:
        """The warning about damaged log events, for a command that went through (see datasets.py)."""
        if self._repo is None or self.quiet_damage:
            return None
        try:
            return self._repo.log.damage_note()
        except Exception:  # a warning must never turn a success into a failure
            return None

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def discard_index(self) -> str | None:
        """Delete the repository's local index (found damaged mid-command); its path, or None."""
        if self._repo is None:
            return None
        repo, self._repo = self._repo, None
        path = repo.discard_index()
        repo.blob.close()
        return path


pass_state = click.make_pass_decorator(State)

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
