"""Errors of the local runner that the CLI prints as one line (``osmo: error: ...``)."""

from __future__ import annotations

USAGE = 2
NOT_FOUND = 3
CONFLICT = 4
STORE_UNUSABLE = 5  # submit: the workflow's store is missing or cannot be written
INTERNAL = 70


class RunnerError(Exception):
    """A problem the user can act on; ``str()`` is one line and ``exit_code`` the CLI's exit code."""

    def __init__(self, message: str, exit_code: int = USAGE) -> None:
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code


class NotFound(RunnerError):
    def __init__(self, message: str) -> None:
        super().__init__(message, NOT_FOUND)
