"""Where a ``files:`` entry may be written: its path normalised as the task's view resolves it, then
checked, before anything else looks at it.

- ``{{output}}`` and ``{{input:...}}`` become their folders in the view (``/osmo/data/output``,
  ``/osmo/data/input/N``; the same in every runner), a relative path is taken against the task's
  working folder ``/osmo/work``, and ``.``, ``..`` and repeated or leading ``//`` are resolved
  lexically (``/tmp/../var/tmp/x`` is ``/var/tmp/x``). ``{{workflow_id}}`` and ``{{host:TASK}}`` stay
  as they are (their values never hold a ``/``); the runner normalises again once they are replaced.
- Refused: an empty path, a path naming a folder (``/tmp/``, ``/``, ``x/..``), NUL and other control
  characters, invisible formatting characters (bidi overrides, zero-width spaces), line and paragraph
  separators, private-use and unassigned code points, a path of PATH_MAX (4096) bytes or more or with
  a name over NAME_MAX (255) bytes in UTF-8, and anything under ``/proc``, ``/sys``, ``/dev`` or
  ``/osmo`` except the task's own ``/osmo/data/output/...`` and ``/osmo/work/...``.
  Ordinary non-ASCII names (``/tmp/données/模型.yaml``) are allowed and are not Unicode-normalised.
- ``file_path_conflict`` finds two entries at one file, or one entry inside another's file.

Errors are ``ValueError`` with a one-line reason; the parser adds the file, line and field.
"""

from __future__ import annotations

import posixpath
import unicodedata
from typing import Mapping, Sequence

from osmo_run.spec.tokens import find_tokens

TASK_DATA = "/osmo/data"
TASK_OUTPUT = f"{TASK_DATA}/output"
TASK_WORK = "/osmo/work"  # the task's working folder in its view
TASK_OWN = (TASK_OUTPUT, TASK_WORK)  # the only folders under /osmo a file may be written into
SYSTEM = ("/proc", "/sys", "/dev")
PATH_MAX = 4096  # bytes, with the terminating NUL (linux/limits.h)
NAME_MAX = 255  # bytes of one name

_REFUSED = {"Cc": "a control character", "Cf": "an invisible formatting character",
            "Cs": "a lone surrogate", "Co": "a private-use character", "Cn": "an unassigned code point",
            "Zl": "a line separator", "Zp": "a paragraph separator"}


def under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def view_path(path: str, inputs_by_task: Mapping[str, int] | None = None) -> str:
    """``path`` with ``{{output}}`` / ``{{input:N}}`` / ``{{input:TASK}}`` replaced by their folders in
    the task's view (``inputs_by_task``: TASK -> input index), then ``normalise_file_path``d."""
    pieces, last = [], 0
    for token in find_tokens(path):
        if token.kind == "output":
            value = TASK_OUTPUT
        elif token.kind == "input":
            index = token.index if token.index is not None else (inputs_by_task or {}).get(token.arg or "")
            value = f"{TASK_DATA}/input/{token.arg if index is None else index}"
        else:
            continue
        pieces += [path[last:token.start], value]
        last = token.end
    resolved = "".join(pieces) + path[last:]
    try:
        return normalise_file_path(resolved)
    except ValueError as exc:
        if resolved == path:
            raise
        raise ValueError(f"{exc} (written {path!r})") from None


def _check_characters(path: str) -> None:
    for char in path:
        what = "a NUL byte" if char == "\0" else _REFUSED.get(unicodedata.category(char))
        if what:
            raise ValueError(f"file path {path!r} holds {what} (U+{ord(char):04X}): names must be "
                             "printable and read the same everywhere")


def normalise_file_path(path: str) -> str:
    """The absolute, normalised path the task's view resolves ``path`` to; ``ValueError`` with the
    reason when it must not be written."""
    if not path:
        raise ValueError("a file path must not be empty")
    _check_characters(path)
    last = path.rsplit("/", 1)[-1]
    if last in ("", ".", ".."):
        raise ValueError(f"file path {path!r} names a folder, not a file")
    full = posixpath.normpath(path if path.startswith("/") else posixpath.join(TASK_WORK, path))
    full = "/" + full.lstrip("/")  # POSIX keeps a leading '//'; Linux does not
    shown = repr(path) if full == path else f"{path!r} (that is {full!r})"
    size = max(len(path.encode("utf-8")), len(full.encode("utf-8")))
    if size >= PATH_MAX:
        raise ValueError(f"file path {shown[:60]}... is {size} bytes long: the limit is {PATH_MAX - 1} "
                         "(PATH_MAX)")
    for name in full.split("/"):
        if len(name.encode("utf-8")) > NAME_MAX:
            raise ValueError(f"file path {shown[:60]}... has a name of {len(name.encode('utf-8'))} bytes: "
                             f"the limit is {NAME_MAX} (NAME_MAX)")
    for root in SYSTEM:
        if under(full, root):
            raise ValueError(f"file path {shown} is under {root}: the machine's processes, kernel and "
                             "devices are there, a task may not write files there")
    if under(full, "/osmo") and not any(full.startswith(own + "/") for own in TASK_OWN):
        if full in TASK_OWN:
            raise ValueError(f"file path {shown} names a folder, not a file")
        raise ValueError(f"file path {shown} is under /osmo, the runner's folder: a task's files may go "
                         f"under {TASK_OUTPUT}/ (its output) or {TASK_WORK}/ (its working folder) only")
    if full in ("/", "/tmp"):
        raise ValueError(f"file path {shown} names a folder, not a file")
    return full


def file_path_conflict(path: str, earlier: Sequence[str]) -> tuple[int, str] | None:
    """``(index, why)`` of the first of ``earlier`` (normalised paths) that ``path`` cannot live
    beside: the same file, or one entry's file used as a folder of the other; None if none."""
    for index, other in enumerate(earlier):
        if other == path:
            return index, f"two files at path {path!r}"
        if under(path, other) or under(other, path):
            outer = min(path, other, key=len)
            return index, f"{outer!r} would be both a file and a folder ({other!r} and {path!r})"
    return None
