""""Did you mean ...?": the names closest to a mistyped one (a dataset, a tag), for error messages."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6  # difflib's similarity ratio below which a name is not offered


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` most like ``name``, best first (none when nothing is close)."""
    return difflib.get_close_matches(name, sorted(set(candidates) - {name}), n=n, cutoff=CUTOFF)


def did_you_mean(names: list[str]) -> str:
    """``" (did you mean 'lidar' or 'lidar2'?)"``, or ``""`` when there is nothing to offer."""
    return f" (did you mean {' or '.join(repr(n) for n in names)}?)" if names else ""
