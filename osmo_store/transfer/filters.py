"""Include/exclude globs over manifest paths.

A glob matches a path if it matches the whole relative path (``*`` also crosses ``/``) or, when the
glob has no ``/``, the file's base name. A path is selected when it matches some ``--include`` (or
none are given) and no ``--exclude``. An empty or blank glob is refused: it matches nothing, and is
always a mistake (an unset shell variable).
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from osmo_store.errors import UsageError


def _matches(path: str, pattern: str) -> bool:
    if fnmatchcase(path, pattern):
        return True
    if "/" not in pattern:
        return fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatchcase(path, pattern.rstrip("/") + "/*")


class PathFilter:
    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.include = _checked(include, "--include")
        self.exclude = _checked(exclude, "--exclude")

    def __call__(self, path: str) -> bool:
        if self.include and not any(_matches(path, p) for p in self.include):
            return False
        return not any(_matches(path, p) for p in self.exclude)


def _checked(patterns: Sequence[str], option: str) -> list[str]:
    for pattern in patterns:
        if not pattern.strip():
            raise UsageError(f"{option} {pattern!r}: an empty pattern matches no file; give a GLOB such as '*.mcap'")
    return list(patterns)
