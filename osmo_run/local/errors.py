"""Errors of the local runner that the CLI prints as one line (``osmo: error: ...``), or with ``--json``
as one JSON object (``error``, ``code``, ``exit`` and what the error names: ``workflow``, ``task``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

USAGE = 2
NOT_FOUND = 3
CONFLICT = 4
STORE_UNUSABLE = 5  # submit: the workflow's store is missing or cannot be written
INTERNAL = 70
INTERRUPTED = 130
CODES = {USAGE: "usage", NOT_FOUND: "not_found", CONFLICT: "conflict", STORE_UNUSABLE: "store_unusable",
         INTERNAL: "internal", INTERRUPTED: "interrupted"}  # exit code -> the ``code`` of a JSON error


class RunnerError(Exception):
    """A problem the user can act on; ``str()`` is one line, ``exit_code`` the CLI's exit code, ``code``
    its short stable name and ``subject`` what it names (keyword arguments, e.g. ``workflow=``)."""

    def __init__(self, message: str, exit_code: int = USAGE, **subject: object) -> None:
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code
        self.code = CODES.get(exit_code, "error")
        self.subject = {k: v for k, v in subject.items() if v is not None}


class NotFound(RunnerError):
    def __init__(self, message: str, **subject: object) -> None:
        super().__init__(message, NOT_FOUND, **subject)


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` most like a mistyped ``name`` (a workflow id, a task), best first."""
    return difflib.get_close_matches(name, sorted(set(candidates) - {name}), n=n, cutoff=0.6)


def did_you_mean(names: list[str]) -> str:
    return f" (did you mean {' or '.join(repr(n) for n in names)}?)" if names else ""
