"""Workflow ids: ``<name>-<n>`` with n counting from 1 per workflow name (``hello-osmo-1``)."""

from __future__ import annotations

import re
from typing import Iterable

_ID = re.compile(r"^(?P<name>[A-Za-z](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)-(?P<n>[1-9][0-9]*)$")


def format_workflow_id(name: str, n: int) -> str:
    if n < 1:
        raise ValueError(f"a workflow number starts at 1, got {n}")
    return f"{name}-{n}"


def parse_workflow_id(workflow_id: str) -> tuple[str, int]:
    """``"hello-osmo-12"`` -> ``("hello-osmo", 12)``; ``ValueError`` when it is not an id."""
    match = _ID.match(workflow_id)
    if not match:
        raise ValueError(f"not a workflow id: {workflow_id!r} (expected NAME-NUMBER, e.g. hello-osmo-1)")
    return match.group("name"), int(match.group("n"))


def is_workflow_id(text: str) -> bool:
    return _ID.match(text) is not None


def next_workflow_id(name: str, existing: Iterable[str]) -> str:
    """The id after the highest ``<name>-<n>`` among ``existing`` (``<name>-1`` when there is none)."""
    highest = 0
    for workflow_id in existing:
        match = _ID.match(workflow_id)
        if match and match.group("name") == name:
            highest = max(highest, int(match.group("n")))
    return format_workflow_id(name, highest + 1)
