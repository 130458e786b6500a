"""Selecting a dataset's files by regex, expressed in the store's include/exclude globs.

An input's ``regex`` selects the files whose POSIX path relative to the dataset root matches it
(``re.search``: anywhere in the path unless anchored). ``Repository.download`` selects with globs
(``--include``/``--exclude`` semantics: a glob matches the whole path, ``*`` crosses ``/``, a glob
without ``/`` also matches a base name anywhere), so the selected set is turned into exact globs:

- every file selected: no filter at all; none: nothing to download;
- otherwise folders whose files are all selected (or all not) collapse to one ``FOLDER/*`` glob,
  and the smaller of the "include these" and "exclude those" lists is used;
- glob characters in names are escaped (``[*]``, ``[?]``, ``[[]``), and a top-level file ``NAME``
  is written ``[/N]AME`` so that the glob contains a ``/`` (never a base-name match elsewhere) while
  still matching only ``NAME`` (manifest paths never start with ``/``).

The store filters each path against each glob, so a regex that picks thousands of scattered files
costs files x globs comparisons; a predicate on ``Repository.download`` would remove that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class _Folder:
    files: dict[str, bool] = field(default_factory=dict)  # name -> selected
    folders: dict[str, "_Folder"] = field(default_factory=dict)
    selected: int = 0
    total: int = 0


@dataclass(frozen=True)
class Selection:
    paths: tuple[str, ...]  # the selected paths, in the given order
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.paths


def select(paths: Sequence[str], regex: re.Pattern[str] | None) -> Selection:
    """The files of ``paths`` matching ``regex`` and globs that make the store pick exactly them."""
    if regex is None:
        return Selection(tuple(paths))
    chosen = {p for p in paths if regex.search(p)}
    ordered = tuple(p for p in paths if p in chosen)
    if len(chosen) == len(set(paths)) or not chosen:
        return Selection(ordered)
    root = _tree(paths, chosen)
    include = _globs(root, "", want=True)
    exclude = _globs(root, "", want=False)
    if len(include) <= len(exclude):
        return Selection(ordered, include=tuple(include))
    return Selection(ordered, exclude=tuple(exclude))


def _tree(paths: Sequence[str], chosen: set[str]) -> _Folder:
    root = _Folder()
    for path in paths:
        parts = path.split("/")
        node = root
        hit = path in chosen
        chain = [node]
        for part in parts[:-1]:
            node = node.folders.setdefault(part, _Folder())
            chain.append(node)
        node.files[parts[-1]] = hit
        for folder in chain:
            folder.total += 1
            folder.selected += hit
    return root


def _globs(node: _Folder, prefix: str, want: bool) -> list[str]:
    """Globs covering exactly the files of ``node`` whose selection equals ``want``."""
    out: list[str] = []
    for name, sub in node.folders.items():
        path = f"{prefix}{name}"
        matching = sub.selected if want else sub.total - sub.selected
        if matching == 0:
            continue
        if matching == sub.total:
            out.append(escape(path) + "/*")
        else:
            out.extend(_globs(sub, path + "/", want))
    for name, hit in node.files.items():
        if hit == want:
            out.append(exact_glob(f"{prefix}{name}"))
    return out


def escape(text: str) -> str:
    """``text`` with the glob characters ``*``, ``?`` and ``[`` matched literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def exact_glob(path: str) -> str:
    """A glob matching the manifest path ``path`` and nothing else."""
    if "/" in path:
        return escape(path)
    first, rest = path[0], path[1:]
    head = "[]/]" if first == "]" else f"[/{first}]"
    return head + escape(rest)
