"""A version's files as folders and files for the tree page, and the download's safe file name.

``build_tree`` turns the flat, sorted paths of a version (``Repository.entries``) into nested folders;
``attachment_header`` names a downloaded file without letting its name break out of the header;
``held_back`` streams a file's chunks so that one failing its final check never arrives whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator
from urllib.parse import quote


@dataclass
class Folder:
    name: str
    path: str  # "" for the version's root
    folders: dict[str, "Folder"] = field(default_factory=dict)
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (name, path, size)

    @property
    def size(self) -> int:
        return sum(size for _, _, size in self.files) + sum(f.size for f in self.folders.values())

    @property
    def file_count(self) -> int:
        return len(self.files) + sum(f.file_count for f in self.folders.values())

    def sorted_folders(self) -> list["Folder"]:
        return [self.folders[k] for k in sorted(self.folders)]


def build_tree(files: Iterable[tuple[str, int]]) -> Folder:
    """``[("a/b.txt", 3), ("c", 1)]`` -> the root ``Folder`` holding folder ``a`` (holding ``b.txt``) and ``c``."""
    root = Folder("", "")
    for path, size in files:
        parts = path.split("/")
        folder = root
        for i, part in enumerate(parts[:-1]):
            if part not in folder.folders:
                folder.folders[part] = Folder(part, "/".join(parts[: i + 1]))
            folder = folder.folders[part]
        folder.files.append((parts[-1], path, size))
    return root


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def attachment_header(path: str) -> str:
    """A ``Content-Disposition`` value for the file at ``path``: its base name, ASCII-only with anything
    else replaced (``filename``) and exact in UTF-8 (``filename*``, RFC 6266)."""
    base = path.rsplit("/", 1)[-1]
    ascii_name = _UNSAFE.sub("_", base).strip("._") or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base, safe='')}"


def held_back(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The chunks of ``chunks`` one step late: the last one is given only once the iterator has ended
    without error (``Repository.read_file`` checks the whole file's digest at its end), so a file that
    fails its check is never received whole, whatever the client counts."""
    previous: bytes | None = None
    for chunk in chunks:
        if previous is not None:
            yield previous
        previous = chunk
    if previous is not None:
        yield previous
