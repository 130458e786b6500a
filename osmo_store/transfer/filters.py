"""Include/exclude globs over manifest paths.

A glob matches a path if it matches the whole relative path (``*`` also crosses ``/``) or, when the
glob has no ``/``, the file's base name. A path is selected when it matches some ``--include`` (or
none are given) and no ``--exclude``.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase


def _matches(path: str, pattern: str) -> bool:
    if fnmatchcase(path, pattern):
        return True
    if "/" not in pattern:
        return fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatchcase(path, pattern.rstrip("/") + "/*")


class PathFilter:
    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.include = list(include)
        self.exclude = list(exclude)

    def __call__(self, path: str) -> bool:
        if self.include and not any(_matches(path, p) for p in self.include):
            return False
        return not any(_matches(path, p) for p in self.exclude)
